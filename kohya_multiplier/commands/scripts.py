"""`kohya-multiplier scripts [DIR]`: the checkout's training scripts, which ones run with multipliers."""

from __future__ import annotations

import argparse

from kohya_multiplier.checkouts import locate, scripts


def register(subparsers) -> None:
    text = "list the checkout's training scripts: supported or not, and whether the integration suite trains them"
    parser = subparsers.add_parser("scripts", help=text, description=text + ".")
    parser.add_argument("directory", nargs="?", help="the sd-scripts checkout (default: --sd-scripts / KOHYA_SD_SCRIPTS / configured)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    checkout = locate.resolve_checkout(args.directory)
    revision = locate.detect_revision(checkout.root)
    print(f"sd-scripts {checkout.root}: revision {revision.verdict()}")
    found = scripts.discover(checkout.root)
    width = max([len(s.name) for s in found] + [6])
    print(f"{'script':<{width}}  {'runs with multipliers':<21}  {'trained by the suite':<35}  how / why")
    for script in found:
        supported = "yes" if script.supported else "no"
        suite = ", ".join(script.suite_trains) if script.supported and script.suite_trains else ("-" if not script.supported else "no (wrapped only)")
        print(f"{script.name:<{width}}  {supported:<21}  {suite:<35}  {script.reason}")
    print(f"run one with: kohya-multiplier SCRIPT <its sd-scripts arguments>")
    return 0
