"""Keyed permutations of [0, n), evaluated only at the positions needed, for many keys at once.

A cell's rotation draws one permutation of its n images per cycle. Building a numpy Generator for
each (cell, cycle) and shuffling all n images costs about 30 us per cell and n per cycle, even when
an epoch needs three positions of it. Here a permutation is a pure function
``permute(key, n, position) -> image``, vectorised over arrays of (key, n, position) triples, so the
cost follows the number of positions asked for:

- n <= EXACT_LIMIT: the positions sorted by a 64-bit hash of (key, index): an exactly uniform
  permutation, O(n) per query (n is small);
- larger n: an unbalanced alternating Feistel network (4 to 12 rounds by domain size, a
  multiply-xorshift round function keyed per round) on the bits that cover n, with cycle walking (apply again while
  the result is >= n; fewer than 2 applications on average): a bijection of [0, n) that is
  pseudo-random per key, invertible at the same cost.

Keys come from ``cycle_keys(seed, subset, bucket, cycle)``: a pure function of integers, never of
Python's hash or the global ``random``.
"""

from __future__ import annotations

import numpy as np

_M64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
EXACT_LIMIT = 16


def mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _C1
        z = (z ^ (z >> np.uint64(27))) * _C2
    return z ^ (z >> np.uint64(31))


def _absorb(h: np.ndarray, value) -> np.ndarray:
    with np.errstate(over="ignore"):
        return mix(h ^ (np.asarray(value, dtype=np.uint64) + _GOLDEN))


def cycle_keys(seed: int, stream: int, subset, bucket, cycle) -> np.ndarray:
    """One uint64 key per (subset, bucket, cycle) triple (arrays broadcast) for ``seed`` and ``stream``."""
    seed = int(seed)
    h = mix(np.uint64(seed & _M64))
    h = _absorb(h, np.uint64((seed >> 64) & _M64))
    h = _absorb(h, np.uint64(int(stream)))
    for part in (subset, bucket, cycle):
        part = np.asarray(part, dtype=np.int64)
        if part.size and part.min() < 0:
            raise ValueError("permutation key parts must be non-negative")
        h = _absorb(h, part.astype(np.uint64))
    return np.asarray(h, dtype=np.uint64)


def _rounds(bits: int) -> int:
    """Feistel rounds for a domain of ``bits`` bits: few-bit halves need more rounds to mix."""
    return 4 if bits >= 14 else 6 if bits >= 10 else 12


def _round_keys(keys: np.ndarray, rounds: int) -> np.ndarray:
    """(rounds, len(keys)) round keys, one mixing per key and round (keys are few)."""
    return np.stack([_absorb(keys, np.uint64(r)) for r in range(rounds)])


_S31 = np.uint64(31)
_S64 = np.uint64(64)


def _round(value, round_key, shift, out, scratch):
    """Round function: the top bits of a hash of (value, round key), ``shift`` = 64 - width.
    In place, into ``out``: an epoch runs it on hundreds of thousands of positions, and fresh
    arrays that size cost about as much as the arithmetic."""
    np.bitwise_xor(value, round_key, out=out)
    out *= _C1  # uint64 arrays wrap silently
    np.right_shift(out, _S31, out=scratch)
    out ^= scratch
    out *= _C2
    out >>= shift
    return out


def _feistel(round_keys, x, bits, inverse: bool):
    """An unbalanced, alternating Feistel network on ``bits`` bits (a number, or one per element)."""
    rounds = round_keys.shape[0]
    bits = np.asarray(bits, dtype=np.uint64)
    wl = bits // np.uint64(2)
    wr = bits - wl
    one = np.uint64(1)
    sl, sr = _S64 - wl, _S64 - wr
    f, scratch = np.empty_like(x), np.empty_like(x)
    if not inverse:
        left, right = x >> wr, x & ((one << wr) - one)
        for r in range(rounds):
            left ^= _round(right, round_keys[r], sl, f, scratch)  # (L, R) -> (R, L ^ F(R))
            left, right = right, left
            wl, wr, sl, sr = wr, wl, sr, sl
    else:
        if rounds % 2:  # the forward pass ended with the widths swapped
            wl, wr, sl, sr = wr, wl, sr, sl
        left, right = x >> wr, x & ((one << wr) - one)
        for r in range(rounds - 1, -1, -1):
            # undo (L, R) -> (R, L ^ F(R)); before that round the widths were (wr, wl)
            right ^= _round(left, round_keys[r], sr, f, scratch)
            left, right = right, left
            wl, wr, sl, sr = wr, wl, sr, sl
    left <<= wr
    left |= right
    return left


STRAGGLERS = 512  # below this many left in a domain size, walk them together with other sizes


def _walk(keys, key_index, n, x, inverse: bool) -> np.ndarray:
    """Cycle walking: apply the network on the covering power of two until the result is < n.
    Each domain size walks on its own while many are left; the few stragglers of every size then
    walk together (per-element widths), so they do not cost a pass per size each."""
    out = np.zeros(x.size, dtype=np.int64)
    bits_of = np.ceil(np.log2(n.astype(np.float64))).astype(np.int64)
    sizes = np.flatnonzero(np.bincount(bits_of))  # the domain sizes present (a sort would cost more)
    # Round r's key does not depend on the number of rounds: one table serves every size.
    table = _round_keys(keys, max(_rounds(int(bits)) for bits in sizes))
    left_over: dict[int, list] = {}
    for bits in sizes:
        where = np.flatnonzero(bits_of == bits)
        rounds = _rounds(int(bits))
        round_keys = np.take(table[:rounds], key_index[where], axis=1)
        value = x[where].astype(np.uint64)
        limit = n[where].astype(np.uint64)
        while where.size > STRAGGLERS:
            value = _feistel(round_keys, value, np.uint64(bits), inverse)
            done = value < limit
            landed = np.flatnonzero(done)
            out[where[landed]] = value[landed]
            keep = np.flatnonzero(~done)
            where, value, limit, round_keys = where[keep], value[keep], limit[keep], round_keys[:, keep]
        if where.size:
            left_over.setdefault(rounds, []).append((where, value, limit, round_keys, np.full(where.size, bits)))
    for parts in left_over.values():
        where, value, limit, bits = (np.concatenate([p[k] for p in parts]) for k in (0, 1, 2, 4))
        round_keys = np.concatenate([p[3] for p in parts], axis=1)
        bits = bits.astype(np.uint64)
        while where.size:
            value = _feistel(round_keys, value, bits, inverse)
            done = value < limit
            out[where[done]] = value[done]
            keep = ~done
            where, value, limit, round_keys, bits = where[keep], value[keep], limit[keep], round_keys[:, keep], bits[keep]
    return out


def _exact(key, n, x, inverse: bool) -> np.ndarray:
    """Small n: rank the indices 0..n-1 by a hash of (key, index); ties by index."""
    width = int(n.max()) if n.size else 0
    index = np.arange(width, dtype=np.uint64)
    h = _absorb(key[:, None], index[None, :])
    valid = index[None, :] < n[:, None].astype(np.uint64)
    h = np.where(valid, h, np.uint64(_M64))
    order = np.argsort(h, axis=1, kind="stable")  # order[q, p] = image at position p
    rows = np.arange(x.size)
    if inverse:
        rank = np.empty_like(order)
        rank[rows[:, None], order] = np.arange(width)[None, :]
        return rank[rows, x].astype(np.int64)
    return order[rows, x].astype(np.int64)


def _apply(keys, key_index, n, x, inverse: bool) -> np.ndarray:
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    key_index = np.broadcast_to(np.asarray(key_index, dtype=np.int64), x.shape)
    n = np.broadcast_to(np.asarray(n, dtype=np.int64), x.shape)
    out = np.zeros(x.size, dtype=np.int64)
    if x.size == 0:
        return out
    small = n <= EXACT_LIMIT
    if small.any():
        out[small] = _exact(keys[key_index[small]], n[small], x[small], inverse)
    if not small.all():
        big = np.flatnonzero(~small)
        out[big] = _walk(keys, key_index[big], n[big], x[big], inverse)
    return out


def permute(keys, key_index, n, position) -> np.ndarray:
    """Image at ``position`` of the permutation of [0, n) drawn by ``keys[key_index]`` (arrays broadcast)."""
    return _apply(keys, key_index, n, position, inverse=False)


def position_of(keys, key_index, n, image) -> np.ndarray:
    """Inverse of ``permute``: the position of ``image`` in the permutation of ``keys[key_index]``."""
    return _apply(keys, key_index, n, image, inverse=True)
