"""Training start-up reads each image header once (the restructuring issue, point 6): sd-scripts
builds a planned dataset without reading a single image size itself (the core's sizes are handed
to it), and builds a stock dataset exactly as it always does. Measured by counting sd-scripts' own
get_image_size calls in scripts/startup-benchmark.py's dataset construction."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from dev_scripts import load_script

pytestmark = pytest.mark.integration


def test_sd_scripts_reads_no_header_the_core_has_read(sd, tmp_path_factory):
    bench = load_script("startup-benchmark.py")
    root = tmp_path_factory.mktemp(f"startup-{sd.label}")
    stock_config, wrapped_config = bench.make_tree(str(root), 120, 4, stock=False)
    stock = bench.run_once(str(sd.python), "stock", str(sd.root), stock_config)
    wrapped = bench.run_once(str(sd.python), "wrapped", str(sd.root), wrapped_config)
    assert stock["header_reads"] == 120  # sd-scripts reads every size itself
    assert wrapped["header_reads"] == 0  # ...unless the core already did
    # a stock config through the hooks: nothing of ours is read, sd-scripts reads as always
    assert bench.run_once(str(sd.python), "wrapped", str(sd.root), stock_config)["header_reads"] == 120


GLOB_PROBE = r"""
import json, os, sys
root, folders = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, root)
os.chdir(root)
from kohya_multiplier.sdscripts import dataset as planned  # imports sd-scripts' dataset modules
namespace = planned.sd_dataset_function("__init__").__globals__
stock_glob = namespace["glob_images"]
result = {"stock": [stock_glob(f, "*") for f in folders]}
with planned._listing_folders_once({}):
    result["swapped"] = namespace["glob_images"] is not stock_glob
    result["ours"] = [namespace["glob_images"](f, "*") for f in folders]
result["restored"] = namespace["glob_images"] is stock_glob
print("KM-GLOB " + json.dumps(result))
"""


def test_planned_datasets_list_each_folder_once_as_sd_scripts_globs_it(sd, tmp_path):
    """The planned dataset's one-pass listing returns exactly the paths sd-scripts' glob_images does,
    spelled the same, for the names glob treats specially."""
    odd = tmp_path / "odd [set] folder"
    odd.mkdir()
    for name in ("b.png", "a.PNG", "c.Png", "d.jpeg", ".hidden.png", "e.txt", "f.webp", "g.bmp", "h.JPG", "[x].png"):
        (odd / name).write_bytes(b"")
    (odd / "sub.png").mkdir()  # a folder named like an image: glob lists it, sd-scripts then fails on it
    empty = tmp_path / "empty"
    empty.mkdir()
    folders = [str(odd), str(odd) + os.sep, str(empty), str(tmp_path / "missing"), os.path.relpath(odd, sd.root)]
    probe = subprocess.run([sd.python, "-c", GLOB_PROBE, str(sd.root), json.dumps(folders)],
                           capture_output=True, text=True, env=sd.env(), timeout=300)
    line = next((x for x in probe.stdout.splitlines() if x.startswith("KM-GLOB ")), None)
    assert line, probe.stderr[-3000:]
    result = json.loads(line[len("KM-GLOB "):])
    assert result["swapped"] and result["restored"]
    assert result["ours"] == result["stock"]
    assert len(result["stock"][0]) == 8  # the probe's folder really has the odd names glob skips or lists
