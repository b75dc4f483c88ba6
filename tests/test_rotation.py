"""The O(1)-per-cell rotation state walks exactly the streams an explicit construction walks."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kohya_multiplier import rng
from kohya_multiplier.planner import rotation
from kohya_multiplier.planner.permutation import cycle_keys, permute


def explicit_walk(seed, subset, bucket, n, windows):
    """Every cycle's walking order built in full: the head of a crossing skips the tail's images."""
    def raw(c):
        return permute(cycle_keys(seed, rng.ROTATION, subset, bucket, c), 0, n, np.arange(n))

    orders = {0: raw(0)}
    position, out = 0, []
    for w in windows:
        c, o = divmod(position, n)
        orders.setdefault(c, raw(c))
        if o + w <= n:
            out.append(orders[c][o : o + w])
        else:
            tail = orders[c][o:]
            perm = raw(c + 1)
            in_tail = np.isin(perm, tail)
            head = np.flatnonzero(~in_tail)[: w - tail.size]
            scanned = head[-1] + 1
            orders[c + 1] = np.concatenate([perm[head], perm[:scanned][in_tail[:scanned]], perm[scanned:]])
            out.append(np.concatenate([tail, orders[c + 1][: w - tail.size]]))
        position += w
    return out


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_state_walk_equals_explicit_orders(data):
    cells = data.draw(st.integers(1, 5))
    n = np.array(data.draw(st.lists(st.integers(1, 30), min_size=cells, max_size=cells)))
    subset, bucket = np.arange(cells), np.array(data.draw(st.lists(st.integers(0, 3), min_size=cells, max_size=cells)))
    epochs = 25
    windows = np.array([[data.draw(st.integers(0, int(k))) for k in n] for _ in range(epochs)])
    expected = [explicit_walk(3, subset[c], bucket[c], int(n[c]), windows[:, c]) for c in range(cells)]
    state = rotation.RotationState.initial(cells)
    for e in range(epochs):
        cell, local = rotation.take(3, subset, bucket, n, state, windows[e])
        for c in range(cells):
            got = local[cell == c]
            assert np.array_equal(got, expected[c][e])
            assert np.unique(got).size == got.size  # no image twice in an epoch
        state = rotation.advance(3, subset, bucket, n, state, windows[e])
        assert sum(t.size for t in state.tails.values()) <= int(n.sum())  # bounded, whatever the epoch


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_walk_over_many_epochs_equals_advancing_epoch_by_epoch(data):
    """Walk (a replay: epochs taken in chunks) leaves the states advance() leaves, explicit tails
    included; windows up to the whole cell, so crossings whose head reaches the tail are common."""
    cells = data.draw(st.integers(1, 6))
    n = np.array(data.draw(st.lists(st.integers(1, 12), min_size=cells, max_size=cells)))
    subset, bucket = np.arange(cells), np.array(data.draw(st.lists(st.integers(0, 3), min_size=cells, max_size=cells)))
    epochs = data.draw(st.integers(1, 80))
    windows = np.array([[data.draw(st.integers(0, int(k))) for k in n] for _ in range(epochs)])
    stops = sorted(set(data.draw(st.lists(st.integers(1, epochs), max_size=3))) | {epochs})
    state = rotation.RotationState.initial(cells)
    walk = rotation.Walk(state, 3, subset, bucket, n)
    for e in range(epochs):
        state = rotation.advance(3, subset, bucket, n, state, windows[e])
        walk.step(windows[e])
        if e + 1 in stops:
            got = walk.state()
            for name in ("cycle", "offset", "entry_tail", "entry_head"):
                assert np.array_equal(getattr(got, name), getattr(state, name)), name
            assert got.tails.keys() == state.tails.keys()
            assert all(np.array_equal(got.tails[c], state.tails[c]) for c in state.tails)
