"""sd-scripts' command-line dataset options, shared by ``plan``, ``balance`` and the training wrapper.

The option names are sd-scripts' own (``--train_batch_size``, ``--resolution``, ``--enable_bucket``,
...), so the same arguments plan and train the same dataset. Every option defaults to None, meaning
"not given": the dataset config, then sd-scripts' default, decide (a value in the config wins over
the command line, as in sd-scripts).
"""

from __future__ import annotations

import argparse

from kohya_multiplier.dataset.types import CommandLineOptions
from kohya_multiplier.errors import UserError


def add_dataset_arguments(parser: argparse.ArgumentParser, *, dataset_config: bool = False, seed: bool = True) -> argparse._ArgumentGroup:
    """Add sd-scripts' dataset options to ``parser`` (in an argument group) and return the group.

    ``dataset_config=True`` also adds ``--dataset_config FILE`` (the ``plan`` command takes the
    config as a positional argument instead). ``seed=False`` leaves ``--seed`` out for commands
    that define it themselves.
    """
    group = parser.add_argument_group("sd-scripts dataset options (a value in the dataset config wins)")
    if dataset_config:
        group.add_argument("--dataset_config", "--dataset-config", dest="dataset_config", metavar="FILE", default=None,
                           help="sd-scripts dataset config (.toml or .json)")
    group.add_argument("--train_data_dir", "--train-data-dir", dest="train_data_dir", metavar="DIR", default=None,
                       help="DreamBooth folders <repeats>_<name> (0.25_name for a multiplier); used without a dataset config")
    group.add_argument("--reg_data_dir", "--reg-data-dir", dest="reg_data_dir", metavar="DIR", default=None,
                       help="regularization folders <repeats>_<name>; used without a dataset config")
    group.add_argument("--in_json", "--in-json", dest="in_json", metavar="FILE", default=None,
                       help="fine-tuning metadata file (JSON, or JSON Lines at sd-scripts >= v0.10); images relative to --train_data_dir")
    group.add_argument("--train_batch_size", "--batch-size", "--train-batch-size", dest="train_batch_size", type=int,
                       metavar="B", default=None, help="batch size (sd-scripts default 1)")
    group.add_argument("--resolution", metavar="W[,H]", default=None,
                       help="training resolution, 'size' or 'width,height'")
    group.add_argument("--enable_bucket", "--enable-bucket", dest="enable_bucket", action="store_true", default=None,
                       help="aspect-ratio buckets")
    group.add_argument("--min_bucket_reso", "--min-bucket-reso", dest="min_bucket_reso", type=int, metavar="N",
                       default=None, help="smallest bucket side (default 256)")
    group.add_argument("--max_bucket_reso", "--max-bucket-reso", dest="max_bucket_reso", type=int, metavar="N",
                       default=None, help="largest bucket side (default 1024)")
    group.add_argument("--bucket_reso_steps", "--bucket-reso-steps", dest="bucket_reso_steps", type=int, metavar="N",
                       default=None, help="bucket side step (default 64)")
    group.add_argument("--bucket_no_upscale", "--bucket-no-upscale", dest="bucket_no_upscale", action="store_true",
                       default=None, help="never upscale images into larger buckets")
    group.add_argument("--dataset_repeats", "--dataset-repeats", dest="dataset_repeats", type=int, metavar="N",
                       default=None, help="num_repeats when no level of the config sets it (default 1)")
    group.add_argument("--caption_extension", "--caption-extension", dest="caption_extension", metavar="EXT",
                       default=None, help=argparse.SUPPRESS)
    group.add_argument("--cache_info", "--cache-info", dest="cache_info", action="store_true", default=None,
                       help="read image sizes from sd-scripts' metadata_cache.json when present")
    group.add_argument("--validation_split", "--validation-split", dest="validation_split", type=float, metavar="F",
                       default=None, help="fraction of each training subset held out for validation")
    group.add_argument("--validation_seed", "--validation-seed", dest="validation_seed", type=int, metavar="S",
                       default=None, help="seed of the validation split")
    group.add_argument("--skip_image_resolution", "--skip-image-resolution", dest="skip_image_resolution", metavar="W[,H]",
                       default=None, help="skip images whose area is at most W x H (sd-scripts v0.11.1)")
    if seed:
        group.add_argument("--seed", type=int, metavar="S", default=None, help="random seed (as sd-scripts' --seed)")
    return group


def options_from_args(args: argparse.Namespace) -> CommandLineOptions:
    """The CommandLineOptions held by a namespace parsed with :func:`add_dataset_arguments`
    (attributes it lacks count as not given)."""
    values = {}
    for name in CommandLineOptions.__dataclass_fields__:
        values[name] = getattr(args, name, None)
    if values["sd_scripts_layout"] is None:
        values["sd_scripts_layout"] = _checkout_layout(getattr(args, "sd_scripts", None))
    return CommandLineOptions(**values)


def _checkout_layout(cli_value: str | None) -> str | None:
    """The code layout of the sd-scripts checkout that will train (``--sd-scripts``, else the
    configured one): how fine-tuning metadata is read depends on it. None when there is none."""
    from kohya_multiplier.checkouts import locate

    try:
        checkout = locate.resolve_checkout(cli_value, required=False)
    except UserError:
        return None
    return locate.detect_layout(checkout.root) if checkout is not None else None


def require_dataset_source(config: str | None, options: CommandLineOptions) -> None:
    """A one-line error when neither a dataset config nor sd-scripts' own dataset options are given."""
    if config is None and options.train_data_dir is None and options.in_json is None:
        raise UserError("give a dataset config file, --train_data_dir or --in_json", key="config")
