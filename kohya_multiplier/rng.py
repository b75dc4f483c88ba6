"""Random generators seeded from explicit tuples.

Every random number in kohya-multiplier comes from a generator seeded by
``(seed, stream, *indices)``, never from the global ``random`` module (sd-scripts and its logging
consume that), so the main process, every DataLoader worker, every GPU rank and a resumed run all
draw the same numbers. The stream ids are fixed constants, not hashes of strings, so they do not
depend on Python's hash randomisation.
"""

from __future__ import annotations

import numpy as np

# One id per place that draws random numbers. Never renumber: plans would change.
ROTATION = 1  # per (cell, cycle) permutation of a cell's images
BUCKET_SHUFFLE = 2  # per (epoch, bucket) order of a bucket's epoch list
BATCH_ORDER = 3  # per epoch order of the batches
SYNTHETIC = 4  # benchmark and example data

_U32 = 0xFFFFFFFF


def generator(seed: int, stream: int, *indices: int) -> np.random.Generator:
    """A numpy Generator that is a pure function of ``(seed, stream, *indices)``."""
    words = [int(seed) & _U32, (int(seed) >> 32) & _U32, int(stream)]
    words.extend(int(i) for i in indices)
    if any(w < 0 for w in words):
        raise ValueError(f"generator indices must be non-negative: {words}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))
