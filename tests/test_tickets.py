"""The vectorised allocation equals handing out units one at a time to the most overdue receiver."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kohya_multiplier.planner.tickets import take_most_overdue


def one_at_a_time(credit, rate, unit, caps, group, wanted):
    taken = np.zeros(len(credit), dtype=int)
    for g in range(len(wanted)):
        members = [i for i in range(len(credit)) if group[i] == g]
        for _ in range(wanted[g]):
            open_ = [i for i in members if taken[i] < caps[i]]
            best = max(open_, key=lambda i: ((credit[i] - taken[i] * unit[i]) / rate[i], -i))
            taken[best] += 1
    return taken


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_matches_the_one_at_a_time_greedy(data):
    n = data.draw(st.integers(1, 10))
    n_groups = data.draw(st.integers(1, 4))
    group = np.sort(np.array(data.draw(st.lists(st.integers(0, n_groups - 1), min_size=n, max_size=n))))
    unit = np.array(data.draw(st.lists(st.sampled_from([16, 32, 48]), min_size=n, max_size=n)))
    # distinct priorities, so the float tie-break cannot matter
    credit = np.array(data.draw(st.lists(st.integers(-200, 200), min_size=n, max_size=n, unique=True))) * 7 + 3
    rate = np.array(data.draw(st.lists(st.integers(1, 64), min_size=n, max_size=n))) / 8 + np.arange(n) * 1e-7
    caps = np.array(data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)))
    wanted = np.array([data.draw(st.integers(0, int(caps[group == g].sum()))) for g in range(n_groups)])
    boundary = data.draw(st.integers(0, 4))
    got = take_most_overdue(credit, rate, unit, caps, group, wanted, boundary=boundary)
    assert np.array_equal(got, one_at_a_time(credit, rate, unit, caps, group, wanted))


def test_a_slow_receiver_with_one_image_of_credit_beats_a_fast_one_with_more():
    # cell 0: 0.03 images per epoch, 1 image of credit (33 epochs overdue); cell 1: 3.5 per epoch, 2 images
    got = take_most_overdue(np.array([16, 32]), np.array([0.03 * 16, 3.5 * 16]), 16, np.array([1, 5]),
                            np.array([0, 0]), np.array([1]))
    assert got.tolist() == [1, 0]


def test_least_overdue_leaves_what_the_greedy_leaves():
    """credits._least_overdue (contention at batch size 1) equals taking the others greedily."""
    from kohya_multiplier.planner import credits

    Q = credits.Q
    gen = np.random.default_rng(0)
    for _ in range(200):
        n = int(gen.integers(1, 30))
        x = gen.integers(-Q, 6 * Q, n)
        rate = gen.integers(1, 4 * Q, n).astype(float) + np.arange(n) * 1e-3
        due = np.clip(x // Q, 0, None)
        in_free = np.minimum(due, gen.integers(0, 2, n))
        caps = due - in_free
        wanted = int(gen.integers(0, caps.sum() + 1))
        greedy = take_most_overdue(x - (in_free + 1) * Q, rate, Q, caps, np.zeros(n, dtype=np.int64), np.array([wanted]))
        assert np.array_equal(caps - credits._least_overdue(x, rate, due, caps, int(caps.sum()) - wanted), greedy)


def test_most_overdue_per_bucket_equals_the_greedy_per_bucket():
    from types import SimpleNamespace

    from kohya_multiplier.planner import credits

    Q = credits.Q
    gen = np.random.default_rng(1)
    for _ in range(300):
        n = int(gen.integers(1, 25))
        n_buckets = int(gen.integers(1, 5))
        bucket = np.sort(gen.integers(0, n_buckets, n))
        rate = gen.integers(1, 4 * Q, n).astype(float) + np.arange(n) * 1e-3
        credit = gen.integers(-2 * Q, 6 * Q, n)
        caps = gen.integers(0, 6, n)
        caps_b = np.bincount(bucket, weights=caps, minlength=n_buckets).astype(int)
        wanted = np.array([int(gen.integers(0, c + 1)) for c in caps_b])
        layout = SimpleNamespace(cell_bucket=bucket, n_buckets=n_buckets, cell_rate=rate)
        greedy = take_most_overdue(credit, rate, Q, caps, bucket, wanted)
        assert np.array_equal(credits._most_overdue_per_bucket(layout, credit, caps, wanted), greedy)


def test_lowest_few_finds_the_kth_lowest_and_every_value_below_it():
    from kohya_multiplier.planner.tickets import lowest_few

    gen = np.random.default_rng(3)
    for _ in range(300):
        size = int(gen.integers(1, 5000))
        values = gen.choice([gen.random(size), np.round(gen.random(size) * 20)])  # with and without ties
        values[gen.random(size) < gen.random()] = np.inf  # absent
        k = int(gen.integers(1, max(2, size // 20)))
        few = lowest_few(values, k)
        finite = np.sort(values[np.isfinite(values)])
        if few is None:
            continue
        below, cut, bound = few
        assert bound == finite[k - 1] and cut >= bound
        assert np.array_equal(below, np.flatnonzero(values <= cut))


def test_the_few_picks_of_many_cells_equal_the_greedy():
    """_least_overdue and _closest_to_due at thousands of cells (where they look only near the cut)."""
    from kohya_multiplier.planner import credits

    Q = credits.Q
    gen = np.random.default_rng(4)
    for _ in range(40):
        n = int(gen.integers(500, 6000))
        rate = gen.integers(1, 4 * Q, n).astype(float) + np.arange(n) * 1e-3
        if gen.random() < 0.3:
            rate = np.round(rate / Q) * Q + Q  # ties
        x = gen.integers(-Q, 6 * Q, n)
        due = np.clip(x // Q, 0, None)
        dropped = int(gen.integers(1, max(2, n // 40)))
        dropped = min(dropped, int(due.sum()))
        greedy = take_most_overdue(x - Q, rate, Q, due, np.zeros(n, dtype=np.int64), np.array([int(due.sum()) - dropped]))
        assert np.array_equal(due - credits._least_overdue(x, rate, due, due, dropped), greedy)
        credit = gen.integers(-2 * Q, Q, n)
        caps = gen.integers(0, 3, n)
        wanted = min(int(gen.integers(9, max(10, n // 40))), int(caps.sum()))
        greedy = take_most_overdue(credit, rate, Q, caps, np.zeros(n, dtype=np.int64), np.array([wanted]))
        assert np.array_equal(credits._closest_to_due(credit, rate, caps, wanted), greedy)
