"""`kohya-multiplier report SCHEDULE.jsonl [--config CONFIG] --html FILE [--plot FILE]`: the plan
report drawn from a schedule file — the dry run's (`plan --schedule`) or what a training run
recorded (`--multiplier_schedule`), so a user sees what was actually trained.

Also the shared writer of the report for `plan --plot/--html` (:func:`write_report`)."""

from __future__ import annotations

import argparse
import os

from kohya_multiplier.commands.dataset_options import add_dataset_arguments, options_from_args
from kohya_multiplier.errors import UserError, warnings_given
from kohya_multiplier.writer import OutputFiles, check_outputs, input_paths, with_config_folders


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="draw the plan report (HTML page, picture) from a schedule file, e.g. what training recorded",
        description="Read a schedule (JSON Lines, from `plan --schedule` or training's --multiplier_schedule) and "
        "write the report: balance between subsets, rotation, the run, the per-subset table. With --config, images "
        "are matched to the config's subsets (targets, multipliers); without, each image folder is a subset.",
    )
    parser.add_argument("schedule", metavar="SCHEDULE.jsonl", help="the schedule file")
    parser.add_argument("--config", metavar="CONFIG", help="the dataset config the schedule was planned or trained from")
    parser.add_argument("--html", metavar="FILE", help="write the report as one self-contained page")
    parser.add_argument("--plot", metavar="FILE", help="draw the report as a picture: FILE.png, FILE.svg or FILE.pdf")
    add_dataset_arguments(parser)
    parser.set_defaults(handler=run)


def check_report_paths(plot: str | None, html: str | None) -> None:
    """Before any work: the picture's format from its extension."""
    from kohya_multiplier.report.picture import picture_format

    if plot is not None:
        picture_format(plot)


def write_report(report, outputs: OutputFiles, plot: str | None, html: str | None) -> None:
    """Render the picture and the page into ``outputs`` (renamed into place when the command ends)."""
    if plot:
        from kohya_multiplier.report import picture as picture
        outputs.write("--plot", picture.draw_report(report, plot))
    if html:
        from kohya_multiplier.report import page as html_report
        outputs.write("--html", html_report.render_page(report))


def partial_epoch_notes(datasets) -> list[str]:
    """A schedule whose epochs differ in length (a run cut short by --max_train_steps, a crash):
    name the short epochs, so their low counts are not read as imbalance."""
    notes = []
    for d in datasets:
        if d.epoch_length is not None or not d.batches_per_epoch:
            continue
        full = max(d.batches_per_epoch)
        short = [(e, b) for e, b in zip(d.epochs, d.batches_per_epoch) if b < full]
        shown = ", ".join(f"epoch {e} ({b} of {full})" for e, b in short[:5]) + (f" and {len(short) - 5} more" if len(short) > 5 else "")
        notes.append(f"dataset {d.index}: {len(short)} epoch{'s' * (len(short) != 1)} with fewer batches than the others "
                     f"(cut short, or recorded in part): {shown}; their counts are low for that reason")
    return notes


def run(args: argparse.Namespace) -> int:
    if not args.html and not args.plot:
        raise UserError("say where to write the report: --html FILE and/or --plot FILE", key="--html")
    check_report_paths(args.plot, args.html)
    outputs = {"--html": args.html, "--plot": args.plot}
    inputs = input_paths(args.config, read_files=[args.schedule])
    check_outputs(outputs, inputs)  # before any work
    warnings_before = len(warnings_given())
    from kohya_multiplier.report.data import Report
    from kohya_multiplier.report.sources import planner_versions, schedule_reports
    from kohya_multiplier.report.schedule import ScheduleFile

    schedule = ScheduleFile(args.schedule)
    config = None
    notes: list[str] = []
    options = options_from_args(args)
    if args.config is not None:
        from kohya_multiplier.dataset.config import load_training_config

        config = load_training_config(args.config, options)
        notes = list(config.notes)
        for note in notes:
            print(note)
    # the folders of the images the schedule names are inputs too (with or without the config)
    every_input = input_paths(args.config, image_dirs=sorted({os.path.dirname(p) for p in schedule.paths}),
                              read_files=[args.schedule])
    files = OutputFiles(outputs, with_config_folders(every_input, config) if config is not None else every_input)
    datasets = schedule_reports(schedule, config, notes)
    notes += partial_epoch_notes(datasets)
    facts = [("schedule", args.schedule), ("config", args.config or "none (targets unknown)"),
             ("planner version", ", ".join(planner_versions(schedule)))]
    report = Report(title=f"schedule {os.path.basename(args.schedule)}", datasets=datasets, notes=notes,
                    warnings=warnings_given()[warnings_before:], facts=facts)
    with files:
        write_report(report, files, args.plot, args.html)
    written = " and ".join(p for p in (args.html, args.plot) if p)
    print(f"report of {sum(len(d.epochs) for d in datasets)} epochs ({schedule.batch_count} batches) written to {written}")
    return 0
