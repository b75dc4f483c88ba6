"""`kohya-multiplier scripts [DIR]`: the checkout's training scripts, which ones run with multipliers."""

from __future__ import annotations

import argparse

from kohya_multiplier.checkouts import locate, scripts
from kohya_multiplier.errors import UserError


def register(subparsers) -> None:
    text = "list the checkout's training scripts: supported or not, and whether the integration suite trains them"
    parser = subparsers.add_parser("scripts", help=text, description=text + ".")
    parser.add_argument("directory", nargs="?", help="the sd-scripts checkout (default: KOHYA_SD_SCRIPTS, else the one `configure` set)")
    parser.add_argument("--trainer", choices=("sd-scripts", "musubi"), default="sd-scripts",
                        help="musubi: list musubi-tuner's LoRA scripts instead (of the musubi-tuner this Python has)")
    parser.set_defaults(handler=run)


def _suite_column(script) -> str:
    if not script.supported:
        return "-"
    return ", ".join(script.suite_trains) if script.suite_trains else "no (wrapped only)"


def run(args: argparse.Namespace) -> int:
    if args.trainer == "musubi":
        return run_musubi(args)
    checkout = locate.resolve_checkout(args.directory, given_as="the checkout DIR")
    revision = locate.detect_revision(checkout.root)
    print(f"sd-scripts {checkout.root}: revision {revision.verdict()}")
    found = scripts.discover(checkout.root)
    rows = [(s.name, "yes" if s.supported else "no", _suite_column(s), s.reason) for s in found]
    width = max([len(r[0]) for r in rows] + [6])
    suite_width = max([len(r[2]) for r in rows] + [20])
    print(f"{'script':<{width}}  {'runs with multipliers':<21}  {'trained by the suite':<{suite_width}}  how / why")
    for name, supported, suite, reason in rows:
        print(f"{name:<{width}}  {supported:<21}  {suite:<{suite_width}}  {reason}")
    print("run one with: kohya-multiplier SCRIPT <its sd-scripts arguments>")
    return 0


def run_musubi(args: argparse.Namespace) -> int:
    from kohya_multiplier.checkouts import musubi

    if args.directory is not None:
        raise UserError("takes no DIR: the musubi-tuner listed is the one this Python imports", key="--trainer musubi")
    install = musubi.find_install()
    release, differs = install.revision()
    verdict = release or f"untested (its {differs} differs from v0.3.4)"
    print(f"musubi-tuner {install.version} at {install.root}: revision {verdict}")
    width = max(len(name) for name in musubi.SCRIPTS)
    print(f"{'script':<{width}}  {'runs with multipliers':<21}  {'trained by the suite':<20}  trains")
    for name, what in sorted(musubi.SCRIPTS.items()):
        suite = "yes" if name in musubi.TRAINED_BY_THE_SUITE else "no (wrapped only)"
        print(f"{name:<{width}}  {'yes':<21}  {suite:<20}  {what}")
    print("run one with: kohya-multiplier musubi SCRIPT <its musubi-tuner arguments>")
    return 0
