"""The step arithmetic of an sd-scripts run, as sd-scripts computes and prints it. Torch-free.

Users double-check every run by hand because what sd-scripts prints as "num epochs" and "total
optimization steps" follows from its own formulas, with several processes and gradient
accumulation. These are those formulas, the same in train_network.py (and the scripts built on it),
train_db.py, sdxl_train.py and fine_tune.py at v0.9.1, main 48d368fa and v0.11.1:

- the DataLoader yields one planned batch per item, so its length is the datasets' batches per
  epoch L; accelerate shards it over P processes with even batches: ceil(L / P) per process
  (printed as "num batches per epoch");
- ``--max_train_epochs E`` sets ``max_train_steps = E * ceil(L / P / G)`` (G: gradient
  accumulation steps), evaluated in floating point as sd-scripts writes it; otherwise
  ``--max_train_steps`` (default 1600) stands;
- optimizer steps per epoch: ceil(ceil(L / P) / G); epochs: ceil(max_train_steps / that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SD_SCRIPTS_DEFAULT_MAX_TRAIN_STEPS = 1600


@dataclass(frozen=True)
class RunArithmetic:
    batches_per_epoch: int  # all processes together: the datasets' epoch length L
    processes: int
    gradient_accumulation_steps: int
    batches_per_process: int  # what sd-scripts prints as "num batches per epoch"
    steps_per_epoch: int  # optimizer steps per epoch
    max_train_steps: int  # "total optimization steps"
    num_epochs: int  # "num epochs"
    steps_from_epochs: bool  # max_train_steps came from --max_train_epochs

    @property
    def batches_trained(self) -> int:
        """Batches each process trains before the run stops at max_train_steps.

        Each epoch ends with an optimizer step, even over fewer than G batches (accelerate syncs at
        the end of the DataLoader); a run cut inside an epoch has taken whole steps of G batches there.
        """
        full_epochs, steps_left = divmod(self.max_train_steps, self.steps_per_epoch)
        return min(full_epochs * self.batches_per_process + steps_left * self.gradient_accumulation_steps,
                   self.num_epochs * self.batches_per_process)

    def epoch_fractions(self) -> list[float]:
        """Share of each epoch 1..num_epochs the run trains (the last may be cut by max_train_steps)."""
        left = self.batches_trained
        shares = []
        for _ in range(self.num_epochs):
            taken = min(left, self.batches_per_process)
            shares.append(taken / self.batches_per_process if self.batches_per_process else 0.0)
            left -= taken
        return shares


def compute(
    batches_per_epoch: int,
    *,
    processes: int = 1,
    gradient_accumulation_steps: int = 1,
    max_train_epochs: int | None = None,
    max_train_steps: int | None = None,
) -> RunArithmetic:
    if batches_per_epoch < 1 or processes < 1 or gradient_accumulation_steps < 1:
        raise ValueError("batches per epoch, processes and gradient accumulation steps must be at least 1")
    per_process = math.ceil(batches_per_epoch / processes)
    if max_train_epochs is not None:
        steps = max_train_epochs * math.ceil(batches_per_epoch / processes / gradient_accumulation_steps)
    else:
        steps = max_train_steps if max_train_steps is not None else SD_SCRIPTS_DEFAULT_MAX_TRAIN_STEPS
    steps_per_epoch = math.ceil(per_process / gradient_accumulation_steps)
    return RunArithmetic(
        batches_per_epoch=batches_per_epoch,
        processes=processes,
        gradient_accumulation_steps=gradient_accumulation_steps,
        batches_per_process=per_process,
        steps_per_epoch=steps_per_epoch,
        max_train_steps=steps,
        num_epochs=math.ceil(steps / steps_per_epoch),
        steps_from_epochs=max_train_epochs is not None,
    )


def format_run(run: RunArithmetic, trainer: str = "sd-scripts") -> list[str]:
    """The lines the trainer prints at the start of training, with our wording beside its labels
    (musubi-tuner's training loop does the same arithmetic)."""
    where = f"{run.processes} processes, " if run.processes > 1 else ""
    lines = [
        f"the run, as {trainer} will print it ({where}gradient accumulation {run.gradient_accumulation_steps}):",
        f"  num batches per epoch: {run.batches_per_process}" + (f" per process ({run.batches_per_epoch} in all)" if run.processes > 1 else ""),
        f"  optimizer steps per epoch: {run.steps_per_epoch}",
        f"  num epochs: {run.num_epochs}",
        f"  total optimization steps: {run.max_train_steps}"
        + (" (from --max_train_epochs)" if run.steps_from_epochs else " (--max_train_steps)"),
    ]
    lines.append(f"  batches trained: {run.batches_trained}" + (" per process" if run.processes > 1 else ""))
    if run.batches_trained < run.num_epochs * run.batches_per_process:
        lines.append(f"  the last epoch stops after {run.batches_trained - (run.num_epochs - 1) * run.batches_per_process} "
                     f"of its {run.batches_per_process} batches (max_train_steps)")
    return lines
