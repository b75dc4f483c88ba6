"""Which images of a cell its fractional picks take: a walk through per-cycle permutations.

Each cell walks an endless stream made of one keyed permutation of its n images per *cycle*
(``permutation.py``, key (seed, subset, bucket, cycle)); an epoch takes the next ``w`` positions
of the stream. When an epoch's window crosses from cycle c into cycle c+1, it takes the rest of
cycle c (the tail T, t images) and then the first h = w - t images of cycle c+1 that are not in T,
so no image is taken twice in one epoch; the images of T that cycle c+1's permutation put among
them keep their turn right after. So cycle c+1's *walking order* is its permutation with that head
moved to the front, and it differs from the permutation only before position ``scanned`` (at most
w). The order depends on cycle c only through the set T.

State, per cell, O(1) numbers: the stream position, and (t, h) of the crossing that entered the
current cycle. T is then the last t positions of cycle c's permutation, unless cycle c's own head
reordering reached that far (its tail started before its ``scanned``; only when a cycle is about
two windows long); then T is kept explicitly, at most w numbers, until the cell leaves the cycle.
Replaying an epoch moves positions (and looks at permutations only in that rare case), so a jump
to epoch E costs O(cells) per earlier epoch, and ``Walk`` adds up a chunk of epochs' windows before
it looks at cycles; planning an epoch evaluates the permutations at the positions it takes, so its
cost follows the picks.

Cells whose fraction is above 1/2 rotate the images they leave out instead (``w = n - picks``),
so their cycles stay long. Either way, image counts within a cell never differ by more than one
at an epoch boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kohya_multiplier import rng
from kohya_multiplier.planner.permutation import cycle_keys, permute, position_of
from kohya_multiplier.planner.tickets import ranges

_SHIFT = np.int64(32)  # cells have fewer than 2**31 images


@dataclass
class RotationState:
    cycle: np.ndarray  # (C,) current cycle of each cell's stream
    offset: np.ndarray  # (C,) positions of it taken so far (stream position = cycle x n + offset)
    entry_tail: np.ndarray  # (C,) t of the epoch that crossed into the current cycle (0: none did)
    entry_head: np.ndarray  # (C,) h of that epoch
    tails: dict[int, np.ndarray] = field(default_factory=dict)  # explicit T where not the raw tail

    @classmethod
    def initial(cls, n_cells: int) -> "RotationState":
        zeros = lambda: np.zeros(n_cells, dtype=np.int64)  # noqa: E731
        return cls(zeros(), zeros(), zeros(), zeros(), {})


def fresh_cycles(state: RotationState, cells: np.ndarray) -> RotationState:
    """``state`` with ``cells`` at the start of a new cycle (no crossing entered it): the next
    cycle where a cell is inside one, its current cycle where it has taken nothing of it yet."""
    cycle, offset = state.cycle.copy(), state.offset.copy()
    entry_tail, entry_head = state.entry_tail.copy(), state.entry_head.copy()
    started = offset[cells] > 0
    cycle[cells] += started
    offset[cells] = 0
    entry_tail[cells] = 0
    entry_head[cells] = 0
    tails = {cell: tail for cell, tail in state.tails.items() if cell not in set(cells.tolist())}
    return RotationState(cycle, offset, entry_tail, entry_head, tails)


class _Cycles:
    """The walking orders of some cells' cycles (one *view* per cell), evaluated at any positions.

    subset, bucket, n, cycle, t, h: per view. Views with t > 0 need the previous cycle's tail T:
    given in ``explicit`` (flat elements and the view of each), else the last t positions of the
    previous cycle's permutation.
    """

    def __init__(self, seed: int, subset, bucket, n, cycle, t, h, explicit=None):
        self.n, self.t, self.h = n, t, h
        views = n.size
        self.keys = cycle_keys(seed, rng.ROTATION, subset, bucket, cycle)
        given_elements, given_seg = explicit if explicit is not None else (np.zeros(0, dtype=np.int64),) * 2
        implicit = t > 0
        implicit[given_seg] = False
        raw_views = np.flatnonzero(implicit)
        elements, seg = given_elements, given_seg
        if raw_views.size:
            previous = cycle_keys(seed, rng.ROTATION, subset[raw_views], bucket[raw_views], cycle[raw_views] - 1)
            count = t[raw_views]
            local, positions = ranges(n[raw_views] - count, count)
            elements = np.concatenate([permute(previous, local, n[raw_views][local], positions), given_elements])
            seg = np.concatenate([raw_views[local], given_seg])
        pos = position_of(self.keys, seg, n[seg], elements)
        order = np.lexsort((pos, seg))
        self.seg, self.pos, self.elements = seg[order], pos[order], elements[order]
        self.start = np.searchsorted(self.seg, np.arange(views))
        rank = np.arange(self.seg.size) - self.start[self.seg]
        self.combined = (self.seg << _SHIFT) | (self.pos - rank)
        self.scanned = np.zeros(views, dtype=np.int64)
        heads = np.flatnonzero((t > 0) & (h > 0))
        self.scanned[heads] = self._raw(heads, h[heads] - 1) + 1

    def _raw(self, v, j):
        """Raw permutation position of the j-th image not in T (j < h)."""
        below = np.searchsorted(self.combined, (v << _SHIFT) | j, side="right") - self.start[v]
        return j + below

    def at(self, v, j) -> np.ndarray:
        """Image (local index) at position j of view v's walking order."""
        out = np.zeros(j.size, dtype=np.int64)
        head = j < self.h[v]
        head &= self.t[v] > 0
        deferred = ~head & (j < self.scanned[v])
        direct = ~deferred
        raw = np.where(head, self._raw(v, j) if j.size else j, j)
        out[direct] = permute(self.keys, v[direct], self.n[v[direct]], raw[direct])
        dv = v[deferred]
        out[deferred] = self.elements[self.start[dv] + j[deferred] - self.h[dv]]
        return out


def _current_views(seed, cell_subset, cell_bucket, cell_size, state: RotationState, cells, first_query):
    """Views of the current cycles of ``cells`` (sorted); the head reordering is looked at only
    where a query (all at or after ``first_query``) can fall inside it."""
    n = cell_size[cells]
    cycle = state.cycle[cells]
    t, h = state.entry_tail[cells], state.entry_head[cells]
    reaches = (t > 0) & (first_query < t + h)
    t, h = np.where(reaches, t, 0), np.where(reaches, h, 0)
    explicit = None
    if state.tails:
        # cells are sorted: find each explicit tail's view without a map over every cell
        tailed = np.fromiter(state.tails, dtype=np.int64, count=len(state.tails))
        view = np.minimum(np.searchsorted(cells, tailed), max(cells.size - 1, 0))
        used = (cells[view] == tailed) & reaches[view] if cells.size else np.zeros(tailed.size, dtype=bool)
        given = [(int(v), e) for v, e, u in zip(view, state.tails.values(), used) if u]
        if given:
            explicit = (np.concatenate([e for _, e in given]).astype(np.int64),
                        np.concatenate([np.full(len(e), v, dtype=np.int64) for v, e in given]))
    return _Cycles(seed, cell_subset[cells], cell_bucket[cells], n, cycle, t, h, explicit)


def take(seed, cell_subset, cell_bucket, cell_size, state: RotationState, windows) -> tuple[np.ndarray, np.ndarray]:
    """The images (cell, local index) of each cell's next ``windows[c]`` stream positions."""
    cells = np.flatnonzero(windows > 0)
    if cells.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    n = cell_size[cells]
    w = windows[cells]
    offset = state.offset[cells]
    in_cycle = np.minimum(w, n - offset)
    views = _current_views(seed, cell_subset, cell_bucket, cell_size, state, cells, offset)
    v, j = ranges(offset, in_cycle)
    first = views.at(v, j)
    crossing = np.flatnonzero(w > in_cycle)
    if crossing.size == 0:
        return cells[v], first
    # Heads of the next cycles: the first h images not in this epoch's tail T.
    t = in_cycle[crossing]
    h = w[crossing] - t
    # T of each crossing cell: all its images of this cycle (they come first in its queries)
    is_crossing = np.zeros(cells.size, dtype=bool)
    is_crossing[crossing] = True
    view_of = np.full(cells.size, -1, dtype=np.int64)
    view_of[crossing] = np.arange(crossing.size)
    in_tail = is_crossing[v]
    explicit = (first[in_tail], view_of[v[in_tail]])
    c = cells[crossing]
    nxt = _Cycles(seed, cell_subset[c], cell_bucket[c], n[crossing], state.cycle[c] + 1, t, h, explicit)
    hv, hj = ranges(np.zeros(crossing.size, dtype=np.int64), h)
    second = nxt.at(hv, hj)
    return np.concatenate([cells[v], c[hv]]), np.concatenate([first, second])


class Walk:
    """A RotationState advanced over many epochs (a replay), the same states as advance() gives.

    A replay moves positions only, so the epochs are taken in chunks: each epoch adds its windows
    to a running position (one numpy call), and once per chunk the positions give each cell's
    cycle, offset and the crossing that entered its cycle (the last one in the chunk). Explicit
    tails can only arise where two windows together exceed the cycle; those few cells' crossings
    are found in the chunk's positions and resolved in order.
    """

    CHUNK = 32  # epochs per chunk: its positions, 32 x 8 bytes per cell, stay in cache

    def __init__(self, state: RotationState, seed, cell_subset, cell_bucket, cell_size):
        self.seed, self.cell_subset, self.cell_bucket, self.n = seed, cell_subset, cell_bucket, cell_size
        self.cycle = state.cycle.copy()
        self.offset = state.offset.copy()
        self.window = state.entry_tail + state.entry_head  # the crossing's window (t + h), 0: none
        self.head = state.entry_head.copy()  # h: the offset right after that crossing
        self.tails = dict(state.tails)
        self._positions = np.empty((self.CHUNK, cell_size.size), dtype=np.int64)  # from the cycle's start
        self._widest = np.zeros(cell_size.size, dtype=np.int64)
        self._rows = 0

    def step(self, windows) -> None:
        """Take ``windows[c]`` stream positions of each cell."""
        before = self._positions[self._rows - 1] if self._rows else self.offset
        np.add(before, windows, out=self._positions[self._rows])
        np.maximum(self._widest, windows, out=self._widest)
        self._rows += 1
        if self._rows == self.CHUNK:
            self._flush()

    def state(self) -> RotationState:
        self._flush()
        return RotationState(self.cycle.copy(), self.offset.copy(), self.window - self.head, self.head.copy(), dict(self.tails))

    def _flush(self) -> None:
        rows, self._rows = self._rows, 0
        if rows == 0:
            return
        n = self.n
        positions = self._positions[:rows]
        # Windows are at most n and offsets below n: an epoch enters at most the next cycle.
        entered = positions[-1] // n
        # Two crossings can only make an explicit tail if their windows together exceed n.
        risky = np.flatnonzero((self._widest >= 2) & (self._widest + np.maximum(self._widest, self.window) > n))
        found = self._risky_tails(risky, positions) if risky.size else {}
        self._widest[:] = 0
        moved = np.flatnonzero(entered)
        if moved.size:
            # The last entering epoch: the first whose end reaches the start of the final cycle.
            start = entered * n
            row = np.count_nonzero(positions < start, axis=0)[moved]
            end = positions[row, moved]
            begin = np.where(row > 0, positions[row - 1, moved], self.offset[moved])
            m = n[moved]
            base = start[moved] - m
            crossing = (begin > base) & (end - base > m)  # in the middle of the epoch's window
            self.window[moved] = np.where(crossing, end - begin, 0)
            self.head[moved] = np.where(crossing, end - base - m, 0)
            if self.tails:
                self.tails = {c: images for c, images in self.tails.items() if not entered[c]}
        self.tails.update(found)
        self.cycle += entered
        np.subtract(positions[-1], entered * n, out=self.offset)

    def _risky_tails(self, risky, positions) -> dict[int, np.ndarray]:
        """The explicit tails the chunk leaves to the risky cells: their entering epochs found in
        the positions, the crossings whose head reordering reaches the tail resolved in order."""
        n = self.n[risky]
        at = np.vstack([self.offset[risky][None, :], positions[:, risky]])  # at epoch starts, then the end
        cycles = at // n
        cell, epoch = np.nonzero((cycles[1:] > cycles[:-1]).T)  # cell by cell, epochs in order
        if cell.size == 0:
            return {}
        begin, end = at[epoch, cell], at[epoch + 1, cell]
        base = (cycles[epoch + 1, cell] - 1) * n[cell]
        offset = begin - base
        crossing = (offset > 0) & (end - base > n[cell])
        window = np.where(crossing, end - begin, 0)
        head = np.where(crossing, end - base - n[cell], 0)
        first = np.r_[True, cell[1:] != cell[:-1]]  # the cell's first entering epoch in the chunk
        entry_window = np.r_[0, window[:-1]]
        entry_head = np.r_[0, head[:-1]]
        entry_window[first] = self.window[risky[cell[first]]]
        entry_head[first] = self.head[risky[cell[first]]]
        doubtful = np.flatnonzero(crossing & (offset < entry_window))
        if doubtful.size == 0:
            return {}
        tail_of: dict[int, np.ndarray] = {}  # entering epoch (index) -> explicit tail it leaves
        for e in np.unique(epoch[doubtful]):
            events = doubtful[epoch[doubtful] == e]
            c = risky[cell[events]]
            local = {}
            for k, i in enumerate(events):  # the tail the cycle was entered with
                entry = self.tails.get(int(c[k])) if first[i] else tail_of.get(int(i) - 1)
                if entry is not None:
                    local[k] = entry
            state = RotationState(self.cycle[c] + cycles[epoch[events], cell[events]], offset[events],
                                  entry_window[events] - entry_head[events], entry_head[events], local)
            for k, images in _explicit_tails(self.seed, self.cell_subset[c], self.cell_bucket[c], self.n[c], state).items():
                tail_of[int(events[k])] = images
        last = np.flatnonzero(np.r_[cell[1:] != cell[:-1], True])  # each cell's last entering epoch
        return {int(risky[cell[i]]): tail_of[int(i)] for i in last if int(i) in tail_of}


def _explicit_tails(seed, cell_subset, cell_bucket, cell_size, state: RotationState) -> dict[int, np.ndarray]:
    """T of the cells (crossing at their offsets in ``state``) whose current walking order differs
    from the permutation there: the rest of the cycle, in that order."""
    offset = state.offset
    views = _current_views(seed, cell_subset, cell_bucket, cell_size, state, np.arange(cell_size.size), offset)
    explicit = np.flatnonzero(offset < views.scanned)
    found = {}
    if explicit.size:
        count = cell_size[explicit] - offset[explicit]
        v, j = ranges(offset[explicit], count)
        images = views.at(explicit[v], j)
        bounds = np.r_[0, np.cumsum(count)]
        for k, c in enumerate(explicit):
            found[int(c)] = images[bounds[k] : bounds[k + 1]]
    return found


def advance(seed, cell_subset, cell_bucket, cell_size, state: RotationState, windows) -> RotationState:
    """The state after an epoch that takes ``windows[c]`` stream positions of each cell."""
    walk = Walk(state, seed, cell_subset, cell_bucket, cell_size)
    walk.step(windows)
    return walk.state()
