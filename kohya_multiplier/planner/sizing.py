"""How many extra batches K an epoch needs: the layout's estimate, raised until a simulation keeps up.

ceil(fractional batches) is enough when buckets can carry credit freely. A bucket whose demand
nearly uses up its fractional images each epoch cannot: its batches split at epoch ends, and it
needs more batches than demand / fill; cells sharing a small bucket may also fall due together.
Simulating the credits for two periods of the slowest cell (cheap: no images are picked) finds
the K at which no cell falls behind: none owes a pick for longer than one epoch plus one period
1/r of its own, nor more than three images (credit of two images plus one epoch's demand, at
most one image), so subsets do not lag either. The rotation bound leaves a cell
that much room: 2 x ceil(1/f) + 2 epochs is two periods of its stream, plus two epochs, plus one
period of the cell.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kohya_multiplier.planner.credits import PICK_COST, CreditState, allocate_epoch
from kohya_multiplier.planner.layout import DatasetLayout

MIN_EPOCHS = 48
MAX_EPOCHS = 512


def simulation_epochs(layout: DatasetLayout) -> int:
    """Long enough for the slowest cell to fall due twice (within MIN_EPOCHS..MAX_EPOCHS)."""
    demand = layout.cell_demand[layout.cell_demand > 0]
    slowest = int(np.ceil(PICK_COST / demand.min())) if demand.size else 0
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, 2 * slowest + 8)))


def keeps_up(layout: DatasetLayout, epochs: int) -> bool:
    """Whether no cell falls behind (see above) in the first ``epochs`` epochs."""
    state = CreditState.initial(layout)
    deadline = 2 * PICK_COST + np.minimum(layout.cell_demand, PICK_COST)  # owed: a pick for one epoch and one period, at most two
    for _ in range(epochs):
        _, state = allocate_epoch(layout, state)
        if (state.cell_credit >= deadline).any():
            return False
    return True


def with_enough_extra_batches(layout: DatasetLayout) -> DatasetLayout:
    most = int(np.sum(-(-layout.capacity // layout.fill)))  # every fractional image every epoch
    epochs = simulation_epochs(layout)
    while layout.extra_batches < most and not keeps_up(layout, epochs):
        layout = dataclasses.replace(layout, extra_batches=layout.extra_batches + 1)
    return layout
