"""Training start-up: stock sd-scripts' dataset construction against the wrapped one, side by side.

    python scripts/startup-benchmark.py [--sd-scripts DIR] [--images 100000] [--folders 50] [--runs 3] [--stock]

Generates a tree of IMAGES small PNGs with captions in FOLDERS folders and a dataset config (with
multipliers on every other folder, or, with --stock, only num_repeats), then builds sd-scripts'
training datasets the way train_network.py does (its argument parser, prepare_dataset_args,
BlueprintGenerator, generate_dataset_group_by_blueprint, which runs make_buckets), in a fresh
process of the checkout's Python each time: once stock, once with kohya-multiplier's hooks
installed as the wrapper installs them (which reads the config, plans and prints the start-up
table). Stock and wrapped alternate; it prints, per run, the seconds from parsing the arguments to
the built datasets and the process's peak memory, then the medians and the wrapped/stock ratios.
Needs a configured sd-scripts checkout (`kohya-multiplier configure`) or --sd-scripts DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r'''
import json, os, resource, sys, time
mode, root, config = sys.argv[1], sys.argv[2], sys.argv[3]
os.chdir(root)
sys.path.insert(0, root)
if mode == "wrapped":
    from kohya_multiplier.sdscripts import compat, inject
    from kohya_multiplier.checkouts import locate
    from kohya_multiplier.sdscripts import session as sessions
    compat.install_torchvision_workaround()
    revision = locate.detect_revision(locate.Path(root))
    inject.install(sessions.start(None, revision=revision.verdict(), layout=revision.layout,
                                  script_path=os.path.join(root, "train_network.py")))
else:
    from kohya_multiplier.sdscripts import compat
    compat.install_torchvision_workaround()
import dataclasses
import train_network
from library import config_util
try:
    from library.accelerator_setup import prepare_dataset_args
except ImportError:
    from library.train_util import prepare_dataset_args
class Tokenizer:
    model_max_length = 77
# count sd-scripts' own header reads (make_buckets reads the sizes nobody handed it)
owner = next(c for c in config_util.DreamBoothDataset.__mro__ if "get_image_size" in c.__dict__)
original_get_image_size = owner.get_image_size
header_reads = [0]
def counted_get_image_size(self, path):
    header_reads[0] += 1
    return original_get_image_size(self, path)
owner.get_image_size = counted_get_image_size
start = time.perf_counter()
args = train_network.setup_parser().parse_args(["--dataset_config", config, "--output_dir", os.path.dirname(config), "--seed", "1"])
prepare_dataset_args(args, True)
generator = config_util.BlueprintGenerator(config_util.ConfigSanitizer(True, True, False, True))
runtime = {"tokenizer": Tokenizer()} if "tokenizer" in {f.name for f in dataclasses.fields(config_util.BaseDatasetParams)} else {}
blueprint = generator.generate(config_util.load_user_config(config), args, **runtime)
group = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
seconds = time.perf_counter() - start
group = group[0] if isinstance(group, tuple) else group
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("KM-BENCH " + json.dumps({"seconds": seconds, "peak_mb": peak, "batches": sum(len(d) for d in group.datasets),
                                "header_reads": header_reads[0]}))
'''


def make_tree(root: str, images: int, folders: int, stock: bool) -> tuple[str, str]:
    """The tree, and two configs over it: the stock one (num_repeats only: stock sd-scripts refuses
    `multiplier`) and the wrapped run's (multipliers on every other folder, or the stock one)."""
    from kohya_multiplier.example import png_bytes

    sizes = [(64, 64), (64, 96), (96, 64), (80, 64)]
    pngs = [png_bytes(w, h, (10, 20, 30)) for w, h in sizes]
    subsets = []
    for f in range(folders):
        folder = os.path.join(root, "train", f"subject_{f:03d}")
        os.makedirs(folder)
        count = images // folders + (1 if f < images % folders else 0)
        for i in range(count):
            with open(os.path.join(folder, f"{i:06d}.png"), "wb") as handle:
                handle.write(pngs[(i + f) % len(pngs)])
            with open(os.path.join(folder, f"{i:06d}.txt"), "w", encoding="utf-8") as handle:
                handle.write(f"subject {f}\n")
        rate = f"multiplier = {0.25 + (f % 7) / 10}" if f % 2 == 0 else "num_repeats = 1"
        subsets.append((folder.replace(os.sep, "/"), rate))
    head = ("[general]\nresolution = 64\nenable_bucket = true\nmin_bucket_reso = 32\nmax_bucket_reso = 128\n"
            "bucket_reso_steps = 32\ncaption_extension = \".txt\"\n[[datasets]]\nbatch_size = 4\n")
    configs = []
    for name, with_multipliers in (("stock.toml", False), ("wrapped.toml", not stock)):
        body = "".join(f'[[datasets.subsets]]\nimage_dir = "{folder}"\n{rate if with_multipliers else "num_repeats = 1"}\n'
                       for folder, rate in subsets)
        configs.append(os.path.join(root, name))
        with open(configs[-1], "w", encoding="utf-8") as handle:
            handle.write(head + body)
    return configs[0], configs[1]


def run_once(python: str, mode: str, checkout: str, config: str) -> dict:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this tree's kohya_multiplier, not an installed one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    child = subprocess.run([python, "-c", CHILD, mode, checkout, config], capture_output=True, text=True, env=env)
    for line in child.stdout.splitlines():
        if line.startswith("KM-BENCH "):
            return json.loads(line[len("KM-BENCH "):])
    raise SystemExit(f"startup-benchmark: the {mode} run failed:\n{child.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd-scripts", dest="sd_scripts", metavar="DIR", help="the checkout (default: the configured one)")
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3, help="runs of each, alternating (default 3)")
    parser.add_argument("--stock", action="store_true", help="a config without multipliers")
    args = parser.parse_args(argv)
    from kohya_multiplier.checkouts import locate

    checkout = locate.resolve_checkout(args.sd_scripts, required=False)
    if checkout is None:
        configured = locate.configured_checkouts()
        if not configured:
            raise SystemExit("startup-benchmark: no sd-scripts checkout: give --sd-scripts DIR or configure one")
        checkout = next(iter(configured.values()))
    with tempfile.TemporaryDirectory(prefix="km-startup-") as root:
        made = time.perf_counter()
        configs = dict(zip(("stock", "wrapped"), make_tree(root, args.images, args.folders, args.stock)))
        print(f"tree: {args.images} images in {args.folders} folders ({time.perf_counter() - made:.0f} s to write); "
              f"checkout {checkout.root}; {'stock config' if args.stock else 'multipliers on every other folder'}")
        results: dict[str, list[dict]] = {"stock": [], "wrapped": []}
        for run in range(args.runs):
            for mode in ("stock", "wrapped"):
                figures = run_once(str(checkout.python), mode, str(checkout.root), configs[mode])
                results[mode].append(figures)
                print(f"run {run + 1} {mode:7s}: {figures['seconds']:.2f} s, peak {figures['peak_mb']:.0f} MB, "
                      f"{figures['batches']} batches per epoch, {figures['header_reads']} headers read by sd-scripts")
    medians = {mode: (statistics.median(r["seconds"] for r in runs), statistics.median(r["peak_mb"] for r in runs))
               for mode, runs in results.items()}
    (stock_s, stock_mb), (wrapped_s, wrapped_mb) = medians["stock"], medians["wrapped"]
    print(f"median: stock {stock_s:.2f} s / {stock_mb:.0f} MB, wrapped {wrapped_s:.2f} s / {wrapped_mb:.0f} MB; "
          f"wrapped/stock time {wrapped_s / stock_s:.3f}, memory {wrapped_mb / stock_mb:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
