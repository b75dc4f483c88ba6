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

Q = UNITS_PER_IMAGE
_Q_BITS = Q.bit_length() - 1
assert Q == 1 << _Q_BITS  # credits // Q as a shift


# Every cell starts with half an image of credit: a cell's count by epoch e is then e x r rounded
# to the nearest, so the cells of a subject err both ways and cancel.
PHASE = Q // 2


@dataclass(frozen=True)
class CreditState:
    cell_credit: np.ndarray  # (C,) int64 units: picks owed, a whole pick per Q

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


def _most_overdue_per_bucket(layout: DatasetLayout, credit, caps, wanted) -> np.ndarray:
    """take_most_overdue per bucket: ``wanted[b]`` of the cells' ``caps`` tickets, the k-th ticket of
    a cell having priority (credit - k Q) / rate. Buckets that take every ticket need no search;
    where only a few are left out, the few least overdue are found directly (a sort of the cells
    and of the tickets near the cut); otherwise the ticket search."""
    bucket = layout.cell_bucket
    B = layout.n_buckets
    caps_b = np.bincount(bucket, weights=caps, minlength=B).astype(np.int64)
    whole = wanted >= caps_b
    taken = np.where(whole[bucket], caps, 0)
    searched = ~whole & (wanted > 0)
    if not searched.any():
        return taken
    cells = np.flatnonzero(searched[bucket] & (caps > 0))
    rate = layout.cell_rate[cells]
    last = (credit[cells] - (caps[cells] - 1) * Q) / rate  # each cell's least overdue ticket
    dropped = np.where(searched, caps_b - wanted, 0)
    order = np.lexsort((last, bucket[cells]))
    first = np.searchsorted(bucket[cells][order], np.arange(B))
    n_in = np.diff(np.r_[first, cells.size])
    if (dropped[searched] <= n_in[searched]).all():
        # bound_b: the dropped_b-th lowest last ticket of the bucket; the answer's highest is <= it
        pick = first + np.maximum(dropped, 1) - 1
        bound = np.full(B, -np.inf)
        bound[searched] = last[order][pick[searched]]
        cell_bound = bound[bucket[cells]]
        count = np.floor((cell_bound - last) * rate / Q).astype(np.int64) + 1
        count = np.where(last <= cell_bound, np.maximum(count, 1), 0)
        count = np.clip(count, 0, caps[cells])
        if int(count.sum()) <= 64 * int(dropped.sum()) + 4096:
            owner, j = ranges(np.zeros(cells.size, dtype=np.int64), count)  # j-th from the last
            priority = last[owner] + j * Q / rate[owner]
            group = bucket[cells][owner]
            ranked = np.lexsort((-owner, priority, group))  # ties: the higher cell index is left out
            start = np.searchsorted(group[ranked], np.arange(B))
            rank = np.arange(ranked.size) - start[group[ranked]]
            out = ranked[rank < dropped[group[ranked]]]
            left = np.zeros(cells.size, dtype=np.int64)
            np.add.at(left, owner[out], 1)
            taken[cells] = caps[cells] - left
            return taken
    taken[cells] = take_most_overdue(credit[cells], rate, Q, caps[cells], bucket[cells], np.where(searched, wanted, 0))
    return taken


def _contended(layout: DatasetLayout, x, rate, due, due_b, K):
    """Due picks served when the batches they need exceed K.

    Full batches first, so no capacity is lost to partial ones; among the buckets' partial last
    batches, the fullest. Where even the full batches exceed K and every batch holds one pick, the
    K picks go to the most overdue cells of all buckets; otherwise the full batches are shared in
    proportion. Inside a bucket the picks go to the most overdue cells (lateness in epochs of the
    cell's own rate, so a slow cell waits no longer than a fast one, whatever its bucket-mates do).
    """
    B = layout.n_buckets
    fill = layout.fill
    free = layout.free_slots
    over = np.maximum(due_b - free, 0)
    full = over // fill
    partial = over - full * fill  # picks of the last, partial batch (0: none)
    if full.sum() <= K:
        batches = full.copy()
        spare = K - int(full.sum())
        for b in np.lexsort((np.arange(B), -partial / fill)):
            if spare == 0 or partial[b] == 0:
                break
            batches[b] += 1
            spare -= 1
    elif (fill == 1).all():
        in_free = np.minimum(due_b, free)
        if in_free.any():
            caps = due - _most_overdue_per_bucket(layout, x - Q, due, in_free)
        else:
            caps = due  # no free slots (batch size 1): nothing placed there
        return due - _least_overdue(x, rate, due, caps, int(caps.sum()) - K)
    else:
        # K full batches shared in proportion to the buckets' full batches (largest remainder)
        exact = full * (K / full.sum())
        batches = np.minimum(np.floor(exact).astype(np.int64), full)
        short = K - int(batches.sum())
        batches[np.lexsort((np.arange(B), -(exact - batches)))[:short]] += 1
    return _most_overdue_per_bucket(layout, x - Q, due, np.minimum(due_b, free + batches * fill))


def _least_overdue(x, rate, due, caps, dropped: int) -> np.ndarray:
    """The ``dropped`` least overdue of the cells' last ``caps`` due picks (the k-th due pick of a
    cell has priority (x - (k + 1) Q) / rate): what the greedy, taking the others first, leaves.
    ``dropped`` is small next to the due picks, so the tickets below the ``dropped``-th lowest last
    ticket are few: sort those (ties: the higher cell index is left, as the greedy does)."""
    left = np.zeros(x.size, dtype=np.int64)
    if dropped <= 0:
        return left
    last_of = np.where(caps > 0, (x - due * Q) / rate, np.inf)
    few = lowest_few(last_of, dropped)
    if few is not None:
        # Cells whose last ticket is above the cut are above the bound: they have no ticket below it.
        cells, _, bound = few
    else:
        cells = np.flatnonzero(caps > 0)
        bound = np.inf if dropped > cells.size else np.partition(last_of[cells], dropped - 1)[dropped - 1]
    last = last_of[cells]
    cell_rate = rate[cells]
    count = np.floor((bound - last) * cell_rate / Q).astype(np.int64) + 1 if np.isfinite(bound) else caps[cells]
    count = np.where(last <= bound, np.maximum(count, 1), count)  # float rounding at the bound
    count = np.clip(count, 0, caps[cells])
    k, j = ranges(np.zeros(cells.size, dtype=np.int64), count)  # j-th from the last
    owner = cells[k]
    priority = (x[owner] - (due[owner] - j) * Q) / rate[owner]
    worst = np.lexsort((-owner, priority))[:dropped]
    np.add.at(left, owner[worst], 1)
    return left


def _closest_to_due(credit, rate, caps, wanted: int) -> np.ndarray:
    """``wanted`` single picks, closest to due first: the one-at-a-time greedy over tickets (the
    k-th pick of a cell has priority (credit - k Q) / rate). ``wanted`` is small (spare batches),
    so the tickets above the ``wanted``-th best first ticket are few: sort those."""
    extra = np.zeros(caps.size, dtype=np.int64)
    if wanted == 0:
        return extra
    if wanted <= 8:  # a few: the greedy itself, one argmax per pick
        priority = np.where(caps > 0, credit / rate, -np.inf)
        for _ in range(wanted):
            c = int(np.argmax(priority))  # ties: lowest cell index
            extra[c] += 1
            priority[c] = (credit[c] - extra[c] * Q) / rate[c] if extra[c] < caps[c] else -np.inf
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
        room = np.floor((credit[eligible] - bound * rate[eligible]) / Q).astype(np.int64) + 1
        room = np.where(first >= bound, np.maximum(room, 1), room)  # float rounding at the bound
        count = np.clip(room, 0, caps[eligible])
        total = int(count.sum())
        if total <= 64 * wanted + 4096:
            at, k = ranges(np.zeros(eligible.size, dtype=np.int64), count)
            owner = eligible[at]
            priority = (credit[owner] - k * Q) / rate[owner]
            best = np.lexsort((owner, -priority))[:wanted]  # ties: lower cell index first
            np.add.at(extra, owner[best], 1)
            return extra
    return take_most_overdue(credit, rate, Q, caps, np.zeros(caps.size, dtype=np.int64), np.array([wanted]))


def _fill_room(layout: DatasetLayout, x, served, left_b, room, batches, per_bucket) -> np.ndarray:
    """Room in the batches the buckets got: the due picks left (``left_b`` per bucket), then picks
    due next epoch, so batches run full and no capacity is lost to partial batches."""
    soon = np.minimum(np.maximum((x + layout.cell_demand) // Q, 0), layout.cell_size)
    candidates = soon - served
    # Early picks go only into extra batches: a bucket served by its free slots alone keeps its pace.
    wanted = np.minimum(np.where(batches > 0, room, np.minimum(room, left_b)), per_bucket(candidates))
    if not layout.extra_batches_exact:
        # K has spare capacity on average, so there is no need to work ahead: a bucket takes early
        # picks only while its cells, together, are behind their pace (credit above the phase).
        behind = per_bucket(x - served * Q - PHASE) // Q
        wanted = np.minimum(wanted, behind + left_b)
    wanted = np.maximum(wanted, 0)
    if wanted.any():
        served = served + _most_overdue_per_bucket(layout, x - (served + 1) * Q, candidates, wanted)
    return served


def allocate_epoch(layout: DatasetLayout, state: CreditState) -> tuple[EpochAllocation, CreditState]:
    """One epoch's allocation from the credits left by the previous epoch."""
    # A replay runs this once per epoch on every cell: the common path keeps to few numpy calls
    # (each costs a few microseconds whatever its size), the rare ones branch off.
    rho = layout.cell_demand
    rate = layout.cell_rate
    n = layout.cell_size
    B = layout.n_buckets
    free, fill = layout.free_slots, layout.fill
    K = layout.extra_batches
    x = state.cell_credit + rho
    due = x >> _Q_BITS  # x // Q, credits being integers
    np.maximum(due, 0, out=due)
    np.minimum(due, n, out=due)

    present = layout.bucket_has_cells
    first = layout.bucket_first_cells

    def per_bucket(values):
        out = np.zeros(B, dtype=np.int64)
        if first.size:
            out[present] = np.add.reduceat(values, first)
        return out

    due_b = per_bucket(due)
    batches = _batches_for(due_b, free, fill)
    contended = int(batches.sum()) > K
    if contended:
        served = _contended(layout, x, rate, due, due_b, K)
        served_b = per_bucket(served)
        batches = _batches_for(served_b, free, fill)
    else:
        served, served_b = due, due_b
    spare = K - int(batches.sum())

    # Due picks left by contention: spare batches to the buckets with the most overdue ones.
    left_b = per_bucket(due - served) if contended else np.zeros(B, dtype=np.int64)  # none left otherwise
    room = free + batches * fill - served_b
    if contended and left_b.any():
        left_due = due - served
        waiting = left_b - room
        if spare > 0 and (waiting > 0).any():
            priority = np.where(left_due > 0, (x - (served + 1) * Q) / rate, -np.inf)
            best = np.full(B, -np.inf)
            best[present] = np.maximum.reduceat(priority, first)
            for b in np.lexsort((np.arange(B), -best)):
                if spare == 0 or best[b] == -np.inf:
                    break
                if waiting[b] > 0:
                    more = min(spare, int(-(-waiting[b] // fill[b])))
                    batches[b] += more
                    room[b] += more * fill[b]
                    spare -= more
    if room.any():
        served = _fill_room(layout, x, served, left_b, room, batches, per_bucket)
        served_b = per_bucket(served)

    picks = served
    if spare > 0:
        # Spare batches split batches first (at least one pick each): no pick is taken early.
        splittable = served_b - batches
        for b in np.lexsort((np.arange(B), -splittable)):
            if spare == 0 or splittable[b] <= 0:
                break
            more = min(spare, int(splittable[b]))
            batches[b] += more
            spare -= more
    if spare > 0:
        # Then each takes one pick, closest to due first: picks due next epoch, then forced ones.
        caps = n - served
        extra = _closest_to_due(x - (served + 1) * Q, rate, caps, min(spare, int(caps.sum())))
        extra_b = per_bucket(extra)
        batches += extra_b
        served_b = served_b + extra_b
        picks = served + extra
    free_picks = np.minimum(free, served_b - batches)
    # Credits: every pick is charged. Where K is rounded up, its spare batches over-serve a little
    # every epoch; the credit that takes below the cells' starting total is handed out again to all
    # cells in proportion to their rates, so the rounding up works as if every rate were a bit
    # higher and the credits cannot drift ahead however long the run (nor the spare picks grow).
    # Otherwise only what forced picks put beyond one epoch ahead is handed out so.
    left = x - picks * Q
    if layout.extra_batches_exact:
        deficit = int(np.maximum(-rho - left, 0).sum())
    else:
        deficit = int(PHASE) * left.size - int(left.sum())
    if deficit > 0:
        left += (layout.demand_float * (deficit / layout.demand_divisor)).astype(np.int64)
    allocation = EpochAllocation(free_picks, batches, served_b - free_picks, picks)
    return allocation, CreditState(left)
