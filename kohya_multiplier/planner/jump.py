"""A progress line while a planner jumps to a late epoch (``plan --from-epoch K``).

A jump replays the credits of every earlier epoch inside ``DatasetPlanner.plan_epoch`` (bounded by
``limits.MAX_EPOCH``: at most a few seconds). The planner reports no progress, so a background
thread redraws an elapsed-time line meanwhile (only on a terminal, and only after half a second,
as every bar of :mod:`kohya_multiplier.progress`). The planner keeps the replayed state, so planning
epoch K afterwards costs one epoch.
"""

from __future__ import annotations

import threading

from kohya_multiplier.progress import Progress

_TICK = 0.2


def jump_to(planner, epoch: int, label: str) -> None:
    """Plan ``epoch`` once (replaying epochs 1..epoch-1) while showing ``label`` with the elapsed time."""
    if epoch <= 1:
        return
    done = threading.Event()
    bar = Progress(None, label)

    def tick() -> None:
        while not done.wait(_TICK):
            bar.advance(0)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        planner.plan_epoch(epoch)
    finally:
        done.set()
        thread.join()
        bar.close()
