"""`kohya-multiplier plan`: the dry run. Same config reading, bucket assignment and planner as training."""

from __future__ import annotations

import argparse
import sys

from kohya_multiplier.commands.dataset_options import add_dataset_arguments, options_from_args, require_dataset_source
from kohya_multiplier.dataset.config import load_training_config
from kohya_multiplier.commands.report import check_report_paths, write_report
from kohya_multiplier.errors import UserError, warnings_given
from kohya_multiplier.report.distortion import warn_distortions
from kohya_multiplier.planner.jump import jump_to
from kohya_multiplier.dataset.limits import check_epoch_length, check_epoch_range
from kohya_multiplier.writer import OutputFiles, check_outputs, input_paths, with_config_folders
from kohya_multiplier.planner.dataset_plan import DatasetPlan
from kohya_multiplier.planner.plan_input import planner_seed
from kohya_multiplier.progress import track
from kohya_multiplier.planner import PLANNER_VERSION
from kohya_multiplier.report.stats import collect_stats, format_table, stock_order_note
from kohya_multiplier.report.data import Report
from kohya_multiplier.report.sources import PlanCollector
from kohya_multiplier.run_arithmetic import compute as compute_run
from kohya_multiplier.run_arithmetic import format_run
from kohya_multiplier.dataset.training_config import apply_defaults, read_training_config
from kohya_multiplier.report.schedule import write_records

# sd-scripts' options that decide the run's step count (besides the batch size)
_RUN_OPTIONS = ("max_train_epochs", "max_train_steps", "gradient_accumulation_steps", "num_processes")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="dry run: show which images each epoch trains, per subset, without a GPU or a model",
        description="Plan epochs of an sd-scripts dataset config with multipliers and print the balance table. "
        "Takes sd-scripts' own dataset options; a value in the config wins over the command line, as in sd-scripts.",
    )
    parser.add_argument("config", nargs="?", help="sd-scripts dataset config (.toml); or give --train_data_dir")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="epochs to plan (default: the run's epochs when --max_train_epochs/--max_train_steps say, else 10)")
    parser.add_argument("--from-epoch", "--from_epoch", dest="from_epoch", type=int, default=1, metavar="K",
                        help="plan epochs K..K+N-1 directly, as a resumed run would (default 1)")
    parser.add_argument("--schedule", metavar="FILE", help="write the planned batches as JSON Lines ('-' for stdout)")
    parser.add_argument("--plot", metavar="FILE", help="draw the report as a picture: FILE.png, FILE.svg or FILE.pdf")
    parser.add_argument("--html", metavar="FILE", help="write the report as one self-contained page (works offline)")
    parser.add_argument("--sd-scripts", "--sd_scripts", dest="sd_scripts", metavar="DIR", default=None,
                        help="the sd-scripts checkout that will train (default: the configured one); "
                             "how fine-tuning metadata is read depends on its revision")
    parser.add_argument("--trainer", choices=("sd-scripts", "musubi"), default=None,
                        help="whose dataset config CONFIG is (default: told by its keys; musubi-tuner's datasets name "
                             "image_directory or video_directory)")
    parser.add_argument("--architecture", metavar="NAME", default=None,
                        help="musubi-tuner: the architecture's short name as in its cache files (wan, hv, fp, qi, zi, "
                             "f2d, ...; default: found from the caches)")
    parser.add_argument("--verify-images", "--verify_images", dest="verify_images", action="store_true",
                        help="first decode every image with Pillow (as `kohya-multiplier check`); stop with status 1 "
                        "if any is unreadable or implausible")
    add_dataset_arguments(parser)
    run_options = parser.add_argument_group("sd-scripts run options: print the run's step arithmetic as sd-scripts will")
    run_options.add_argument("--config_file", "--config-file", dest="config_file", metavar="FILE",
                             help="sd-scripts' training config (the kohya_ss GUI writes one per run): its dataset_config "
                             "and options, as sd-scripts reads them (the command line wins)")
    run_options.add_argument("--max_train_epochs", "--max-train-epochs", dest="max_train_epochs", type=int, metavar="N", default=None)
    run_options.add_argument("--max_train_steps", "--max-train-steps", dest="max_train_steps", type=int, metavar="N", default=None,
                             help="(sd-scripts default 1600; --max_train_epochs wins)")
    run_options.add_argument("--gradient_accumulation_steps", "--gradient-accumulation-steps", dest="gradient_accumulation_steps",
                             type=int, metavar="N", default=None, help="(default 1)")
    run_options.add_argument("--num_processes", "--num-processes", dest="num_processes", type=int, metavar="N", default=None,
                             help="processes (GPUs) of the run, as accelerate launch --num_processes (default 1)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.config_file:
        apply_defaults(args, read_training_config(args.config_file))
    asks_for_run = any(getattr(args, k) is not None for k in ("config_file", *_RUN_OPTIONS))
    check_run_options(args)
    epochs_given = args.epochs is not None
    if not epochs_given:
        args.epochs = 10
    if args.epochs < 1:
        raise UserError(f"must be at least 1, got {args.epochs}", key="--epochs")
    if args.from_epoch < 1:
        raise UserError(f"epochs count from 1, got {args.from_epoch}", key="--from-epoch")
    check_report_paths(args.plot, args.html)
    warnings_before = len(warnings_given())
    options = options_from_args(args)
    require_dataset_source(args.config, options)
    check_epoch_range(args.from_epoch, args.epochs)
    inputs = input_paths(args.config, train_data_dir=options.train_data_dir, reg_data_dir=options.reg_data_dir,
                         in_json=options.in_json)
    outputs = {"--schedule": args.schedule, "--plot": args.plot, "--html": args.html}
    check_outputs(outputs, inputs)  # before any work
    config = _read_config(args, options)
    files = OutputFiles(outputs, with_config_folders(inputs, config))
    if args.verify_images:
        from kohya_multiplier.commands.check import verify

        if verify(config, stream=sys.stderr):
            return 1
    seed = planner_seed(options.seed)
    plans = [DatasetPlan(dataset, seed) for dataset in config.datasets]
    for dataset, plan in zip(config.datasets, plans):
        check_epoch_length(dataset.index, plan.epoch_length, file=args.config)
        jump_to(plan.planner, args.from_epoch, f"dataset {dataset.index}: replaying epochs 1-{args.from_epoch - 1}")
    run_figures = None
    if asks_for_run:
        run_figures = compute_run(
            sum(plan.epoch_length for plan in plans),
            processes=args.num_processes or 1,
            gradient_accumulation_steps=args.gradient_accumulation_steps or 1,
            max_train_epochs=args.max_train_epochs,
            max_train_steps=args.max_train_steps,
        )
        if not epochs_given and args.from_epoch == 1:
            args.epochs = run_figures.num_epochs  # plan the run's own epochs
            check_epoch_range(args.from_epoch, args.epochs)
    epochs = range(args.from_epoch, args.from_epoch + args.epochs)

    for note in config.notes:
        print(note)
    order_note = stock_order_note(config.datasets)
    if order_note:
        print(order_note)
    with files:  # every output renamed into place at the end, whole, or left as it was
        _plan_and_print(args, config, plans, epochs, files, run_figures, seed, seed_text_given=options.seed is not None,
                        order_note=order_note, warnings_before=warnings_before)
    return 0


def _plan_and_print(args, config, plans, epochs, files, run_figures, seed, *, seed_text_given, order_note,
                    warnings_before) -> None:
    schedule = files.open("--schedule") if "--schedule" in files else None
    reports, tables, all_stats = [], [], []
    for dataset, dataset_plan in zip(config.datasets, plans):
        hooks = []
        if schedule is not None:
            hooks.append(lambda plan, p=dataset_plan: write_records(schedule, p.records(plan)))
        collector = None
        if args.plot or args.html:
            collector = PlanCollector(dataset, dataset_plan.plan_input, args.from_epoch)
            hooks.append(collector.on_plan)
        on_plan = (lambda plan, hooks=hooks: [hook(plan) for hook in hooks]) if hooks else None
        label = f"planning dataset {dataset.index}"
        stats = collect_stats(dataset_plan, track(epochs, len(epochs), label), on_plan)
        if collector is not None:
            reports.append(collector.report(stats))
        warn_distortions(stats)  # once, before the tables
        tables.append(format_table(stats))
        all_stats.append(stats)
    out = sys.stderr if args.schedule == "-" else sys.stdout
    seed_text = f"{seed}{'' if seed_text_given else ' (no --seed given)'}"
    print(f"seed {seed_text}", file=out)
    for table in tables:
        print("", file=out)
        print(table, file=out)
    run_lines = []
    if run_figures is not None:
        run_lines = format_run(run_figures, config.datasets[0].trainer) + _times_per_image(run_figures, all_stats, list(epochs))
        print("", file=out)
        for line in run_lines:
            print(line, file=out)
    if args.plot or args.html:
        facts = [("config", str(config.source)), ("seed", seed_text),
                 ("planner version", str(PLANNER_VERSION))]
        notes = list(config.notes) + ([order_note] if order_note else [])
        report = Report(title=f"plan of {config.source}", datasets=reports, notes=notes,
                        warnings=warnings_given()[warnings_before:], facts=facts, tables_text=tables, run_lines=run_lines)
        write_report(report, files, args.plot, args.html)


def _read_config(args: argparse.Namespace, options):
    """The dataset config, read by the reader of the trainer it is for."""
    from kohya_multiplier.dataset.musubi_config import load_musubi_config, names_musubi_config

    musubi = args.trainer == "musubi" or (args.trainer is None and args.config is not None and names_musubi_config(args.config))
    if not musubi:
        if args.architecture is not None:
            raise UserError("is for musubi-tuner dataset configs (--trainer musubi)", key="--architecture")
        return load_training_config(args.config, options)
    if args.config is None:
        raise UserError("a musubi-tuner dataset config is a file: give CONFIG", key="--trainer")
    return load_musubi_config(args.config, architecture=args.architecture)


def check_run_options(args: argparse.Namespace) -> None:
    for key in _RUN_OPTIONS:
        value = getattr(args, key)
        if value is not None and value < 1:
            raise UserError(f"must be at least 1, got {value}", key=f"--{key}")
    if args.max_train_epochs is not None:
        check_epoch_range(1, args.max_train_epochs)


def _times_per_image(run, all_stats, epochs: list[int]) -> list[str]:
    """Per subset, how many times each image is trained over the whole run, on average (steps per
    image, as DreamBooth studies count them); only when the planned epochs are the run's."""
    if epochs != list(range(1, run.num_epochs + 1)):
        return ["  (plan epochs 1.. of the run, without --epochs/--from-epoch, to see times per image over the run)"]
    shares = run.epoch_fractions()
    lines = ["  times each image is trained over the run (average):"]
    for stats in all_stats:
        for s, name in enumerate(stats.subset_names):
            images = int(stats.subset_images[s])
            if images == 0 or stats.excluded[s]:
                continue
            trained = sum(float(stats.counts[s][e]) * share for e, share in enumerate(shares))
            lines.append(f"    dataset {stats.dataset} {name}: {trained / images:.2f}")
    return lines
