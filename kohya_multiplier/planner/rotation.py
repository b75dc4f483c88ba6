"""Which images of a cell its fractional picks take: a walk through per-cycle permutations.

Each cell walks an endless stream made of one seeded permutation of its images per *cycle*; an
epoch takes the next ``w`` positions of the stream. When an epoch's window crosses from cycle c into
cycle c+1, it takes the rest of cycle c (the tail T) and then the first images of cycle c+1 that
are not in T, so no image is taken twice in one epoch; the images of c+1 it skipped keep their
turn right after. Hence cycle c+1's walking order is its permutation with that head moved to the
front. That order depends on cycle c's tail only through the head; when the epochs around a cycle
boundary are short compared with the cycle, the tail is simply the permutation's last positions,
which keeps a direct jump to epoch E cheap.

Cells whose fraction is above 1/2 rotate the images they leave out instead (``w = n - picks``),
so their cycles stay long and the above shortcut keeps holding. Either way, image counts within a
cell never differ by more than one at an epoch boundary.
"""

from __future__ import annotations

import numpy as np

from kohya_multiplier import rng


class CellWalk:
    """The rotation stream of one cell, given the cell's window sizes of every epoch so far."""

    def __init__(self, seed: int, subset: int, bucket: int, size: int, cumulative: np.ndarray):
        # cumulative[e] = positions taken by epochs 1..e (cumulative[0] = 0)
        self.seed = seed
        self.subset = subset
        self.bucket = bucket
        self.n = size
        self.cumulative = cumulative
        self._raw: dict[int, np.ndarray] = {}
        self._order: dict[int, np.ndarray] = {}

    def window(self, epoch: int) -> np.ndarray:
        """Positions (local image indices) the cell's stream takes in ``epoch`` (1-based)."""
        start, stop = int(self.cumulative[epoch - 1]), int(self.cumulative[epoch])
        if stop == start:
            return np.zeros(0, dtype=np.int64)
        cycle, offset = divmod(start, self.n)
        take = stop - start
        if offset + take <= self.n:
            return self.order(cycle)[offset : offset + take]
        head = take - (self.n - offset)
        return np.concatenate([self.order(cycle)[offset:], self.order(cycle + 1)[:head]])

    def raw(self, cycle: int) -> np.ndarray:
        perm = self._raw.get(cycle)
        if perm is None:
            perm = rng.generator(self.seed, rng.ROTATION, self.subset, self.bucket, cycle).permutation(self.n)
            self._raw[cycle] = perm
        return perm

    def _entry(self, cycle: int):
        """(tail length in cycle-1, head length in cycle, window size) of the epoch that crosses into it."""
        if cycle == 0:
            return None
        boundary = cycle * self.n
        epoch = int(np.searchsorted(self.cumulative, boundary, side="left"))
        if epoch >= self.cumulative.size or self.cumulative[epoch] == boundary:
            return None  # the cycle starts with an epoch
        before = int(self.cumulative[epoch - 1])
        return boundary - before, int(self.cumulative[epoch]) - boundary, int(self.cumulative[epoch]) - before

    def order(self, cycle: int) -> np.ndarray:
        """Walking order of ``cycle``: its permutation, with the head taken by a crossing epoch first."""
        # Find how far back the chain of dependent cycles goes, then build it forwards (no recursion).
        chain = []
        c = cycle
        while c not in self._order:
            entry = self._entry(c)
            chain.append((c, entry))
            if entry is None or not self._tail_needs_order(c - 1, entry[0]):
                break
            c -= 1
        for c, entry in reversed(chain):
            if c in self._order:
                continue
            perm = self.raw(c)
            if entry is None:
                self._order[c] = perm
                continue
            tail_length, head_length, _ = entry
            previous_tail = self._tail(c - 1, tail_length)
            in_tail = np.isin(perm, previous_tail, assume_unique=True)
            free = np.flatnonzero(~in_tail)
            head_positions = free[:head_length]
            scanned = head_positions[-1] + 1
            skipped = perm[:scanned][in_tail[:scanned]]
            self._order[c] = np.concatenate([perm[head_positions], skipped, perm[scanned:]])
        return self._order[cycle]

    def _tail_needs_order(self, cycle: int, length: int) -> bool:
        """Whether the last ``length`` positions of ``cycle`` differ from its raw permutation's."""
        if cycle in self._order:
            return False
        entry = self._entry(cycle)
        # The head reordering only touches positions before the crossing epoch's window size.
        return entry is not None and entry[2] > self.n - length

    def _tail(self, cycle: int, length: int) -> np.ndarray:
        if cycle in self._order or self._tail_needs_order(cycle, length):
            return self.order(cycle)[self.n - length :]
        return self.raw(cycle)[self.n - length :]
