"""`kohya-multiplier scripts [DIR]`: the checkout's training scripts, which ones run with multipliers."""

from __future__ import annotations

import argparse

from kohya_multiplier.checkouts import locate, scripts


def register(subparsers) -> None:
    text = "list the checkout's training scripts: supported or not, and whether the integration suite trains them"
    parser = subparsers.add_parser("scripts", help=text, description=text + ".")
    parser.add_argument("directory", nargs="?", help="the sd-scripts checkout (default: KOHYA_SD_SCRIPTS, else the one `configure` set)")
    parser.set_defaults(handler=run)


def _suite_column(script) -> str:
    if not script.supported:
        return "-"
    return ", ".join(script.suite_trains) if script.suite_trains else "no (wrapped only)"


def run(args: argparse.Namespace) -> int:
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
