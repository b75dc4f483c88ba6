"""`kohya-multiplier schedule-diff` and the progress bar."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from kohya_multiplier import progress
from kohya_multiplier.report import schedule_diff as sd
from kohya_multiplier.cli import main
from kohya_multiplier.report.schedule import parse_record


def batches(epochs=3, per_epoch=4, size=2, root="/data", seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for epoch in range(1, epochs + 1):
        for b in range(per_epoch):
            folder = ("alice", "bob")[b % 2]
            images = [f"{root}/train/{folder}/{int(i):03d}.png" for i in rng.choice(50, size, replace=False)]
            out.append({"epoch": epoch, "dataset": 0, "batch": b, "resolution": [512, 512], "images": images})
    return out


def write(path: Path, records, shuffle_lines=False) -> str:
    lines = [json.dumps(r) for r in records]
    if shuffle_lines:
        lines = lines[::-1]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("KOHYA_MULTIPLIER_PROGRESS", "0")


def test_identical_schedules_exit_0_even_in_another_line_order(tmp_path, capsys):
    a = write(tmp_path / "a.jsonl", batches())
    b = write(tmp_path / "b.jsonl", batches(), shuffle_lines=True)
    assert main(["schedule-diff", a, b]) == 0
    out = capsys.readouterr().out
    assert "schedules are identical" in out and "identical epochs: 1-3" in out


def test_different_images_exit_1_with_per_epoch_and_per_subset_counts(tmp_path, capsys):
    records = batches()
    changed = [dict(r) for r in records]
    changed[5] = dict(changed[5], images=[p.replace("/bob/", "/alice/") for p in changed[5]["images"]])
    a = write(tmp_path / "a.jsonl", records)
    b = write(tmp_path / "b.jsonl", changed)
    assert main(["schedule-diff", a, b, "--by-epoch"]) == 1
    out = capsys.readouterr().out
    assert "different images" in out
    assert "identical epochs: 1, 3" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["alice"], ["bob"])}
    assert rows["alice"][1:4] == ["12", "14", "+2"] and rows["bob"][1:4] == ["12", "10", "-2"]
    assert "alice: 2: 4/6" in out and "bob: 2: 4/2" in out
    assert "schedules differ in 1 of 3 epochs (2)" in out


def test_verdicts_order_batching_and_missing_epochs():
    base = [parse_record(json.dumps(r), file="x", line=1) for r in batches(epochs=2)]
    swapped = list(base)
    swapped[0], swapped[2] = (sd.Batch(1, 0, 0, base[2].resolution, base[2].images),
                              sd.Batch(1, 0, 2, base[0].resolution, base[0].images))
    diff = sd.compare(base, swapped)
    assert [e.verdict for e in diff.epochs] == ["order", "identical"]
    rebatched = list(base)
    first, second = base[0].images, base[2].images
    rebatched[0] = sd.Batch(1, 0, 0, base[0].resolution, (first[0], second[0]))
    rebatched[2] = sd.Batch(1, 0, 2, base[2].resolution, (first[1], second[1]))
    assert sd.compare(base, rebatched).epochs[0].verdict == "batching"
    shorter = [x for x in base if x.epoch == 1]
    diff = sd.compare(base, shorter)
    assert [e.verdict for e in diff.epochs] == ["identical", "only_a"] and not diff.identical
    assert sd.compare(base, shorter, common_epochs_only=True).identical


def test_common_epochs_and_relative_paths(tmp_path, capsys):
    a = write(tmp_path / "a.jsonl", batches(epochs=3, root="/home/me/data"))
    b = write(tmp_path / "b.jsonl", batches(epochs=2, root="/mnt/cloud/data"))
    assert main(["schedule-diff", a, b]) == 1
    capsys.readouterr()
    assert main(["schedule-diff", a, b, "--relative"]) == 1  # epoch 3 only in A
    assert "only in A" in capsys.readouterr().out
    assert main(["schedule-diff", a, b, "--relative", "--common-epochs", "-q"]) == 0
    assert capsys.readouterr().out == ""


def test_subsets_named_by_parent_folder_disambiguated():
    namer = sd.parent_folder_namer(["/x/a/alice/1.png", "/y/b/alice/2.png", "/y/b/bob/3.png"])
    assert namer("/x/a/alice/1.png") == "a/alice" and namer("/y/b/alice/9.png") == "b/alice"
    assert namer("/y/b/bob/3.png") == "bob"


def test_subsets_from_a_config(tmp_path, monkeypatch, capsys):
    import struct
    import zlib

    def png(w, h):
        def chunk(k, d):
            return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xFFFFFFFF)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"\x00\x00" * h)) + chunk(b"IEND", b""))

    for folder in ("one/imgs", "two/imgs"):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(3):
            (tmp_path / folder / f"{i}.png").write_bytes(png(8, 8))
    (tmp_path / "cfg.toml").write_text(
        '[general]\nresolution = 64\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "one/imgs"\n'
        '[[datasets.subsets]]\nimage_dir = "two/imgs"\n')
    monkeypatch.chdir(tmp_path)
    record = {"epoch": 1, "dataset": 0, "batch": 0, "resolution": [64, 64],
              "images": [str(tmp_path / "one/imgs/0.png"), str(tmp_path / "elsewhere/x.png")]}
    other = dict(record, images=[str(tmp_path / "two/imgs/0.png"), str(tmp_path / "elsewhere/x.png")])
    a = write(tmp_path / "a.jsonl", [record])
    b = write(tmp_path / "b.jsonl", [other])
    assert main(["schedule-diff", a, b, "--config", "cfg.toml"]) == 1
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if line.startswith(("one/", "two/", "(elsewhere)"))]
    assert names == ["(elsewhere)", "one/imgs", "two/imgs"]


@pytest.mark.parametrize("content,message", [
    ("{not json\n", "a.jsonl: line 1: not valid JSON"),
    ("[1, 2]\n", "a.jsonl: line 1: expected one JSON object per line"),
    ('{"epoch": 1}\n', "a.jsonl: line 1: dataset: missing"),
    ('{"epoch": 0, "dataset": 0, "batch": 0, "resolution": [1, 1], "images": ["a"]}\n', "epoch: must be >= 1"),
    ('{"epoch": true, "dataset": 0, "batch": 0, "resolution": [1, 1], "images": ["a"]}\n', "epoch: must be an integer"),
    ('{"epoch": 1, "dataset": 0, "batch": 0, "resolution": [1], "images": ["a"]}\n', "resolution: must be [width, height]"),
    ('{"epoch": 1, "dataset": 0, "batch": 0, "resolution": [1, 1], "images": []}\n', "images: must be a non-empty list"),
    ('{"epoch": 1, "dataset": 0, "batch": 0, "resolution": [1, 1], "images": ["a"]}\n'
     '{"epoch": 1, "dataset": 0, "batch": 0, "resolution": [1, 1], "images": ["b"]}\n',
     "a.jsonl: line 2: epoch 1, dataset 0, batch 0 appears twice with different images"),
    ('{"epoch": Infinity, "dataset": 0, "batch": 0, "resolution": [1, 1], "images": ["a"]}\n', "Infinity is not a number"),
    ('{"epoch": 1e20, "dataset": 0, "batch": 0, "resolution": [1, 1], "images": ["a"]}\n', "epoch: must be <= 10000"),
    ('{"epoch": 1, "dataset": 0, "batch": 0, "resolution": [1e30, 1], "images": ["a"]}\n', "resolution: must be <="),
    ('{"epoch": 1, "dataset": 0, "batch": 0, "resolution": ' + "[" * 100000 + "]" * 100000 + ', "images": ["a"]}\n',
     "line 1: is nested too deeply"),
    (b"\xff\xfe\x00", "a.jsonl: line 1: is not UTF-8 text"),
])
def test_bad_input_exit_2_with_one_line(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "a.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    good = write(tmp_path / "b.jsonl", batches(epochs=1))
    assert main(["schedule-diff", "a.jsonl", good]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("kohya-multiplier: error: ")


def test_missing_file_exit_2(tmp_path, capsys):
    assert main(["schedule-diff", str(tmp_path / "none.jsonl"), str(tmp_path / "none2.jsonl")]) == 2
    assert "none.jsonl: cannot read" in capsys.readouterr().err


def test_empty_schedules_are_a_difference(tmp_path, capsys):
    """Two empty schedules are not a success: nothing was trained (issue 11)."""
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "b.jsonl").write_text("\n")
    assert main(["schedule-diff", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]) == 1
    assert "schedules differ: A and B hold no batch at all" in capsys.readouterr().out


def test_plan_schedule_against_itself_and_a_resumed_plan(tmp_path, monkeypatch, capsys):
    """Schedules written by `plan`: the same plan is identical; a resumed plan matches its epochs."""
    import struct
    import zlib

    def png(w, h):
        def chunk(k, d):
            return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xFFFFFFFF)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"\x00\x00" * h)) + chunk(b"IEND", b""))

    for folder, n in (("alice", 30), ("bob", 7)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            (tmp_path / folder / f"{i:02d}.png").write_bytes(png(8, 8))
    (tmp_path / "cfg.toml").write_text('[general]\nresolution = 64\n[[datasets]]\nbatch_size = 2\n'
                                       '[[datasets.subsets]]\nimage_dir = "alice"\nmultiplier = 0.3\n'
                                       '[[datasets.subsets]]\nimage_dir = "bob"\nmultiplier = 1.5\n')
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "cfg.toml", "--epochs", "4", "--seed", "3", "--schedule", "a.jsonl"]) == 0
    assert main(["plan", "cfg.toml", "--epochs", "4", "--seed", "3", "--schedule", "b.jsonl"]) == 0
    assert main(["plan", "cfg.toml", "--epochs", "2", "--from-epoch", "3", "--seed", "3", "--schedule", "c.jsonl"]) == 0
    assert main(["plan", "cfg.toml", "--epochs", "4", "--seed", "4", "--schedule", "d.jsonl"]) == 0
    capsys.readouterr()
    assert main(["schedule-diff", "a.jsonl", "b.jsonl"]) == 0
    assert main(["schedule-diff", "a.jsonl", "c.jsonl", "--common-epochs"]) == 0
    assert main(["schedule-diff", "a.jsonl", "d.jsonl"]) == 1
    out = capsys.readouterr().out
    # another seed: other images, but the same count per subset and epoch
    assert "alice" in out and "bob" in out and "different images" in out


# ---------------------------------------------------------------------------------------------
# progress


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_silent_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("KOHYA_MULTIPLIER_PROGRESS", raising=False)
    stream = io.StringIO()
    assert list(progress.track(range(5), label="x", stream=stream)) == [0, 1, 2, 3, 4]
    assert stream.getvalue() == ""
    assert not progress.enabled_for(stream)
    assert progress.enabled_for(FakeTTY())


def test_progress_draws_on_a_terminal_and_erases_the_line(monkeypatch):
    monkeypatch.delenv("KOHYA_MULTIPLIER_PROGRESS", raising=False)
    stream = FakeTTY()
    bar = progress.Progress(10, "planning", stream=stream, min_seconds=0.0)
    bar._last = -1e9
    bar.advance(4)
    text = stream.getvalue()
    assert text.startswith("\rplanning: [") and "4/10" in text and "40%" in text
    bar.close()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_progress_environment_switch(monkeypatch):
    monkeypatch.setenv("KOHYA_MULTIPLIER_PROGRESS", "0")
    assert not progress.enabled_for(FakeTTY())
    monkeypatch.setenv("KOHYA_MULTIPLIER_PROGRESS", "1")
    assert progress.enabled_for(io.StringIO())


def test_progress_track_takes_len_and_unknown_totals(monkeypatch):
    stream = FakeTTY()
    items = list(progress.track(iter(range(3)), label="reading", stream=stream, enabled=True))
    assert items == [0, 1, 2]
    assert list(progress.track([1, 2], stream=stream, enabled=False)) == [1, 2]
