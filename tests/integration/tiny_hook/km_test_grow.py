"""Test-only: a folder gains an image between kohya-multiplier's start-up table and sd-scripts'
own listing of the folder (a sync tool or a second terminal at work), so training's images differ
from the ones the start-up table planned.

Imported by this folder's sitecustomize.py when KOHYA_MULTIPLIER_TEST_ADD_IMAGE is set to
"SOURCE<os.pathsep>DESTINATION": right after the start-up table is printed, SOURCE is copied to
DESTINATION. The integration tests use it to prove training then follows sd-scripts' images, says
so once, and plans them exactly as a dry run of the grown folder does.
"""

import os
import shutil
import sys

ADD = os.environ.get("KOHYA_MULTIPLIER_TEST_ADD_IMAGE")
_INJECT = "kohya_multiplier.sdscripts.inject"


def _add_after_the_table(module):
    print_table = module._print_balance

    def _print_balance(*args, **kwargs):
        print_table(*args, **kwargs)
        source, destination = ADD.split(os.pathsep)
        if not os.path.exists(destination):  # once per run, not again in a spawned worker
            shutil.copyfile(source, destination)

    module._print_balance = _print_balance


if ADD:
    from sitecustomize import AfterImportFinder

    sys.meta_path.insert(0, AfterImportFinder({_INJECT: [_add_after_the_table]}))
