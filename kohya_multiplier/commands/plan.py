"""`kohya-multiplier plan`: the dry run. Same config reading, bucket assignment and planner as training."""

from __future__ import annotations

import argparse
import sys

from kohya_multiplier.commands.dataset_options import add_dataset_arguments, options_from_args
from kohya_multiplier.config import load_training_config
from kohya_multiplier.commands.report import check_report_paths, write_report
from kohya_multiplier.errors import UserError, warnings_given
from kohya_multiplier.distortion import warn_distortions
from kohya_multiplier.limits import check_epoch_length, check_epoch_range
from kohya_multiplier.output_paths import check_outputs, input_paths
from kohya_multiplier.plan_input import planner_for_dataset, planner_seed
from kohya_multiplier.progress import track
from kohya_multiplier.planner import PLANNER_VERSION
from kohya_multiplier.report import collect_stats, format_table, stock_order_note
from kohya_multiplier.report_data import Report
from kohya_multiplier.report_sources import PlanCollector
from kohya_multiplier.schedule import epoch_records, write_records


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="dry run: show which images each epoch trains, per subset, without a GPU or a model",
        description="Plan epochs of an sd-scripts dataset config with multipliers and print the balance table. "
        "Takes sd-scripts' own dataset options; a value in the config wins over the command line, as in sd-scripts.",
    )
    parser.add_argument("config", nargs="?", help="sd-scripts dataset config (.toml); or give --train_data_dir")
    parser.add_argument("--epochs", type=int, default=10, metavar="N", help="epochs to plan (default 10)")
    parser.add_argument("--from-epoch", "--from_epoch", dest="from_epoch", type=int, default=1, metavar="K",
                        help="plan epochs K..K+N-1 directly, as a resumed run would (default 1)")
    parser.add_argument("--schedule", metavar="FILE", help="write the planned batches as JSON Lines ('-' for stdout)")
    parser.add_argument("--plot", metavar="FILE", help="draw the report as a picture: FILE.png, FILE.svg or FILE.pdf")
    parser.add_argument("--html", metavar="FILE", help="write the report as one self-contained page (works offline)")
    parser.add_argument("--verify-images", "--verify_images", dest="verify_images", action="store_true",
                        help="first decode every image with Pillow (as `kohya-multiplier check`); stop with status 1 "
                        "if any is unreadable or implausible")
    add_dataset_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise UserError(f"must be at least 1, got {args.epochs}", key="--epochs")
    if args.from_epoch < 1:
        raise UserError(f"epochs count from 1, got {args.from_epoch}", key="--from-epoch")
    check_report_paths(args.plot, args.html)
    warnings_before = len(warnings_given())
    options = options_from_args(args)
    if args.config is None and options.train_data_dir is None:
        raise UserError("give a dataset config file or --train_data_dir", key="config")
    check_epoch_range(args.from_epoch, args.epochs)
    inputs = input_paths(args.config, train_data_dir=options.train_data_dir, reg_data_dir=options.reg_data_dir)
    outputs = {"--schedule": args.schedule, "--plot": args.plot, "--html": args.html}
    check_outputs(outputs, inputs)  # before any work
    config = load_training_config(args.config, options)
    image_dirs = [s.image_dir for d in config.datasets for s in d.subsets]
    check_outputs(outputs, input_paths(args.config, image_dirs=image_dirs, train_data_dir=options.train_data_dir,
                                       reg_data_dir=options.reg_data_dir))
    if args.verify_images:
        from kohya_multiplier.commands.check import verify

        if verify(config, stream=sys.stderr):
            return 1
    seed = planner_seed(options.seed)
    epochs = range(args.from_epoch, args.from_epoch + args.epochs)

    for note in config.notes:
        print(note)
    order_note = stock_order_note(config.datasets)
    if order_note:
        print(order_note)
    schedule = _open_schedule(args.schedule)
    reports, tables = [], []
    try:
        for dataset in config.datasets:
            planner, plan_input = planner_for_dataset(dataset, seed)
            check_epoch_length(dataset.index, planner.epoch_length, file=args.config)
            hooks = []
            if schedule is not None:
                hooks.append(lambda plan, d=dataset.index, p=plan_input: write_records(schedule, epoch_records(d, plan, p)))
            collector = None
            if args.plot or args.html:
                collector = PlanCollector(dataset, plan_input, args.from_epoch)
                hooks.append(collector.on_plan)
            on_plan = (lambda plan, hooks=hooks: [hook(plan) for hook in hooks]) if hooks else None
            label = f"planning dataset {dataset.index}"
            stats = collect_stats(dataset, planner, plan_input, track(epochs, len(epochs), label), on_plan)
            if collector is not None:
                reports.append(collector.report(stats))
            warn_distortions(stats)  # once, before the tables
            tables.append(format_table(stats))
    finally:
        if schedule is not None and schedule is not sys.stdout:
            schedule.close()
    out = sys.stderr if args.schedule == "-" else sys.stdout
    print(f"seed {seed}{'' if options.seed is not None else ' (no --seed given)'}", file=out)
    for table in tables:
        print("", file=out)
        print(table, file=out)
    if args.plot or args.html:
        facts = [("config", str(config.source)), ("seed", f"{seed}{'' if options.seed is not None else ' (no --seed given)'}"),
                 ("planner version", str(PLANNER_VERSION))]
        notes = list(config.notes) + ([order_note] if order_note else [])
        report = Report(title=f"plan of {config.source}", datasets=reports, notes=notes,
                        warnings=warnings_given()[warnings_before:], facts=facts, tables_text=tables)
        write_report(report, args.plot, args.html)
    return 0


def _open_schedule(path: str | None):
    if path is None:
        return None
    if path == "-":
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot write: {error.strerror or error}", file=path, key="--schedule") from None
