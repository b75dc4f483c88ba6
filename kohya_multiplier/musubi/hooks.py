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
4. ``NetworkTrainer.train``: a batch's loss weight multiplies its loss (``process_batch``), and
   the self-check runs once the datasets are built, before any model loads
   (``_prepare_accelerator_and_dtypes``): when the config asks for planning, every hook above must
   have run, or the run stops in one line instead of training with multipliers ignored;
5. accelerate's DataLoader: each trained batch's record goes to ``--multiplier_schedule``.

And in every script, training or caching: ``config_utils.load_user_config`` drops the keys only
kohya-multiplier reads, which musubi's schema rejects. Installing also checks that musubi's
training loop still sets the shared epoch its datasets read.
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
    asks: bool = False  # the dataset config asks for planning (read when training starts)
    hooks: dict = field(default_factory=dict)  # hook name -> (owner, musubi's original), as installed
    seen: set = field(default_factory=set)  # the hooks that ran

    @property
    def planned(self) -> bool:
        """The dataset config was read and planned (by the _build_dataset hook)."""
        return self.config is not None


# The hooks a planned run passes through before its models load (checked by _verify).
REQUIRED_HOOKS = {
    "NetworkTrainer._init_session": "the user's --seed",
    "NetworkTrainer._build_dataset": "the planned reading of the dataset config",
    "generate_dataset_group_by_blueprint": "the check of musubi's dataset group",
}


def install(run: MusubiRun) -> None:
    from musubi_tuner.dataset import config_utils
    from musubi_tuner.dataset.image_video_dataset import ImageDataset, VideoDataset
    from musubi_tuner.training.trainer_base import NetworkTrainer

    _check_epoch_line(NetworkTrainer)
    _wrap(run, config_utils, "load_user_config", _without_our_keys, method=False)
    _wrap(run, NetworkTrainer, "_init_session", functools.partial(_init_session, run))
    _wrap(run, NetworkTrainer, "_build_dataset", functools.partial(_build_dataset, run))
    _wrap(run, config_utils, "generate_dataset_group_by_blueprint", functools.partial(_generate, run), method=False)
    for cls in (ImageDataset, VideoDataset):
        _wrap(run, cls, "prepare_for_training", functools.partial(_prepare, run))
    _wrap(run, NetworkTrainer, "train", functools.partial(_train, run))
    if run.schedule_path is not None:
        from kohya_multiplier.runtime import recorder

        recorder.start(run.schedule_path, truncate=os.environ.get("RANK", "0") in ("", "0"))
        recorder.install_dataloader_hook()


def _wrap(run: MusubiRun, owner, name: str, replacement, *, method: bool = True) -> None:
    original = getattr(owner, name, None)
    if original is None:
        raise UserError(f"musubi-tuner has no {getattr(owner, '__name__', owner)}.{name} any more: this release is not one "
                        "kohya-multiplier can hook; use musubi-tuner v0.3.4")
    key = f"{owner.__name__}.{name}" if method else name
    if method:
        @functools.wraps(original)
        def hooked(self, *args, **kwargs):
            run.seen.add(key)
            return replacement(original, self, *args, **kwargs)
    else:
        @functools.wraps(original)
        def hooked(*args, **kwargs):
            run.seen.add(key)
            return replacement(original, *args, **kwargs)
    hooked.__km_hook__ = True
    run.hooks[key] = (owner, original)
    setattr(owner, name, hooked)


def _verify(run: MusubiRun) -> None:
    """The self-check, after musubi built its datasets and before it loads a model."""
    if not run.asks:
        return
    for key, what in REQUIRED_HOOKS.items():
        if key not in run.seen:
            raise _missed(f"{key} ({what}) was never called")
    if not run.planned or run.pending:
        raise _missed("prepare_for_training (the planned datasets) did not take every dataset over")


def _missed(what: str) -> UserError:
    return UserError(f"a hook into musubi-tuner did not take effect: {what}; stopped before training, because "
                     "multipliers would be ignored")


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
            raise _missed("prepare_for_training (the planned datasets) did not take every dataset over")
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

    folder = os.path.abspath(self.cache_directory)
    matching = [plan for plan in run.pending if plan.dataset.subsets[0].image_folders[0] == folder]
    if not matching:
        raise UserError(f"musubi-tuner prepared a dataset of {self.cache_directory}, which the plan does not hold (or "
                        "holds once)", key="cache_directory")
    plan = matching[0]
    run.pending.remove(plan)
    self.__class__ = PLANNED_CLASS[type(self)]
    self.km_take_over(PlannedState(plan, run.epoch_offset, record=run.schedule_path is not None))
    return result


def _train(run: MusubiRun, original, self, args):
    from kohya_multiplier.dataset.musubi_config import asks_for_planning

    path = getattr(args, "dataset_config", None)
    run.asks = path is not None and asks_for_planning(str(path))
    self.process_batch = _weighted(self.process_batch)  # passes a batch without a loss weight through
    next_step = getattr(self, "_prepare_accelerator_and_dtypes", None)  # what train() calls after the datasets
    if next_step is None:
        raise UserError("musubi-tuner has no NetworkTrainer._prepare_accelerator_and_dtypes any more: this release is "
                        "not one kohya-multiplier can hook; use musubi-tuner v0.3.4")

    @functools.wraps(next_step)
    def verified_then_next(*args, **kwargs):
        _verify(run)
        return next_step(*args, **kwargs)

    self._prepare_accelerator_and_dtypes = verified_then_next
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
