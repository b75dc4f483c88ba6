"""Bucket assignment compared with sd-scripts' own code on many random image sizes and options.

Needs an sd-scripts checkout: ``KOHYA_SD_SCRIPTS`` (or the checkout configured for
kohya-multiplier). sd-scripts' code runs in a subprocess (tests/sdscripts_bucket_oracle.py):
with the checkout's ``venv`` interpreter it imports ``library.train_util`` itself; without one, or
if that import fails, it executes sd-scripts' ``BucketManager`` and ``make_bucket_resolutions``
source from the checkout with this interpreter ("extract" mode). Skipped, with the reason shown,
when no checkout is configured.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings

import pytest

from kohya_multiplier.dataset.buckets import BucketLayout, make_bucket_resolutions
from kohya_multiplier.errors import UserError

ORACLE = os.path.join(os.path.dirname(__file__), "sdscripts_bucket_oracle.py")


def _configured_checkouts() -> list[tuple[str, str, str | None]]:
    """(label, checkout, interpreter) for every configured sd-scripts checkout.

    ``KOHYA_SD_SCRIPTS`` and the user config, through the integration layer's lookup when it is
    there; otherwise ``KOHYA_SD_SCRIPTS`` with ``<checkout>/venv``'s interpreter if present.
    """
    found: list[tuple[str, str, str | None]] = []
    try:
        from kohya_multiplier.checkouts.locate import configured_checkouts

        for label, checkout in configured_checkouts().items():
            python = str(checkout.python) if os.path.abspath(str(checkout.python)) != os.path.abspath(sys.executable) else None
            found.append((label, str(checkout.root), python))
    except ImportError:
        path = os.environ.get("KOHYA_SD_SCRIPTS")
        if path and os.path.isfile(os.path.join(path, "library", "train_util.py")):
            found.append(("default", path, _venv_python(path)))
    seen, unique = set(), []
    for label, root, python in found:
        if os.path.realpath(root) not in seen:
            seen.add(os.path.realpath(root))
            unique.append((label, root, python))
    return unique


def _venv_python(checkout: str) -> str | None:
    for rel in (("venv", "bin", "python"), (".venv", "bin", "python"), ("venv", "Scripts", "python.exe")):
        candidate = os.path.join(checkout, *rel)
        if os.path.isfile(candidate):
            return candidate
    return None


CHECKOUTS = _configured_checkouts()
pytestmark = pytest.mark.skipif(
    not CHECKOUTS,
    reason="no sd-scripts checkout configured (set KOHYA_SD_SCRIPTS to an sd-scripts checkout to compare buckets)",
)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _random_sizes(rng: random.Random, count: int, candidates: list[tuple[int, int]]) -> list[list[int]]:
    sizes = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.35:  # photo-like sizes
            w, h = rng.randint(200, 4000), rng.randint(200, 4000)
        elif kind < 0.55:  # common aspect ratios, scaled
            aw, ah = rng.choice([(1, 1), (4, 3), (3, 4), (16, 9), (9, 16), (3, 2), (2, 3), (21, 9), (5, 4)])
            s = rng.randint(20, 400)
            w, h = aw * s, ah * s
        elif kind < 0.7 and candidates:  # exactly a candidate (the exact-size shortcut)
            w, h = rng.choice(candidates)
        elif kind < 0.8:  # extreme aspect ratios
            w, h = rng.randint(64, 300), rng.randint(2000, 8000)
            if rng.random() < 0.5:
                w, h = h, w
        elif kind < 0.9:  # small images
            w, h = rng.randint(1, 200), rng.randint(1, 200)
        else:  # near the resolution
            w, h = rng.randint(480, 1100), rng.randint(480, 1100)
        sizes.append([w, h])
    return sizes


def _cases() -> list[dict]:
    rng = random.Random(20240611)
    resolutions = [(512, 512), (768, 768), (1024, 1024), (512, 768), (640, 448), (1024, 576), (896, 1152), (300, 300)]
    cases = []
    for resolution in resolutions:
        for steps in (64, 32, 8, 48):
            for no_upscale in (False, True):
                low = rng.choice([64, 128, 256, 320, 200, 512])
                high = rng.choice([1024, 1536, 2048, 1000, 768, 1280])
                case = dict(
                    resolution=list(resolution),
                    enable_bucket=True,
                    min_bucket_reso=low,
                    max_bucket_reso=high,
                    bucket_reso_steps=steps,
                    bucket_no_upscale=no_upscale,
                )
                cand = make_bucket_resolutions(resolution, max(low - low % steps, steps), high, steps)
                case["sizes"] = _random_sizes(rng, 150, cand)
                cases.append(case)
    for resolution in resolutions[:3]:  # bucketing off: one fixed bucket
        cases.append(
            dict(resolution=list(resolution), enable_bucket=False, min_bucket_reso=256, max_bucket_reso=1024,
                 bucket_reso_steps=64, bucket_no_upscale=False, sizes=_random_sizes(rng, 50, []))
        )
    return cases


def _run_oracle(target, cases: list[dict]) -> dict:
    _label, checkout, python = target
    request = {"checkout": checkout, "cases": cases, "helper_root": REPO_ROOT}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if python:
        completed = subprocess.run(
            [python, ORACLE], input=json.dumps({**request, "mode": "import"}), capture_output=True, text=True,
            timeout=120, cwd=checkout, env=env,
        )
        if completed.returncode == 0:
            return json.loads(completed.stdout)
        last = (completed.stderr.strip().splitlines() or ["no message"])[-1]
        warnings.warn(f"importing sd-scripts with {python} failed ({last}); comparing with its extracted bucket code instead")
    completed = subprocess.run(
        [sys.executable, ORACLE], input=json.dumps({**request, "mode": "extract"}), capture_output=True, text=True,
        timeout=120, env=env,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


EXTRA_CASES = [
    # (resolution, min, max, steps): min above the resolution, max below it, max rounding up short,
    # both adjusted and accepted, min == max == resolution
    ((512, 512), 640, 1024, 64),
    ((1024, 1024), 256, 768, 64),
    ((512, 768), 512, 700, 64),
    ((512, 512), 300, 1000, 64),
    ((512, 512), 512, 512, 64),
]


@pytest.fixture(scope="module", params=CHECKOUTS, ids=[label for label, _root, _python in CHECKOUTS])
def oracle(request):
    cases = _cases()
    for resolution, low, high, steps in EXTRA_CASES:
        cases.append(dict(resolution=list(resolution), enable_bucket=True, min_bucket_reso=low, max_bucket_reso=high,
                          bucket_reso_steps=steps, bucket_no_upscale=False, sizes=[[512, 512], [700, 300]]))
    return request.param, cases, _run_oracle(request.param, cases)


def test_oracle_mode_reported(oracle, record_property):
    (label, checkout, _python), _cases_, result = oracle
    record_property("sd_scripts_mode", result["mode"])
    print(f"sd-scripts checkout {label} ({checkout}) compared in {result['mode']} mode")
    assert result["mode"] in ("import", "extract")


def test_options_candidates_and_buckets_equal_sd_scripts(oracle):
    _target, cases, result = oracle
    checked_images = 0
    for case, theirs in zip(cases, result["results"]):
        label = {k: v for k, v in case.items() if k != "sizes"}
        try:
            layout = BucketLayout.create(
                resolution=case["resolution"],
                enable_bucket=case["enable_bucket"],
                min_bucket_reso=case["min_bucket_reso"],
                max_bucket_reso=case["max_bucket_reso"],
                bucket_reso_steps=case["bucket_reso_steps"],
                bucket_no_upscale=case["bucket_no_upscale"],
            )
        except UserError:
            assert theirs["error"] is not None, f"we reject options sd-scripts accepts: {label}"
            continue
        assert theirs["error"] is None, f"sd-scripts rejects options we accept ({theirs['error']}): {label}"
        if case["enable_bucket"]:
            assert [layout.min_bucket_reso, layout.max_bucket_reso] == theirs["adjusted"], label
        if theirs["candidates"] is not None:
            assert [list(c) for c in layout.candidates] == theirs["candidates"], label
            assert theirs["direct_candidates"] == theirs["candidates"]
            assert [list(c) for c in make_bucket_resolutions(case["resolution"], *theirs["adjusted"], case["bucket_reso_steps"])] == theirs["candidates"]
        valid_w, valid_h, expected = [], [], []
        for (w, h), bucket in zip(case["sizes"], theirs["buckets"]):
            degenerate = isinstance(bucket, str) or bucket[0] <= 0 or bucket[1] <= 0
            if degenerate:
                with pytest.raises(UserError):
                    layout.select(w, h)
                continue
            assert list(layout.select(w, h)) == bucket, (w, h, label)
            valid_w.append(w)
            valid_h.append(h)
            expected.append(bucket)
        assert layout.assign(valid_w, valid_h).tolist() == expected, label
        checked_images += len(expected)
    assert checked_images > 5000
    rejected = [r for r in result["results"] if r["error"] is not None]
    assert len(rejected) >= 2  # the rejected-options cases really were compared


def test_header_sizes_equal_sd_scripts(tmp_path):
    """Our header reader against sd-scripts' get_image_size in its own environment (imagesize 1.4.1
    plus its Pillow fallback), for every format and header variant the tests can write."""
    from imagegen import bmp_bytes, jpeg_bytes, png_bytes, webp_bytes

    from kohya_multiplier.dataset.images import read_image_size

    rng = random.Random(5)
    files = {}
    for i in range(12):
        w, h = rng.randint(1, 5000), rng.randint(1, 5000)
        files[f"p{i}.png"] = png_bytes(min(w, 1500), min(h, 1500))
        files[f"j{i}.jpg"] = jpeg_bytes(w, h, progressive=bool(i % 2))
        files[f"r{i}.jpg"] = jpeg_bytes(w, h, exif_orientation=6)
        files[f"w{i}.webp"] = webp_bytes(w, h)
        files[f"l{i}.webp"] = webp_bytes(w, h, kind="VP8L")
        files[f"x{i}.webp"] = webp_bytes(w, h, kind="VP8X")
        files[f"b{i}.bmp"] = bmp_bytes(w, h, top_down=bool(i % 2))
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    for label, checkout, python in CHECKOUTS:
        if not python:
            pytest.skip(f"checkout {label} has no venv interpreter with imagesize and Pillow")
        completed = subprocess.run(
            [python, ORACLE], input=json.dumps({"checkout": checkout, "mode": "sizes", "paths": paths}),
            capture_output=True, text=True, timeout=60,
        )
        assert completed.returncode == 0, completed.stderr
        theirs = json.loads(completed.stdout)["sizes"]
        for path, size in zip(paths, theirs):
            if path.endswith(".bmp") and size == [-1, -1]:
                continue  # v0.9.1 has no Pillow fallback: it cannot size BMP files at all (training fails on them)
            ours = read_image_size(path)
            assert (list(ours) if ours else None) == size, (label, os.path.basename(path))
