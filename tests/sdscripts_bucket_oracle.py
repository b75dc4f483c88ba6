"""Run sd-scripts' own bucket code on test cases: an oracle for tests/test_buckets_vs_sd_scripts.py.

Runs as a separate process, normally with the interpreter of the sd-scripts environment; it never
imports kohya_multiplier. Input (stdin, JSON): ``{"checkout": DIR, "mode": "import"|"extract",
"cases": [...]}``; each case has resolution, enable_bucket, min/max_bucket_reso,
bucket_reso_steps, bucket_no_upscale and sizes ``[[w, h], ...]``. Output (stdout, JSON): the mode
used and per case the adjusted min/max, the candidate list, and each image's bucket (or the name of
the exception sd-scripts raised for it), or the case's error if sd-scripts rejects the options.

Modes (a request with ``"mode": "sizes"`` and ``paths`` instead returns what sd-scripts'
``BaseDataset.get_image_size`` reads for each file, run from its source with this interpreter's
imagesize and Pillow):
* ``import``: ``import library.train_util`` and ``library.model_util`` from the checkout (needs its
  full environment: torch, cv2, transformers, ...).
* ``extract``: read ``library/train_util.py`` and ``library/model_util.py`` as text and execute only
  ``BucketManager``, ``BaseDataset.adjust_min_max_bucket_reso_by_steps`` and
  ``make_bucket_resolutions`` from them, with numpy, math and random: no heavy imports, so any
  interpreter with numpy can run sd-scripts' own logic.

The driver reproduces what ``BaseDataset.make_buckets`` does around ``select_bucket``: with
bucketing on, adjust min/max to the steps, build ``BucketManager`` and its candidates unless
``bucket_no_upscale``; with bucketing off, one predefined bucket, the resolution.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import random
import sys
import types
import typing


# Where sd-scripts defines its dataset classes: train_util.py up to v0.10, dataset.py from v0.11 on.
DATASET_MODULES = ("library/train_util.py", "library/dataset.py")


def top_level_class(checkout: str, name: str) -> ast.ClassDef:
    for rel in DATASET_MODULES:
        path = os.path.join(checkout, rel)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        found = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
        if found is not None:
            return found
    raise LookupError(f"no {name} in {', '.join(DATASET_MODULES)} of {checkout}")


def load_extract(checkout: str):
    def read(rel):
        with open(os.path.join(checkout, rel), encoding="utf-8") as handle:
            return ast.parse(handle.read())

    import numpy as np

    namespace = {"np": np, "math": math, "random": random, "logger": logging.getLogger("sd-scripts")}
    namespace.update({name: getattr(typing, name) for name in ("Tuple", "List", "Optional", "Dict", "Union", "Any", "Sequence")})
    model_util = read("library/model_util.py")

    mbr = next(n for n in model_util.body if isinstance(n, ast.FunctionDef) and n.name == "make_bucket_resolutions")
    model_ns = dict(namespace)
    exec(compile(ast.Module(body=[mbr], type_ignores=[]), "model_util.py", "exec"), model_ns)
    namespace["model_util"] = types.SimpleNamespace(make_bucket_resolutions=model_ns["make_bucket_resolutions"])

    bucket_manager = top_level_class(checkout, "BucketManager")
    base_dataset = top_level_class(checkout, "BaseDataset")
    adjust = next(n for n in base_dataset.body if isinstance(n, ast.FunctionDef) and n.name == "adjust_min_max_bucket_reso_by_steps")
    holder = ast.ClassDef(name="AdjustHolder", bases=[], keywords=[], body=[adjust], decorator_list=[])
    module = ast.Module(body=[bucket_manager, holder], type_ignores=[])
    ast.fix_missing_locations(module)
    exec(compile(module, "train_util.py", "exec"), namespace)
    adjust_fn = namespace["AdjustHolder"].adjust_min_max_bucket_reso_by_steps
    return namespace["BucketManager"], (lambda *a: adjust_fn(None, *a)), namespace["model_util"].make_bucket_resolutions


def load_import(checkout: str, helper_root: str | None = None):
    if helper_root:  # torchvision work-around of the integration layer (torch-free module)
        sys.path.insert(0, helper_root)
        try:
            from kohya_multiplier.sdscripts.compat import install_torchvision_workaround

            install_torchvision_workaround()
        except ImportError:
            pass
        finally:
            sys.path.remove(helper_root)
    sys.path.insert(0, checkout)
    from library import model_util, train_util  # noqa: E402

    adjust_fn = train_util.BaseDataset.adjust_min_max_bucket_reso_by_steps
    return train_util.BucketManager, (lambda *a: adjust_fn(None, *a)), model_util.make_bucket_resolutions


def load_get_image_size(checkout: str):
    """sd-scripts' ``BaseDataset.get_image_size`` (imagesize, then Pillow as a fallback), extracted."""
    import imagesize
    from PIL import Image

    base_dataset = top_level_class(checkout, "BaseDataset")
    method = next(n for n in base_dataset.body if isinstance(n, ast.FunctionDef) and n.name == "get_image_size")
    holder = ast.ClassDef(name="SizeHolder", bases=[], keywords=[], body=[method], decorator_list=[])
    module = ast.Module(body=[holder], type_ignores=[])
    ast.fix_missing_locations(module)
    namespace = {"imagesize": imagesize, "Image": Image, "logger": logging.getLogger("sd-scripts"), "get_jxl_size": None}
    exec(compile(module, "train_util.py", "exec"), namespace)
    return lambda path: namespace["SizeHolder"].get_image_size(None, path)


def image_sizes(checkout: str, paths):
    get_image_size = load_get_image_size(checkout)
    results = []
    for path in paths:
        try:
            w, h = get_image_size(path)
            results.append([int(w), int(h)])
        except Exception as error:
            results.append(type(error).__name__)
    return results


def run_case(case, BucketManager, adjust, make_bucket_resolutions):
    resolution = tuple(case["resolution"])
    result = {"error": None, "adjusted": None, "candidates": None, "buckets": []}
    try:
        if case["enable_bucket"]:
            low, high = adjust(resolution, case["min_bucket_reso"], case["max_bucket_reso"], case["bucket_reso_steps"])
            result["adjusted"] = [low, high]
            manager = BucketManager(case["bucket_no_upscale"], resolution, low, high, case["bucket_reso_steps"])
            if not case["bucket_no_upscale"]:
                manager.make_buckets()
                result["candidates"] = [list(r) for r in manager.predefined_resos]
                direct = make_bucket_resolutions(resolution, low, high, case["bucket_reso_steps"])
                result["direct_candidates"] = [list(r) for r in direct]
        else:
            manager = BucketManager(False, resolution, None, None, None)
            manager.set_predefined_resos([resolution])
    except Exception as error:  # sd-scripts rejects the options (assert) or fails
        result["error"] = type(error).__name__
        return result
    for w, h in case["sizes"]:
        try:
            reso, _resized, _err = manager.select_bucket(w, h)
            result["buckets"].append([int(reso[0]), int(reso[1])])
        except Exception as error:
            result["buckets"].append(type(error).__name__)
    return result


def main():
    request = json.load(sys.stdin)
    mode = request.get("mode", "extract")
    logging.disable(logging.CRITICAL)
    if mode == "sizes":
        json.dump({"mode": mode, "sizes": image_sizes(request["checkout"], request["paths"])}, sys.stdout)
        return
    if mode == "import":
        loaded = load_import(request["checkout"], request.get("helper_root"))
    else:
        loaded = load_extract(request["checkout"])
    results = [run_case(case, *loaded) for case in request["cases"]]
    json.dump({"mode": mode, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
