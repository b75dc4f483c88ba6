"""Test-only: move one hooked name out of kohya-multiplier's reach, as a refactor of sd-scripts would.

Imported by this folder's sitecustomize.py when KOHYA_MULTIPLIER_TEST_MOVE=NAME is set. Right after
kohya-multiplier installed its hooks, the namespaces a hook went into get sd-scripts' own object
back, so the script finds the original where it looks the name up: exactly what a hook that missed
looks like. NAME "recorder" detaches the --multiplier_schedule recorder instead. NAME
"musubi:KEY" does the same to musubi-tuner's hook KEY (e.g. "musubi:NetworkTrainer._build_dataset").
The integration tests use it to prove the self-check stops such a run before the model loads.
"""

import os
import sys

MOVE = os.environ.get("KOHYA_MULTIPLIER_TEST_MOVE")
_INJECT = "kohya_multiplier.sdscripts.inject"
_MUSUBI_HOOKS = "kohya_multiplier.musubi.hooks"


def _move_after_install(module):
    real_install = module.install

    def install(session):
        real_install(session)
        if MOVE == "recorder":
            from accelerate import data_loader

            shard = data_loader.DataLoaderShard
            shard.__iter__ = shard.__iter__.__wrapped__
            return
        moved = False
        for hook in session.hooks:
            if hook.name == MOVE:
                for _, namespace in hook.namespaces:
                    namespace[hook.name] = hook.original
                moved = True
        if not moved:
            raise RuntimeError(f"KOHYA_MULTIPLIER_TEST_MOVE={MOVE}: kohya-multiplier installed no such hook")

    module.install = install


def _move_after_musubi_install(module):
    real_install = module.install
    key = MOVE.partition(":")[2]

    def install(run):
        real_install(run)
        if key not in run.hooks:
            raise RuntimeError(f"KOHYA_MULTIPLIER_TEST_MOVE={MOVE}: kohya-multiplier installed no such hook")
        owner, original = run.hooks[key]
        setattr(owner, key.rpartition(".")[2], original)

    module.install = install


if MOVE:
    from sitecustomize import AfterImportFinder

    if MOVE.startswith("musubi:"):
        sys.meta_path.insert(0, AfterImportFinder({_MUSUBI_HOOKS: [_move_after_musubi_install]}))
    else:
        sys.meta_path.insert(0, AfterImportFinder({_INJECT: [_move_after_install]}))
