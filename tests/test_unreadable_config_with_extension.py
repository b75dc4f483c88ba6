"""A dataset config the core cannot read trains as stock sd-scripts only when it asks for nothing
of kohya-multiplier: a multiplier or a loss weight anywhere stops the run instead (training would
silently drop it)."""

from __future__ import annotations

import argparse

import pytest

from imagegen import make_folder
from kohya_multiplier import errors
from kohya_multiplier.errors import UserError
from kohya_multiplier.sdscripts import inject
from kohya_multiplier.sdscripts import session as sessions

pytestmark = pytest.mark.usefixtures("workdir")

# A subset whose folder is missing: sd-scripts skips it with a warning, the core refuses it
UNREADABLE = ('[general]\nresolution = 512\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "img"\n'
              '[[datasets.subsets]]\nimage_dir = "missing"\n')


def _read(config_text: str | None = None, **folder_files) -> sessions.Session:
    make_folder("img", [(512, 512)] * 2)
    make_folder("cond", [(512, 512)] * 2)
    for name, text in folder_files.items():
        with open(f"img/{name.replace('__', '.')}", "w") as handle:
            handle.write(text)
    with open("dataset.toml", "w") as handle:
        handle.write(config_text or UNREADABLE)
    session = sessions.start(None)
    args = argparse.Namespace(dataset_config="dataset.toml", seed=None)
    inject.read_dataset_config(args, session)
    return session


@pytest.mark.parametrize("key", ["multiplier = 0.5", "loss_weight = 0.5"])
def test_a_key_of_ours_in_an_unreadable_config_stops_the_run(key):
    with pytest.raises(UserError, match="directory not found"):
        _read(UNREADABLE + key + "\n")


def test_a_loss_scale_txt_in_an_unreadable_config_stops_the_run():
    with pytest.raises(UserError, match="directory not found"):
        _read(loss_scale__txt="0.5")


def test_an_unreadable_config_asking_for_nothing_trains_stock_without_being_read(monkeypatch):
    before = len(errors.warnings_given())
    from kohya_multiplier.dataset import config as config_module

    monkeypatch.setattr(config_module, "load_training_config",
                        lambda *a, **k: pytest.fail("a config that asks for nothing of ours must not be read"))
    session = _read()
    assert session.config is None and not session.planned and not session.weighted
    assert errors.warnings_given()[before:] == []  # nothing to say: sd-scripts reads it as it always does
