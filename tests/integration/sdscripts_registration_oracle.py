"""Build sd-scripts' own training datasets for dataset configs and report what they register.

Run with the checkout's Python, in the checkout (it imports train_network and library.*); it never
imports kohya_multiplier. Input (stdin, JSON): ``{"configs": [TOML or {"args": [...]}, ...], "output":
FILE}`` (args: DreamBooth folders and dataset options on the command line, no config file). For
each config it does what train_network.py does before training (parse the arguments,
prepare_dataset_args, BlueprintGenerator with ConfigSanitizer(True, True, False, True),
generate_dataset_group_by_blueprint, which also runs make_buckets) and writes to FILE (JSON; stdout
belongs to sd-scripts' logging) per config either ``{"error": TEXT}`` or ``{"datasets": [...]}``
with, per training dataset, ``images`` {absolute key: [num_repeats, [bucket w, h]]} and ``length``
(batches per epoch, ``len(dataset)``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback


class _Tokenizer:  # v0.9.1's datasets read the tokenizer's max length; nothing else is needed here
    model_max_length = 77


def _prepare(args) -> None:
    try:
        from library.accelerator_setup import prepare_dataset_args  # v0.11.1
    except ImportError:
        from library.train_util import prepare_dataset_args
    prepare_dataset_args(args, True)


def build(config) -> dict:
    """``config``: a dataset TOML, or ``{"args": [...]}``: DreamBooth folders given on the command line."""
    import train_network
    from library import config_util

    parser = train_network.setup_parser()
    if isinstance(config, str):
        args = parser.parse_args(["--dataset_config", config, "--output_dir", os.path.dirname(config)])
    else:
        args = parser.parse_args([*config["args"], "--output_dir", os.getcwd()])
    _prepare(args)
    generator = config_util.BlueprintGenerator(config_util.ConfigSanitizer(True, True, False, True))
    if isinstance(config, str):
        user_config = config_util.load_user_config(config)
    else:  # as train_network.py does without a config file
        subsets = config_util.generate_dreambooth_subsets_config_by_subdirs(args.train_data_dir, args.reg_data_dir)
        user_config = {"datasets": [{"subsets": subsets}]}
    runtime = {}
    if "tokenizer" in {f.name for f in dataclasses.fields(config_util.BaseDatasetParams)}:
        runtime["tokenizer"] = _Tokenizer()
    blueprint = generator.generate(user_config, args, **runtime)
    group = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
    if isinstance(group, tuple):
        group = group[0]
    datasets = []
    for dataset in group.datasets:
        images = {
            os.path.abspath(key): [int(info.num_repeats), [int(v) for v in info.bucket_reso]] for key, info in dataset.image_data.items()
        }
        datasets.append({"images": images, "length": len(dataset)})
    return {"datasets": datasets}


def main() -> None:
    request = json.load(sys.stdin)
    results = []
    for config in request["configs"]:
        try:
            results.append(build(config))
        except BaseException as error:  # noqa: BLE001 - report sd-scripts' refusal, go on
            results.append({"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-2000:]})
    with open(request["output"], "w", encoding="utf-8") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
