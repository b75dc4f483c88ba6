"""Rule: no output ever overwrites an input (issue 11, point 1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kohya_multiplier.cli import main
from kohya_multiplier.errors import UserError
from kohya_multiplier.example import write_png
from kohya_multiplier.writer import check_output_path, check_outputs, input_paths


def make_dataset(root: Path, folders=("alice", "bob"), images=3) -> Path:
    for folder in folders:
        d = root / "train" / folder
        d.mkdir(parents=True)
        for i in range(images):
            write_png(str(d / f"{i}.png"), 64, 64, (i, 2, 3))
            (d / f"{i}.txt").write_text("caption\n")
    subsets = "".join(f'[[datasets.subsets]]\nimage_dir = "{(root / "train" / f).as_posix()}"\nmultiplier = 0.5\n' for f in folders)
    config = root / "ds.toml"
    config.write_text(f"[general]\nresolution = 512\n[[datasets]]\n{subsets}")
    return config


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("option", ["--schedule", "--plot", "--html"])
@pytest.mark.parametrize("target", ["config", "image", "caption", "multiply", "cache", "directory", "link"])
def test_plan_refuses_every_input_as_output(tmp_path, capsys, option, target):
    config = make_dataset(tmp_path)
    alice = tmp_path / "train" / "alice"
    (alice / "multiply.txt").write_text("0.5\n") if target == "multiply" else None
    (alice / "0_sd.npz").write_bytes(b"latents") if target == "cache" else None
    if target == "link":
        os.symlink(config, tmp_path / "link.jsonl")
    path = {
        "config": config, "image": alice / "1.png", "caption": alice / "1.txt", "multiply": alice / "multiply.txt",
        "cache": alice / "0_sd.npz", "directory": tmp_path / "train", "link": tmp_path / "link.jsonl",
    }[target]
    before = snapshot(tmp_path)
    assert main(["plan", str(config), "--epochs", "2", option, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kohya-multiplier: error: ") and f"{option}: " in err
    expected = {"config": "is the dataset config", "link": "is the dataset config", "directory": "is a directory"}.get(
        target, "is inside the image folder")
    if option != "--plot" or path.suffix == ".png":  # --plot may refuse the extension first (the report's rule)
        assert expected in err
    assert snapshot(tmp_path) == before  # nothing written, nothing replaced


def test_plan_refuses_before_reading_images(tmp_path, capsys, monkeypatch):
    config = make_dataset(tmp_path)
    import kohya_multiplier.commands.plan as plan

    def no_work(*args, **kwargs):
        raise AssertionError("the config was read before the output path was checked")

    monkeypatch.setattr(plan, "load_training_config", no_work)
    assert main(["plan", str(config), "--schedule", str(config)]) == 2
    assert "--schedule: is the dataset config" in capsys.readouterr().err


def test_plan_writes_a_schedule_outside_the_inputs(tmp_path):
    config = make_dataset(tmp_path)
    out = tmp_path / "out" / "plan.jsonl"
    out.parent.mkdir()
    assert main(["plan", str(config), "--epochs", "2", "--schedule", str(out)]) == 0
    assert out.read_text().count("\n") > 0


def test_two_options_cannot_share_a_file(tmp_path):
    with pytest.raises(UserError, match="is also given to --schedule"):
        check_outputs({"--schedule": str(tmp_path / "a"), "--html": str(tmp_path / "a")}, input_paths(None))


def test_folder_mode_refuses_files_in_the_dreambooth_tree(tmp_path):
    inputs = input_paths(None, train_data_dir=str(tmp_path / "train"))
    with pytest.raises(UserError, match="inside the image folder"):
        check_output_path(str(tmp_path / "train" / "10_alice" / "x.txt"), key="--schedule", inputs=inputs)
    check_output_path(str(tmp_path / "elsewhere.jsonl"), key="--schedule", inputs=inputs)
    check_output_path("-", key="--schedule", inputs=inputs)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "..", ".", "c"]), min_size=1, max_size=5))
def test_any_spelling_inside_an_image_folder_is_refused(tmp_path_factory, parts):
    root = tmp_path_factory.mktemp("p")
    folder = root / "imgs"
    folder.mkdir(exist_ok=True)
    candidate = os.path.join(str(folder), *parts, "out.jsonl")
    inside = os.path.normpath(candidate).startswith(str(folder) + os.sep)
    inputs = input_paths(None, image_dirs=[str(folder)])
    if inside:
        with pytest.raises(UserError, match="inside the image folder"):
            check_output_path(candidate, key="--schedule", inputs=inputs)
    else:  # outside: refused only when its folder does not exist, never as an input
        folder_exists = os.path.isdir(os.path.dirname(os.path.realpath(candidate)))
        try:
            check_output_path(candidate, key="--schedule", inputs=inputs)
            assert folder_exists
        except UserError as error:
            assert not folder_exists and "does not exist" in str(error)


def test_example_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    target = tmp_path / "mine"
    (target / "alice").mkdir(parents=True)
    (target / "alice" / "photo.png").write_bytes(b"user's photo")
    (target / "dataset.toml").write_text("# the user's own config\n")
    before = snapshot(tmp_path)
    assert main(["example", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not made by `kohya-multiplier example`" in err
    assert snapshot(tmp_path) == before


def test_example_refuses_a_file_and_reruns_in_its_own_folder(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["example", str(tmp_path / "f")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    target = tmp_path / "ex"
    assert main(["example", str(target), "--epochs", "1"]) == 0
    first = snapshot(target)
    assert main(["example", "--dir", str(target), "--epochs", "1"]) == 0  # its own folder: rewritten the same
    assert snapshot(target) == first
