"""Greedy "most credit first" allocation, computed in one vectorised pass.

Both levels of the planner hand out units (a batch to a bucket, a pick to a cell) one at a time to
whoever has the most credit, and each unit handed out lowers the receiver's credit by one step.
The k-th unit a receiver can take (k = 0, 1, ... cap-1) is a *ticket* whose priority is
``credit / step - k``. Handing out R units greedily is the same as taking the R tickets of highest
priority (ties: larger fractional credit, then lower receiver index). This module finds those
tickets per group without a per-unit Python loop: a bisection on the integer part of the priority,
then a tie-break at the cut level.
"""

from __future__ import annotations

import numpy as np


def take_top_tickets(
    whole: np.ndarray,
    frac: np.ndarray,
    caps: np.ndarray,
    group: np.ndarray,
    wanted: np.ndarray,
) -> np.ndarray:
    """Units per receiver when each group hands out ``wanted[g]`` units greedily.

    whole, frac: integer and fractional part of each receiver's priority (credit / step);
    caps: most units a receiver may take; group: group index of each receiver, receivers of a
    group listed in tie-break order; wanted: units to hand out per group (at most the group's
    total cap). Returns the units each receiver takes.
    """
    whole = np.asarray(whole, dtype=np.int64)
    caps = np.asarray(caps, dtype=np.int64)
    group = np.asarray(group, dtype=np.int64)
    wanted = np.asarray(wanted, dtype=np.int64)
    n_groups = wanted.shape[0]
    taken = np.zeros(whole.shape[0], dtype=np.int64)
    if whole.shape[0] == 0 or not wanted.any():
        return taken
    has_cap = caps > 0
    # Ticket levels of receiver i run from whole[i] down to whole[i] - caps[i] + 1.
    top = np.full(n_groups, np.iinfo(np.int64).min, dtype=np.int64)
    bottom = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.maximum.at(top, group[has_cap], whole[has_cap])
    np.minimum.at(bottom, group[has_cap], whole[has_cap] - caps[has_cap] + 1)
    active = wanted > 0
    # Invariant: count(level >= lo) >= wanted and count(level >= hi) < wanted.
    lo = np.where(active, bottom, 0)
    hi = np.where(active, top + 1, 1)
    while True:
        open_ = hi - lo > 1
        if not open_.any():
            break
        mid = lo + (hi - lo) // 2
        counts = _tickets_at_or_above(whole, caps, group, mid, n_groups)
        enough = counts >= wanted
        lo = np.where(open_ & enough, mid, lo)
        hi = np.where(open_ & ~enough, mid, hi)
    cut = lo[group]
    taken = np.clip(whole - cut, 0, caps)  # every ticket strictly above the cut level
    taken[~active[group]] = 0
    remaining = wanted - np.bincount(group, weights=taken, minlength=n_groups).astype(np.int64)
    # Tickets exactly at the cut level, best fractional credit first, then receiver order.
    at_cut = active[group] & (whole - cut >= 0) & (whole - cut < caps)
    candidates = np.flatnonzero(at_cut)
    if candidates.size:
        order = np.lexsort((candidates, -np.asarray(frac)[candidates], group[candidates]))
        ranked = candidates[order]
        ranked_group = group[ranked]
        starts = np.searchsorted(ranked_group, np.arange(n_groups))
        rank_in_group = np.arange(ranked.size) - starts[ranked_group]
        chosen = ranked[rank_in_group < remaining[ranked_group]]
        taken[chosen] += 1
    return taken


def _tickets_at_or_above(whole, caps, group, level, n_groups):
    per_receiver = np.clip(whole - level[group] + 1, 0, caps)
    return np.bincount(group, weights=per_receiver, minlength=n_groups).astype(np.int64)
