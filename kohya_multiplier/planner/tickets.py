"""Greedy "most overdue first" allocation, computed in one vectorised pass.

Both levels of the planner hand out units (a batch to a bucket, a pick to a cell) one at a time to
whoever is most overdue, and each unit handed out lowers the receiver's credit by one unit. The
k-th unit a receiver can take (k = 0, 1, ... cap-1) is a *ticket* whose priority is
``(credit - k * unit) / rate``. Handing out R units greedily is the same as taking the R tickets of
highest priority (ties: lower receiver index). This module finds those tickets per group without a
per-unit Python loop: a search for the priority threshold, then an exact sort of the few tickets
near it.
"""

from __future__ import annotations

import numpy as np


def ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat (owner, position) pairs: positions starts[k] .. starts[k]+counts[k]-1 for each owner k."""
    owner = np.repeat(np.arange(counts.size), counts)
    offset = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, starts[owner] + offset


def group_starts(group: np.ndarray, n_groups: int) -> np.ndarray:
    """First receiver index of each group (receivers sorted by group); empty groups point at the next."""
    return np.searchsorted(group, np.arange(n_groups)).astype(np.int64)


def take_most_overdue(
    credit: np.ndarray,
    rate: np.ndarray,
    unit: int | np.ndarray,
    caps: np.ndarray,
    group: np.ndarray,
    wanted: np.ndarray,
    starts: np.ndarray | None = None,
    boundary: int = 64,
) -> np.ndarray:
    """Units per receiver when each group hands out ``wanted[g]`` units, most overdue first.

    A receiver's k-th unit is due when its credit, minus k units, is largest *in epochs of its own
    rate*: priority ``(credit - k * unit) / rate``. A cell that accrues 0.03 images per epoch and
    has a whole image of credit has waited 33 epochs; a cell of 3.5 images per epoch with the same
    credit has waited a third of one. Serving the most overdue first keeps every cell's waiting
    time short, which is what keeps slow cells' images from going unseen for long.

    credit, rate: per receiver; unit: credit one unit costs (a number, or one per receiver);
    caps: most units a receiver may take; group: group of each receiver, receivers sorted by group
    and, within a group, in tie-break order; wanted: units to hand out per group (at most the
    group's total cap); starts: ``group_starts(group, len(wanted))`` if already known. Returns the
    units each receiver takes.
    """
    credit = np.asarray(credit, dtype=np.int64)
    caps = np.asarray(caps, dtype=np.int64)
    group = np.asarray(group, dtype=np.int64)
    wanted = np.asarray(wanted, dtype=np.int64)
    rate = np.asarray(rate, dtype=np.float64)
    unit = np.broadcast_to(np.asarray(unit, dtype=np.int64), credit.shape)
    n_groups = wanted.shape[0]
    if credit.shape[0] == 0 or not wanted.any():
        return np.zeros(credit.shape[0], dtype=np.int64)
    if starts is None:
        starts = group_starts(group, n_groups)
    # Stop the search once this many tickets are left near the threshold: sorting them is cheaper
    # than more passes over every receiver.
    boundary = max(boundary, credit.shape[0] // 8)
    tickets = _Tickets(credit, rate, unit, caps, group, n_groups, starts)
    low, high = _bracket_threshold(tickets, wanted, boundary)
    return _take_between(tickets, wanted, low, high)


class _Tickets:
    """The receivers' tickets, grouped: per-group sums and counts of tickets above a priority."""

    def __init__(self, credit, rate, unit, caps, group, n_groups: int, starts):
        self.credit, self.rate, self.unit, self.caps, self.group = credit, rate, unit, caps, group
        self.n_groups = n_groups
        self.present = np.diff(np.r_[starts, credit.shape[0]]) > 0
        self.reduce_at = starts[self.present]

    def per_group(self, values: np.ndarray, reducer, empty) -> np.ndarray:
        out = np.full(self.n_groups, empty, dtype=values.dtype)
        out[self.present] = reducer.reduceat(values, self.reduce_at)
        return out

    def count_at_or_above(self, threshold: np.ndarray) -> np.ndarray:
        """Per receiver: tickets k with (credit - k*unit) / rate >= its group's threshold."""
        room = self.credit - threshold[self.group] * self.rate
        return np.clip(np.floor(room / self.unit).astype(np.int64) + 1, 0, self.caps)


def _bracket_threshold(tickets: _Tickets, wanted, boundary: int):
    """Per group, priorities (low, high): at least ``wanted`` tickets at or above low, fewer at or
    above high, and at most about ``boundary`` tickets between them (or float resolution reached)."""
    credit, rate, unit, caps = tickets.credit, tickets.rate, tickets.unit, tickets.caps
    per_group = tickets.per_group
    has_cap = caps > 0
    active = wanted > 0
    # Bracket: high has fewer than wanted tickets at or above it, low at least wanted.
    high = per_group(np.where(has_cap, credit / rate, -np.inf), np.maximum, -np.inf) + 1.0
    low = per_group(np.where(has_cap, (credit - (caps - 1) * unit) / rate, np.inf), np.minimum, np.inf) - 1.0
    high = np.where(active, high, 1.0)
    low = np.where(active, low, 0.0)
    count_high = np.zeros(tickets.n_groups, dtype=np.int64)
    count_low = per_group(caps, np.add, 0)
    # First probe: where the tickets would run out if no cap bound (credit spent evenly in time).
    rate_sum = per_group(np.where(has_cap, rate, 0.0), np.add, 0.0)
    credit_sum = per_group(np.where(has_cap, credit, 0).astype(np.float64), np.add, 0.0)
    receivers = per_group(has_cap.astype(np.int64), np.add, 0)
    mean_unit = per_group(np.where(has_cap, unit, 0).astype(np.float64), np.add, 0.0) / np.maximum(receivers, 1)
    guess = (credit_sum + mean_unit * (receivers / 2 - wanted)) / np.where(rate_sum > 0, rate_sum, 1.0)
    # Search outwards from the guess in steps of about one ticket per receiver, growing 4x, then halve.
    step = mean_unit * np.maximum(receivers, 1) / np.where(rate_sum > 0, rate_sum, 1.0)
    probe = guess
    for _ in range(200):
        undecided = active & (count_low - count_high > boundary)
        if not undecided.any():
            break
        inside = (probe > low) & (probe < high)
        probe = np.where(inside, probe, (low + high) / 2)
        if not ((probe > low) & (probe < high))[undecided].any():
            break  # float resolution reached
        counts = per_group(tickets.count_at_or_above(probe), np.add, 0)
        enough = counts >= wanted
        move_low = undecided & enough
        move_high = undecided & ~enough
        low = np.where(move_low, probe, low)
        count_low = np.where(move_low, counts, count_low)
        high = np.where(move_high, probe, high)
        count_high = np.where(move_high, counts, count_high)
        probe = np.where(move_low, probe + step, probe - step)
        step = step * 4
    return low, high


def _take_between(tickets: _Tickets, wanted, low, high) -> np.ndarray:
    """Every ticket at or above high, then the best of those between low and high, sorted exactly
    (ties: lower receiver index), until each group has handed out ``wanted``."""
    group = tickets.group
    active = wanted > 0
    sure = np.where(active[group], tickets.count_at_or_above(high), 0)
    maybe = np.where(active[group], tickets.count_at_or_above(low), 0) - sure
    taken = sure
    remaining = wanted - tickets.per_group(sure, np.add, 0)
    if maybe.any():
        owner, ticket = ranges(sure, maybe)
        priority = (tickets.credit[owner] - ticket * tickets.unit[owner]) / tickets.rate[owner]
        order = np.lexsort((owner, -priority, group[owner]))
        ranked = owner[order]
        ranked_group = group[ranked]
        first_of_group = np.searchsorted(ranked_group, np.arange(tickets.n_groups))
        rank = np.arange(ranked.size) - first_of_group[ranked_group]
        np.add.at(taken, ranked[rank < remaining[ranked_group]], 1)
    return taken


def lowest_few(values: np.ndarray, k: int):
    """The k-th lowest of ``values`` (inf: absent) and the indices of all values at or below a cut
    that is at least it, or None where k is not few next to the values (then partition them all).

    The cut is guessed from a strided sample, so only the few values near the bottom are
    partitioned: a full np.partition of 12,000 values costs about ten times more, every epoch.
    The k-th lowest is exactly np.partition's; the caller needs no value above the cut.
    """
    if k < 1 or values.size < 32 * k:
        return None
    sample = values[::16]
    in_sample = min(sample.size, 2 * (k // 16) + 8)  # about 2k + 128 values at or below the cut
    cut = np.partition(sample, in_sample - 1)[in_sample - 1]
    if not np.isfinite(cut):
        return None
    below = np.flatnonzero(values <= cut)
    if below.size < k:
        return None
    return below, cut, np.partition(values[below], k - 1)[k - 1]
