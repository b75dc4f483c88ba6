"""`kohya-multiplier patch|unpatch|status [DIR]`: hook kohya-multiplier into an sd-scripts checkout.

For people who launch sd-scripts themselves (the kohya_ss GUI, their own `accelerate launch
train_network.py ...`): after `patch`, the unmodified training scripts honour `multiplier` whenever
kohya-multiplier is installed in their environment, and behave exactly as before when it is not.
"""

from __future__ import annotations

import argparse

from kohya_multiplier.errors import UserError
from kohya_multiplier.checkouts import locate, patching


def register(subparsers) -> None:
    for name, handler, text in [
        ("patch", run_patch, "hook kohya-multiplier into an sd-scripts checkout (adds a few lines to library/config_util.py)"),
        ("unpatch", run_unpatch, "remove the hook from an sd-scripts checkout"),
        ("status", run_status, "show an sd-scripts checkout's revision, patch state and the kohya-multiplier it loads"),
    ]:
        parser = subparsers.add_parser(name, help=text, description=text + ".")
        parser.add_argument("directory", nargs="?", help="the sd-scripts checkout (default: KOHYA_SD_SCRIPTS, else the one `configure` set)")
        if name != "status":
            parser.add_argument("--force", action="store_true", help="go ahead on an untested revision or a checkout with local changes")
        parser.set_defaults(handler=handler)


def _checkout(args) -> tuple[locate.Checkout, locate.Revision, str]:
    checkout = locate.resolve_checkout(args.directory, given_as="the checkout DIR")
    revision = locate.detect_revision(checkout.root)
    patch_name = patching.PATCH_FOR_LAYOUT.get(revision.layout or "")
    if patch_name is None:
        raise UserError(
            f"revision {revision.name} has a code layout kohya-multiplier has no patch for "
            f"(supported: {locate.supported_names()}); nothing was changed",
            file=str(checkout.root),
        )
    return checkout, revision, patch_name


def run_patch(args: argparse.Namespace) -> int:
    checkout, revision, patch_name = _checkout(args)
    root = checkout.root
    state = patching.inspect(root, patch_name)
    if state.state == "patched":
        print(f"{root} is already patched (revision {revision.name}); nothing to do")
        return 0
    if state.state == "modified":
        raise UserError(f"cannot patch: {state.detail}; nothing was changed", file=str(root))
    if not revision.tested and not args.force:
        raise UserError(
            f"revision {revision.name} is not a tested revision ({locate.tested_names()}): "
            f"{revision.difference_text()}; use --force to patch it anyway",
            file=str(root),
        )
    dirty = patching.git_dirty_files(root)
    if dirty and not args.force:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise UserError(f"the checkout has local changes ({shown}); commit or stash them, or use --force", file=str(root))
    changed = patching.apply(root, patch_name)
    print(f"patched {root} (revision {revision.name}) with patches/{patch_name}: {', '.join(changed)}")
    print(f"its Python ({checkout.python}) loads: {patching.loaded_package(checkout.python)}")
    print("undo with: kohya-multiplier unpatch " + str(root))
    return 0


def run_unpatch(args: argparse.Namespace) -> int:
    checkout, revision, patch_name = _checkout(args)
    root = checkout.root
    state = patching.inspect(root, patch_name)
    if state.state == "unpatched":
        print(f"{root} is not patched; nothing to do")
        return 0
    if state.state == "modified":
        raise UserError(f"cannot unpatch: {state.detail}; nothing was changed", file=str(root))
    changed = patching.apply(root, patch_name, reverse=True)
    print(f"unpatched {root} (revision {revision.name}): {', '.join(changed)} restored")
    return 0


def run_status(args: argparse.Namespace) -> int:
    checkout = locate.resolve_checkout(args.directory, given_as="the checkout DIR")
    revision = locate.detect_revision(checkout.root)
    patch_name = patching.PATCH_FOR_LAYOUT.get(revision.layout or "")
    print(f"checkout:  {checkout.root} (from {checkout.source})")
    print(f"revision:  {revision.verdict()}")
    if patch_name is None:
        print("patch:     none fits this revision")
    else:
        state = patching.inspect(checkout.root, patch_name)
        detail = f" ({state.detail})" if state.detail else ""
        print(f"patch:     {state.state} (patches/{patch_name}){detail}")
    dirty = patching.git_dirty_files(checkout.root)
    if dirty is not None:
        print(f"git:       {'clean' if not dirty else 'changed: ' + ', '.join(dirty[:5])}")
    print(f"python:    {checkout.python}")
    print(f"loads:     {patching.loaded_package(checkout.python)}")
    return 0
