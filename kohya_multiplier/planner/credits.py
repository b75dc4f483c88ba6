"""Per-epoch allocation: how many fractional picks each cell gets, and in which batches.

One credit per cell, in integer units: each epoch a cell accrues its demand (f x n images); a pick
is *due* once a whole image of credit is there. Each epoch:

1. Every due pick is served if the extra batches allow it: a bucket's due picks fill its free slots
   (the empty places in its last base batch), then ceil(rest / fill) extra batches.
2. If they do not, the K extra batches go to the fullest batches (the picks left waiting are
   those of the emptiest last batches, so no capacity is lost), and inside a bucket to the most
   overdue cells: lateness in epochs of the cell's own rate, so a slow cell waits no longer than
   a fast one, whatever its bucket-mates do.
3. Room left in a bucket's extra batches takes picks due next epoch (most overdue first), so
   batches run full; where K has spare capacity on average (rounded up), only while the bucket's
   cells together are behind their pace.
4. Extra batches no pick needs split the others (batches may be partial), so no pick is taken
   early; only where nothing is left to split does each take one pick, from the cell closest to
   due: a pick due next epoch, else a forced one (the rounding up of K, reported at start).

Picks taken early are charged, so amounts stay right; the over-service of a rounded-up K is
handed back to all cells in proportion to their rates, so the credits stay bounded and long runs
neither drift nor slow down. The allocation depends only on the
layout and the previous credits, never on which images were picked: replaying it costs O(cells)
per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kohya_multiplier.planner.layout import UNITS_PER_IMAGE, DatasetLayout
from kohya_multiplier.planner.tickets import lowest_few, ranges, take_most_overdue

PICK_COST = UNITS_PER_IMAGE  # credit units one fractional pick costs: a whole image
Q = PICK_COST  # the former name, kept for the callers that import it
_PICK_COST_BITS = PICK_COST.bit_length() - 1
assert PICK_COST == 1 << _PICK_COST_BITS  # credits // PICK_COST as a shift


# Every cell starts with half an image of credit: a cell's count by epoch e is then e x r rounded
# to the nearest, so the cells of a subject err both ways and cancel.
PHASE = PICK_COST // 2


@dataclass(frozen=True)
class CreditState:
    cell_credit: np.ndarray  # (C,) int64 units: picks owed, a whole pick per PICK_COST

    @classmethod
    def initial(cls, layout: DatasetLayout) -> "CreditState":
        return cls(np.full(layout.cell_size.size, PHASE, dtype=np.int64))


@dataclass(frozen=True)
class EpochAllocation:
    free_picks: np.ndarray  # (B,) fractional picks placed in the free slots of base batches
    extra_batches: np.ndarray  # (B,) extra batches of each bucket
    extra_picks: np.ndarray  # (B,) fractional picks in them (at least one per batch)
    cell_picks: np.ndarray  # (C,) fractional picks of each cell this epoch

    def extra_batch_sizes(self, bucket: int) -> list[int]:
        """The bucket's extra batches, picks split as evenly as possible (larger first)."""
        count, picks = int(self.extra_batches[bucket]), int(self.extra_picks[bucket])
        if count == 0:
            return []
        size, larger = divmod(picks, count)
        return [size + 1] * larger + [size] * (count - larger)


def _batches_for(picks, free, fill):
    """Extra batches for ``picks`` beyond the free slots; ``fill``: layout.fill (at least 1)."""
    return -(-np.maximum(picks - free, 0) // fill)


def _per_bucket(layout: DatasetLayout, values) -> np.ndarray:
    """Sum of a per-cell quantity over each bucket's cells (cells are grouped by bucket)."""
    out = np.zeros(layout.n_buckets, dtype=np.int64)
    first = layout.bucket_first_cells
    if first.size:
        out[layout.bucket_has_cells] = np.add.reduceat(values, first)
    return out


def _most_overdue_per_bucket(layout: DatasetLayout, credit, caps, wanted) -> np.ndarray:
    """take_most_overdue per bucket: ``wanted[b]`` of the cells' ``caps`` tickets, the k-th ticket of
    a cell having priority (credit - k PICK_COST) / rate. Buckets that take every ticket need no
    search; where only a few are left out, the few least overdue are found directly (a sort of the
    cells and of the tickets near the cut); otherwise the ticket search."""
    bucket = layout.cell_bucket
    n_buckets = layout.n_buckets
    caps_per_bucket = np.bincount(bucket, weights=caps, minlength=n_buckets).astype(np.int64)
    whole = wanted >= caps_per_bucket
    taken = np.where(whole[bucket], caps, 0)
    searched = ~whole & (wanted > 0)
    if not searched.any():
        return taken
    cells = np.flatnonzero(searched[bucket] & (caps > 0))
    rate = layout.cell_rate[cells]
    last = (credit[cells] - (caps[cells] - 1) * PICK_COST) / rate  # each cell's least overdue ticket
    dropped = np.where(searched, caps_per_bucket - wanted, 0)
    left = _few_dropped_per_bucket(bucket[cells], caps[cells], rate, last, searched, dropped)
    if left is not None:
        taken[cells] = caps[cells] - left
        return taken
    taken[cells] = take_most_overdue(
        credit[cells], rate, PICK_COST, caps[cells], bucket[cells], np.where(searched, wanted, 0)
    )
    return taken


def _few_dropped_per_bucket(bucket, caps, rate, last, searched, dropped):
    """Tickets each cell leaves out when every searched bucket drops only a few (``dropped[b]``,
    its least overdue); None where they are not few (then the caller runs the ticket search).
    Arguments are per searched cell, but ``searched`` and ``dropped`` per bucket."""
    n_buckets = searched.size
    order = np.lexsort((last, bucket))
    first = np.searchsorted(bucket[order], np.arange(n_buckets))
    n_in = np.diff(np.r_[first, bucket.size])
    if not (dropped[searched] <= n_in[searched]).all():
        return None
    # bound_b: the dropped_b-th lowest last ticket of the bucket; the answer's highest is <= it
    pick = first + np.maximum(dropped, 1) - 1
    bound = np.full(n_buckets, -np.inf)
    bound[searched] = last[order][pick[searched]]
    cell_bound = bound[bucket]
    count = np.floor((cell_bound - last) * rate / PICK_COST).astype(np.int64) + 1
    count = np.where(last <= cell_bound, np.maximum(count, 1), 0)
    count = np.clip(count, 0, caps)
    if int(count.sum()) > 64 * int(dropped.sum()) + 4096:
        return None
    owner, from_last = ranges(np.zeros(bucket.size, dtype=np.int64), count)  # from_last-th from the last
    priority = last[owner] + from_last * PICK_COST / rate[owner]
    group = bucket[owner]
    ranked = np.lexsort((-owner, priority, group))  # ties: the higher cell index is left out
    start = np.searchsorted(group[ranked], np.arange(n_buckets))
    rank = np.arange(ranked.size) - start[group[ranked]]
    out = ranked[rank < dropped[group[ranked]]]
    left = np.zeros(bucket.size, dtype=np.int64)
    np.add.at(left, owner[out], 1)
    return left


def _contended(layout: DatasetLayout, credit, rate, due, due_per_bucket, extra_batches):
    """Due picks served when the batches they need exceed the extra batches.

    Full batches first, so no capacity is lost to partial ones; among the buckets' partial last
    batches, the fullest. Where even the full batches exceed the extra batches and every batch
    holds one pick, those picks go to the most overdue cells of all buckets; otherwise the full
    batches are shared in proportion. Inside a bucket the picks go to the most overdue cells
    (lateness in epochs of the cell's own rate, so a slow cell waits no longer than a fast one,
    whatever its bucket-mates do).
    """
    n_buckets = layout.n_buckets
    fill = layout.fill
    free = layout.free_slots
    over = np.maximum(due_per_bucket - free, 0)
    full = over // fill
    partial = over - full * fill  # picks of the last, partial batch (0: none)
    if full.sum() <= extra_batches:
        batches = full.copy()
        spare = extra_batches - int(full.sum())
        for bucket in np.lexsort((np.arange(n_buckets), -partial / fill)):
            if spare == 0 or partial[bucket] == 0:
                break
            batches[bucket] += 1
            spare -= 1
    elif (fill == 1).all():
        in_free = np.minimum(due_per_bucket, free)
        if in_free.any():
            caps = due - _most_overdue_per_bucket(layout, credit - PICK_COST, due, in_free)
        else:
            caps = due  # no free slots (batch size 1): nothing placed there
        return due - _least_overdue(credit, rate, due, caps, int(caps.sum()) - extra_batches)
    else:
        # The extra batches, all full, shared in proportion to the buckets' full batches (largest remainder)
        exact = full * (extra_batches / full.sum())
        batches = np.minimum(np.floor(exact).astype(np.int64), full)
        short = extra_batches - int(batches.sum())
        batches[np.lexsort((np.arange(n_buckets), -(exact - batches)))[:short]] += 1
    return _most_overdue_per_bucket(layout, credit - PICK_COST, due, np.minimum(due_per_bucket, free + batches * fill))


def _least_overdue(credit, rate, due, caps, dropped: int) -> np.ndarray:
    """The ``dropped`` least overdue of the cells' last ``caps`` due picks (the k-th due pick of a
    cell has priority (credit - (k + 1) PICK_COST) / rate): what the greedy, taking the others
    first, leaves. ``dropped`` is small next to the due picks, so the tickets below the
    ``dropped``-th lowest last ticket are few: sort those (ties: the higher cell index is left, as
    the greedy does)."""
    left = np.zeros(credit.size, dtype=np.int64)
    if dropped <= 0:
        return left
    last_of = np.where(caps > 0, (credit - due * PICK_COST) / rate, np.inf)
    few = lowest_few(last_of, dropped)
    if few is not None:
        # Cells whose last ticket is above the cut are above the bound: they have no ticket below it.
        cells, _, bound = few
    else:
        cells = np.flatnonzero(caps > 0)
        bound = np.inf if dropped > cells.size else np.partition(last_of[cells], dropped - 1)[dropped - 1]
    last = last_of[cells]
    cell_rate = rate[cells]
    count = np.floor((bound - last) * cell_rate / PICK_COST).astype(np.int64) + 1 if np.isfinite(bound) else caps[cells]
    count = np.where(last <= bound, np.maximum(count, 1), count)  # float rounding at the bound
    count = np.clip(count, 0, caps[cells])
    position, from_last = ranges(np.zeros(cells.size, dtype=np.int64), count)  # from_last-th from the last
    owner = cells[position]
    priority = (credit[owner] - (due[owner] - from_last) * PICK_COST) / rate[owner]
    worst = np.lexsort((-owner, priority))[:dropped]
    np.add.at(left, owner[worst], 1)
    return left


def _closest_to_due(credit, rate, caps, wanted: int) -> np.ndarray:
    """``wanted`` single picks, closest to due first: the one-at-a-time greedy over tickets (the
    k-th pick of a cell has priority (credit - k PICK_COST) / rate). ``wanted`` is small (spare
    batches), so the tickets above the ``wanted``-th best first ticket are few: sort those."""
    extra = np.zeros(caps.size, dtype=np.int64)
    if wanted == 0:
        return extra
    if wanted <= 8:  # a few: the greedy itself, one argmax per pick
        priority = np.where(caps > 0, credit / rate, -np.inf)
        for _ in range(wanted):
            cell = int(np.argmax(priority))  # ties: lowest cell index
            extra[cell] += 1
            priority[cell] = (credit[cell] - extra[cell] * PICK_COST) / rate[cell] if extra[cell] < caps[cell] else -np.inf
        return extra
    # Cells due within an epoch (priority >= -1) outrank all others: look only at them if enough.
    is_eligible = (caps > 0) & (credit + rate >= 0)
    if np.count_nonzero(is_eligible) < wanted:
        is_eligible = caps > 0
    first_of = credit / rate
    few = lowest_few(np.where(is_eligible, -first_of, np.inf), wanted)
    # Below the cut, with a margin for the float rounding of room: no ticket above the bound.
    if few is not None and -few[1] < -few[2] - 1e-9 * abs(few[2]):
        eligible, bound = few[0], -few[2]
    else:
        eligible = np.flatnonzero(is_eligible)
        bound = None
    if wanted <= eligible.size:
        first = first_of[eligible]
        if bound is None:
            bound = np.partition(first, eligible.size - wanted)[eligible.size - wanted]  # the answer's lowest is >= this
        room = np.floor((credit[eligible] - bound * rate[eligible]) / PICK_COST).astype(np.int64) + 1
        room = np.where(first >= bound, np.maximum(room, 1), room)  # float rounding at the bound
        count = np.clip(room, 0, caps[eligible])
        total = int(count.sum())
        if total <= 64 * wanted + 4096:
            position, ticket = ranges(np.zeros(eligible.size, dtype=np.int64), count)
            owner = eligible[position]
            priority = (credit[owner] - ticket * PICK_COST) / rate[owner]
            best = np.lexsort((owner, -priority))[:wanted]  # ties: lower cell index first
            np.add.at(extra, owner[best], 1)
            return extra
    return take_most_overdue(credit, rate, PICK_COST, caps, np.zeros(caps.size, dtype=np.int64), np.array([wanted]))


def _fill_room(layout: DatasetLayout, credit, served, left_per_bucket, room, batches) -> np.ndarray:
    """Room in the batches the buckets got: the due picks left (``left_per_bucket``), then picks
    due next epoch, so batches run full and no capacity is lost to partial batches."""
    soon = np.minimum(np.maximum((credit + layout.cell_demand) // PICK_COST, 0), layout.cell_size)
    candidates = soon - served
    # Early picks go only into extra batches: a bucket served by its free slots alone keeps its pace.
    wanted = np.minimum(
        np.where(batches > 0, room, np.minimum(room, left_per_bucket)), _per_bucket(layout, candidates)
    )
    if not layout.extra_batches_exact:
        # The extra batches have spare capacity on average, so there is no need to work ahead: a
        # bucket takes early picks only while its cells, together, are behind their pace (credit
        # above the phase).
        behind = _per_bucket(layout, credit - served * PICK_COST - PHASE) // PICK_COST
        wanted = np.minimum(wanted, behind + left_per_bucket)
    wanted = np.maximum(wanted, 0)
    if wanted.any():
        served = served + _most_overdue_per_bucket(layout, credit - (served + 1) * PICK_COST, candidates, wanted)
    return served


def allocate_epoch(layout: DatasetLayout, state: CreditState) -> tuple[EpochAllocation, CreditState]:
    """One epoch's allocation from the credits left by the previous epoch."""
    # A replay runs this once per epoch on every cell: the common path keeps to few numpy calls
    # (each costs a few microseconds whatever its size), the rare ones branch off.
    credit = state.cell_credit + layout.cell_demand
    due = credit >> _PICK_COST_BITS  # credit // PICK_COST, credits being integers
    np.maximum(due, 0, out=due)
    np.minimum(due, layout.cell_size, out=due)
    served, served_per_bucket, batches, contended = _serve_due(layout, credit, due)
    spare = layout.extra_batches - int(batches.sum())

    # Due picks left by contention: spare batches to the buckets with the most overdue ones.
    if contended:
        left_per_bucket = _per_bucket(layout, due - served)
    else:
        left_per_bucket = np.zeros(layout.n_buckets, dtype=np.int64)  # none left
    room = layout.free_slots + batches * layout.fill - served_per_bucket
    if contended and left_per_bucket.any():
        spare = _spare_to_waiting(layout, credit, due - served, served, left_per_bucket, room, batches, spare)
    if room.any() and layout.fills_room:
        served = _fill_room(layout, credit, served, left_per_bucket, room, batches)
        served_per_bucket = _per_bucket(layout, served)

    picks = served
    if spare > 0:
        # Spare batches split batches first (at least one pick each): no pick is taken early.
        spare = _split_batches(served_per_bucket - batches, batches, spare)
    if spare > 0:
        # Then each takes one pick, closest to due first: picks due next epoch, then forced ones.
        caps = layout.cell_size - served
        extra = _closest_to_due(credit - (served + 1) * PICK_COST, layout.cell_rate, caps, min(spare, int(caps.sum())))
        extra_per_bucket = _per_bucket(layout, extra)
        batches += extra_per_bucket
        served_per_bucket = served_per_bucket + extra_per_bucket
        picks = served + extra
    free_picks = np.minimum(layout.free_slots, served_per_bucket - batches)
    allocation = EpochAllocation(free_picks, batches, served_per_bucket - free_picks, picks)
    return allocation, _charged(layout, credit, picks)


def _serve_due(layout: DatasetLayout, credit, due):
    """The due picks served and the extra batches they need: all of them, unless those batches
    exceed the layout's extra batches (contention). Returns (served, served per bucket, batches,
    contended)."""
    due_per_bucket = _per_bucket(layout, due)
    batches = _batches_for(due_per_bucket, layout.free_slots, layout.fill)
    contended = int(batches.sum()) > layout.extra_batches
    if not contended:
        return due, due_per_bucket, batches, False
    served = _contended(layout, credit, layout.cell_rate, due, due_per_bucket, layout.extra_batches)
    served_per_bucket = _per_bucket(layout, served)
    return served, served_per_bucket, _batches_for(served_per_bucket, layout.free_slots, layout.fill), True


def _spare_to_waiting(layout: DatasetLayout, credit, left_due, served, left_per_bucket, room, batches, spare: int) -> int:
    """Spare batches to the buckets whose due picks wait beyond their room, the bucket with the
    most overdue waiting pick first. Updates ``batches`` and ``room`` in place; returns the spare
    batches left."""
    fill = layout.fill
    waiting = left_per_bucket - room
    if not (spare > 0 and (waiting > 0).any()):
        return spare
    priority = np.where(left_due > 0, (credit - (served + 1) * PICK_COST) / layout.cell_rate, -np.inf)
    best = np.full(layout.n_buckets, -np.inf)
    best[layout.bucket_has_cells] = np.maximum.reduceat(priority, layout.bucket_first_cells)
    for bucket in np.lexsort((np.arange(layout.n_buckets), -best)):
        if spare == 0 or best[bucket] == -np.inf:
            break
        if waiting[bucket] > 0:
            more = min(spare, int(-(-waiting[bucket] // fill[bucket])))
            batches[bucket] += more
            room[bucket] += more * fill[bucket]
            spare -= more
    return spare


def _split_batches(splittable, batches, spare: int) -> int:
    """Spare batches to the buckets with the most picks beyond one per batch (``splittable``), so
    batches get smaller rather than picks taken early. Updates ``batches`` in place; returns the
    spare batches left."""
    for bucket in np.lexsort((np.arange(splittable.size), -splittable)):
        if spare == 0 or splittable[bucket] <= 0:
            break
        more = min(spare, int(splittable[bucket]))
        batches[bucket] += more
        spare -= more
    return spare


def _charged(layout: DatasetLayout, credit, picks) -> CreditState:
    """The credits after the epoch's picks.

    Every pick is charged. Where the extra batches are rounded up, their spare batches over-serve
    a little every epoch; the credit that takes below the cells' starting total is handed out
    again to all cells in proportion to their rates, so the rounding up works as if every rate
    were a bit higher and the credits cannot drift ahead however long the run (nor the spare picks
    grow). Otherwise only what forced picks put beyond one epoch ahead is handed out so.
    """
    left = credit - picks * PICK_COST
    if layout.extra_batches_exact:
        deficit = int(np.maximum(-layout.cell_demand - left, 0).sum())
    else:
        deficit = int(PHASE) * left.size - int(left.sum())
    if deficit > 0:
        left += (layout.demand_float * (deficit / layout.demand_divisor)).astype(np.int64)
    return CreditState(left)
