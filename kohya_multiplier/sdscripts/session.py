"""State of one wrapped training run, shared by the hooks in the main process. Torch-free.

The launcher (or the patched checkout's hook) creates the session and hands it to
``inject.install``, which binds it into the hooks and into the planned dataset and collator classes
(``dataset.bind_session``): no module holds it as a global. The ``prepare_dataset_args`` hook fills
it from sd-scripts' own parsed arguments (so ``--config_file`` and every alias count) by reading the
dataset config with the same core loader as the dry run; the dataset classes then take their
multipliers from it. Dataset instances copy what they need, because DataLoader workers started with
``spawn`` do not run the launcher and their classes have no session bound.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from kohya_multiplier.dataset.types import CommandLineOptions, DatasetSpec, TrainingConfig

# sd-scripts argument names that CommandLineOptions mirrors (missing ones count as not given).
_OPTION_NAMES = tuple(CommandLineOptions.__dataclass_fields__)
_PATH_OPTIONS = ("dataset_config", "train_data_dir", "reg_data_dir", "in_json")


@dataclass
class Session:
    schedule_path: str | None = None  # --multiplier_schedule
    config: TrainingConfig | None = None  # the core's reading; None: stock sd-scripts
    options: CommandLineOptions | None = None  # what the core read it with (a dataset reads it again if its folders changed)
    seed: int = 0  # planner seed (user's --seed or 0), the same on every rank
    planned: bool = False  # some subset uses a multiplier: training datasets follow the planner
    training_datasets_built: int = 0  # training datasets (DreamBooth or fine-tuning) constructed so far
    # training datasets generate_dataset_group_by_blueprint builds (its blueprint's), before its
    # validation datasets; None until it runs. A ControlNet dataset's delegate says no more.
    training_datasets_expected: int | None = None
    live_datasets: list[Any] = field(default_factory=list)  # our dataset instances, for the collator
    revision: str = "unknown revision"  # the checkout's revision verdict, for the self-check's message
    layout: str | None = None  # the checkout's code layout (locate.detect_layout): fine-tuning metadata rules
    script_path: str | None = None  # the training script that runs (its use of loss weights is checked)
    weighted: bool = False  # some subset has a loss_weight other than 1
    hooks: list[Any] = field(default_factory=list)  # hookpoints.Hook of every installed hook
    config_read: bool = False  # the prepare_dataset_args hook ran (the core read the config)
    multiplier_requested: bool = False  # sd-scripts' own config reading met a multiplier (schema, folder)
    verified: bool = False  # the self-check ran on the built datasets and found every hook in place
    plans: dict[int, Any] = field(default_factory=dict)  # dataset index -> the start-up table's DatasetPlan, once computed
    # (DreamBooth, fine-tuning, conditioning) planned dataset classes, handed over when the hooks are installed:
    # the self-check tests what sd-scripts built against them
    planned_dataset_classes: tuple[Any, ...] = ()

    @property
    def record(self) -> bool:
        return self.schedule_path is not None

    def dataset_spec(self, index: int) -> DatasetSpec | None:
        if self.config is None or index >= len(self.config.datasets):
            return None
        return self.config.datasets[index]


def start(
    schedule_path: str | None, revision: str = "unknown revision", script_path: str | None = None, layout: str | None = None
) -> Session:
    """A new run's session (the caller hands it to ``inject.install``)."""
    return Session(
        schedule_path=os.path.abspath(schedule_path) if schedule_path else None, revision=revision, script_path=script_path,
        layout=layout,
    )


def options_from_sd_args(args: Any, session: Session) -> CommandLineOptions:
    """sd-scripts' parsed ``args`` as the core's CommandLineOptions (after prepare_dataset_args)."""
    values = {name: getattr(args, name, None) for name in _OPTION_NAMES}
    for name in _PATH_OPTIONS:  # some revisions parse these with type=Path
        if values.get(name) is not None:
            values[name] = os.fspath(values[name])
    values["sd_scripts_layout"] = session.layout
    return CommandLineOptions(**values)


def is_main_rank() -> bool:
    """Rank 0 of an ``accelerate launch`` / torchrun job, or a single process."""
    return os.environ.get("RANK", "0") in ("", "0")
