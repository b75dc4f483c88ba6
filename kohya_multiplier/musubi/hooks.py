"""The hooks into musubi-tuner's training, each checked when it is installed or when it runs.

State reaches them as the ``MusubiRun`` the launcher makes and hands to :func:`install` (bound into
the hook closures; no module keeps it). What they do, in the order training meets them:

1. ``NetworkTrainer._init_session``: keeps the user's ``--seed`` (musubi draws one when none is
   given, different on every rank; the planner's seed must be the same everywhere: 0 then);
2. ``NetworkTrainer._build_dataset``: reads the dataset config with the core's musubi reader, for
   the architecture the script trains, and plans every dataset when the config asks for a
   multiplier or loss weight anywhere; otherwise nothing below changes musubi at all;
3. ``generate_dataset_group_by_blueprint`` and each dataset's ``prepare_for_training``: after
   musubi reads the caches, the planned class takes the dataset over (``dataset.py``); the group
   it returns is checked (every dataset planned, the planned epoch length);
4. ``NetworkTrainer.train``: a batch's loss weight multiplies its loss (``process_batch``);
5. accelerate's DataLoader: each trained batch's record goes to ``--multiplier_schedule``.

And in every script, training or caching: ``config_utils.load_user_config`` drops the keys only
kohya-multiplier reads, which musubi's schema rejects. Installing also checks that musubi's training loop still sets the shared epoch its datasets read.
"""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass, field

from kohya_multiplier.errors import UserError, warn_once

EPOCH_LINE = "current_epoch.value = epoch + 1"  # musubi's loop tells the datasets the epoch so


@dataclass
class MusubiRun:
    schedule_path: str | None = None  # --multiplier_schedule
    epoch_offset: int = 0  # --multiplier_epoch_offset
    user_seed: int | None = None
    config: object = None  # the core's reading (TrainingConfig) when planned
    pending: list = field(default_factory=list)  # plans of the datasets musubi is preparing, in order
    planned: bool = False


def install(run: MusubiRun) -> None:
    from musubi_tuner.dataset import config_utils
    from musubi_tuner.dataset.image_video_dataset import ImageDataset, VideoDataset
    from musubi_tuner.training.trainer_base import NetworkTrainer

    _check_epoch_line(NetworkTrainer)
    _wrap(config_utils, "load_user_config", _without_our_keys, method=False)
    _wrap(NetworkTrainer, "_init_session", functools.partial(_init_session, run))
    _wrap(NetworkTrainer, "_build_dataset", functools.partial(_build_dataset, run))
    _wrap(config_utils, "generate_dataset_group_by_blueprint", functools.partial(_generate, run), method=False)
    for cls in (ImageDataset, VideoDataset):
        _wrap(cls, "prepare_for_training", functools.partial(_prepare, run))
    _wrap(NetworkTrainer, "train", functools.partial(_train, run))
    if run.schedule_path is not None:
        from kohya_multiplier.runtime import recorder

        recorder.start(run.schedule_path, truncate=os.environ.get("RANK", "0") in ("", "0"))
        recorder.install_dataloader_hook()


def _wrap(owner, name: str, replacement, *, method: bool = True) -> None:
    original = getattr(owner, name, None)
    if original is None:
        raise UserError(f"musubi-tuner has no {getattr(owner, '__name__', owner)}.{name} any more: this release is not one "
                        "kohya-multiplier can hook; use musubi-tuner v0.3.4")
    if method:
        @functools.wraps(original)
        def hooked(self, *args, **kwargs):
            return replacement(original, self, *args, **kwargs)
    else:
        @functools.wraps(original)
        def hooked(*args, **kwargs):
            return replacement(original, *args, **kwargs)
    hooked.__km_hook__ = True
    setattr(owner, name, hooked)


def _check_epoch_line(trainer_class) -> None:
    try:
        source = inspect.getsource(trainer_class._run_training_loop)
    except (AttributeError, OSError, TypeError):
        source = ""
    if EPOCH_LINE not in source:
        raise UserError("musubi-tuner's training loop no longer sets the epoch its datasets read "
                        f"({EPOCH_LINE!r}): kohya-multiplier cannot follow its epochs; use musubi-tuner v0.3.4")


def _without_our_keys(original, file, *args, **kwargs):
    """musubi's own reading of the dataset config, without the keys only kohya-multiplier reads
    (musubi's schema rejects them): its caching scripts and its training see the config they know."""
    from kohya_multiplier.dataset.musubi_config import OURS

    config = original(file, *args, **kwargs)
    tables = [config.get("general")] + list(config.get("datasets") or [])
    for table in tables:
        if isinstance(table, dict):
            for key in OURS:
                table.pop(key, None)
    return config


def _init_session(run: MusubiRun, original, self, args):
    run.user_seed = getattr(args, "seed", None)
    return original(self, args)


def _build_dataset(run: MusubiRun, original, self, args):
    from kohya_multiplier.dataset.musubi_config import asks_for_planning, load_musubi_config
    from kohya_multiplier.planner.plan_input import planner_seed
    from kohya_multiplier.runtime.balance import print_balance

    path = getattr(args, "dataset_config", None)
    if path is not None and asks_for_planning(str(path)):
        run.config = load_musubi_config(str(path), architecture=self.architecture)
        seed = planner_seed(run.user_seed)
        plans = print_balance(run.config, seed, getattr(args, "max_train_epochs", None), seed_given=run.user_seed is not None)
        run.pending = [plans[dataset.index] for dataset in run.config.datasets]
        run.planned = True
    elif run.schedule_path is not None:
        warn_once("--multiplier_schedule: the dataset config has no multiplier or loss_weight, so musubi-tuner trains "
                  "it unchanged and nothing is recorded")
    return original(self, args)


def _generate(run: MusubiRun, original, dataset_group_blueprint, training=False, *args, **kwargs):
    group = original(dataset_group_blueprint, training, *args, **kwargs)
    if training and run.planned:
        from kohya_multiplier.musubi.dataset import PlannedDatasetMixin

        planned = [d for d in group.datasets if isinstance(d, PlannedDatasetMixin)]
        if len(planned) != len(group.datasets) or run.pending:
            raise UserError("musubi-tuner built its datasets without the planned ones (a hook missed): stopped before "
                            "training")
        total = sum(d.km_state.plan.epoch_length for d in planned)
        if len(group) != total:
            raise UserError(f"musubi-tuner's dataset group has {len(group)} batches, the plan {total}: stopped "
                            "before training")
    return group


def _prepare(run: MusubiRun, original, self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    if not run.planned:
        return result
    from kohya_multiplier.musubi.dataset import PLANNED_CLASS, PlannedState

    if not run.pending:
        raise UserError("musubi-tuner prepared more datasets than the dataset config holds")
    plan = run.pending.pop(0)
    expected = plan.dataset.subsets[0].image_folders[0]
    if os.path.abspath(self.cache_directory) != expected:
        raise UserError(f"musubi-tuner prepared {self.cache_directory} where the plan expected {expected}",
                        where=plan.dataset.table, key="cache_directory")
    self.__class__ = PLANNED_CLASS[type(self)]
    self.km_take_over(PlannedState(plan, run.epoch_offset, record=run.schedule_path is not None))
    return result


def _train(run: MusubiRun, original, self, args):
    self.process_batch = _weighted(self.process_batch)  # passes a batch without a loss weight through
    return original(self, args)


def _weighted(process_batch):
    """``process_batch`` with each batch's loss weight (set by a planned dataset) applied."""
    from kohya_multiplier.musubi.dataset import LOSS_WEIGHT_KEY

    @functools.wraps(process_batch)
    def weighted(args, accelerator, transformer, network, batch, *rest, **kwargs):
        weight = batch.pop(LOSS_WEIGHT_KEY, None) if isinstance(batch, dict) else None
        loss, metrics = process_batch(args, accelerator, transformer, network, batch, *rest, **kwargs)
        return (loss * weight if weight is not None else loss), metrics

    return weighted
