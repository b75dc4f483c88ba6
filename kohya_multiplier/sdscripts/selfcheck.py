"""The self-check: every hook took effect, or the run stops before any model loads.

sd-scripts is code we do not control: a refactor can move a name so that a hook is silently
bypassed, and a run would then train stock sd-scripts while the user believes in the plan. So once
sd-scripts has built its datasets (the hook on ``generate_dataset_group_by_blueprint``) and before
it loads a model, this module verifies what the hooks were for:

- the core read the dataset config (or the config asks for no multiplier at all);
- the schema accepts ``multiplier``;
- every dataset with multipliers is our planned dataset, has its plan, and its ``len()`` is the
  plan's epoch length; all its regularization images are registered; every dataset with loss
  weights is ours and applies them;
- every place a script can look up ``collator_class`` (or any other hooked name) holds ours;
- the schedule recorder is attached when ``--multiplier_schedule`` asked for it.

Any miss stops the run with one line naming what is missing, the detected sd-scripts revision and
its layout, and exit status 2. The collator re-checks that the check ran at all (in case the
dataset-building hook itself was bypassed).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from kohya_multiplier.errors import EXIT_USER_ERROR
from kohya_multiplier.dataset.multipliers import MULTIPLY_TXT
from kohya_multiplier.sdscripts import session as _session


class HookMissed(SystemExit):
    """Raised (as a SystemExit with status 2) when a hook did not take effect."""


def stop(session: _session.Session, what: str) -> None:
    message = (
        f"kohya-multiplier: error: a hook into sd-scripts did not take effect: {what} "
        f"(sd-scripts {session.revision}); stopped before training, because multipliers would be ignored"
    )
    print(message, file=sys.stderr, flush=True)
    raise HookMissed(EXIT_USER_ERROR)


def checked_build(build, session: _session.Session):
    """``generate_dataset_group_by_blueprint`` that verifies every hook on what it built."""

    def generate_dataset_group_by_blueprint(dataset_group_blueprint, *args, **kwargs):
        datasets = getattr(dataset_group_blueprint, "datasets", None)
        session.training_datasets_expected = session.training_datasets_built + len(datasets) if datasets is not None else None
        result = build(dataset_group_blueprint, *args, **kwargs)
        train_group = result[0] if isinstance(result, tuple) else result
        verify(session, train_group, dataset_group_blueprint)
        return result

    generate_dataset_group_by_blueprint.__wrapped__ = build
    return generate_dataset_group_by_blueprint


def require_verified(session: _session.Session) -> None:
    if session.verified or not (session.planned or session.weighted or session.multiplier_requested):
        return
    stop(session, "the datasets were built without the check of generate_dataset_group_by_blueprint (its hook was bypassed)")


def problems(session: _session.Session, train_group: Any, blueprint: Any = None) -> list[str]:
    found = []
    from library import config_util

    if "multiplier" not in config_util.ConfigSanitizer.SUBSET_ASCENDABLE_SCHEMA:
        found.append("ConfigSanitizer.SUBSET_ASCENDABLE_SCHEMA has no `multiplier` key")
    if not session.config_read and (session.multiplier_requested or _blueprint_has_multiply_txt(blueprint)):
        found.append("kohya-multiplier never read the dataset config (prepare_dataset_args was not ours when the script called it)")
    for hook in session.hooks:
        missing = hook.missing_in()
        if missing:
            found.append(f"{hook.name} ({hook.purpose}) is not ours in {', '.join(missing[:3])}")
    if session.planned or session.weighted:
        found += _dataset_problems(session, train_group)
    if session.record:
        from kohya_multiplier.runtime import recorder

        if not recorder.dataloader_hook_installed():
            found.append("the --multiplier_schedule recorder is not attached to accelerate's DataLoader")
    return found


def verify(session: _session.Session, train_group: Any, blueprint: Any = None) -> None:
    found = problems(session, train_group, blueprint)
    if found:
        stop(session, "; ".join(found))
    session.verified = True


def _dataset_problems(session: _session.Session, train_group: Any) -> list[str]:
    dreambooth_class, fine_tuning_class, conditioning_class = session.planned_dataset_classes
    found = []
    datasets = list(getattr(train_group, "datasets", []))
    for index, spec in enumerate(session.config.datasets):
        if not (spec.uses_multiplier or spec.uses_loss_weight):
            continue
        if index >= len(datasets):
            found.append(f"dataset {index} has multipliers or loss weights but sd-scripts built only {len(datasets)} datasets")
            continue
        dataset = datasets[index]
        ours = conditioning_class if spec.conditioning else fine_tuning_class if spec.fine_tuning else dreambooth_class
        if ours is None or not isinstance(dataset, ours):
            kind = type(dataset)
            found.append(f"dataset {index} is sd-scripts' {kind.__module__}.{kind.__qualname__}, not the planned dataset")
            continue
        delegate = getattr(dataset, "dreambooth_dataset_delegate", None) if spec.conditioning else None
        if spec.conditioning and not isinstance(delegate, dreambooth_class):
            kind = type(delegate)
            found.append(f"dataset {index}'s images are served by sd-scripts' {kind.__module__}.{kind.__qualname__}, "
                         "not the planned dataset (ControlNetDataset did not build its delegate from DreamBoothDataset)")
            continue
        if spec.uses_loss_weight and dataset.km_loss_weights() is None:
            found.append(f"dataset {index} has loss weights but does not apply them")
        if not spec.uses_multiplier:
            continue
        plan = dataset.km_plan_state()
        if plan is None:
            found.append(f"dataset {index} has no plan (its make_buckets did not run ours)")
            continue
        if len(dataset) != plan.planner.epoch_length:
            found.append(f"dataset {index} has length {len(dataset)}, not the plan's {plan.planner.epoch_length} batches")
        expected_reg = sum(len(s.images) for s in spec.subsets if s.is_reg and not s.excluded)
        registered_reg = sum(1 for info in dataset.image_data.values() if info.is_reg)
        if registered_reg != expected_reg:
            found.append(f"dataset {index} registered {registered_reg} of its {expected_reg} regularization images")
    if len(train_group) != sum(len(d) for d in datasets):
        found.append("the dataset group's length is not the sum of its datasets' (ConcatDataset offsets are stale)")
    return found


def _blueprint_has_multiply_txt(blueprint: Any) -> bool:
    """Whether a subset folder sd-scripts is about to train holds a multiply.txt."""
    for dataset in getattr(blueprint, "datasets", None) or []:
        for subset in getattr(dataset, "subsets", None) or []:
            image_dir = getattr(getattr(subset, "params", None), "image_dir", None)
            if image_dir and os.path.isfile(os.path.join(image_dir, MULTIPLY_TXT)):
                return True
    return False
