"""`kohya-multiplier configure`: remember where sd-scripts is, once, in the user config file."""

from __future__ import annotations

import argparse
from pathlib import Path

import tomlkit

from kohya_multiplier.errors import UserError
from kohya_multiplier.checkouts import locate
from kohya_multiplier.writer import update_lock, write_file


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "configure",
        help="remember the sd-scripts checkout (and its Python) for later commands",
        description=(
            "Write the sd-scripts checkout to the user config file, so that training commands need no "
            "--sd-scripts or KOHYA_SD_SCRIPTS. Without options, show what is configured."
        ),
    )
    parser.add_argument("--sd-scripts", dest="sd_scripts", metavar="DIR", help="the sd-scripts checkout")
    parser.add_argument(
        "--python",
        metavar="PY",
        help="interpreter that runs sd-scripts (default: DIR/venv's python when it exists, else this one)",
    )
    parser.add_argument(
        "--label",
        metavar="NAME",
        help="store DIR as an extra checkout named NAME under [checkouts] (e.g. a second revision for the "
        "integration tests) instead of as the default",
    )
    parser.add_argument(
        "--musubi",
        metavar="PY",
        help="remember the Python of a musubi-tuner environment (one that imports musubi_tuner), for the "
        "integration tests and `scripts --trainer musubi` run elsewhere",
    )
    parser.set_defaults(handler=run)


def _load_document(path: Path) -> tomlkit.TOMLDocument:
    if not path.is_file():
        return tomlkit.document()
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError("cannot parse the kohya-multiplier config: it is not UTF-8 text", file=str(path)) from None
    except Exception as error:  # tomlkit raises several parse error types
        raise UserError(f"cannot parse the kohya-multiplier config: {error}", file=str(path)) from None


def _set_entry(document: tomlkit.TOMLDocument, args: argparse.Namespace, root: Path, python: Path) -> None:
    if args.label:
        checkouts = document.get("checkouts")
        if checkouts is None:
            checkouts = tomlkit.table(is_super_table=True)
            document["checkouts"] = checkouts
        entry = tomlkit.table()
        entry["path"] = str(root)
        if args.python:
            entry["python"] = str(python)
        checkouts[args.label] = entry
    else:
        # Keep the top-level keys before any [table], where TOML needs them.
        document["sd_scripts"] = str(root)
        if args.python:
            document["python"] = str(python)
        elif "python" in document:
            del document["python"]  # an interpreter chosen for another checkout would be wrong here


def _describe(label: str, checkout: locate.Checkout) -> str:
    return f"{label}: {checkout.root} (revision {checkout.revision().verdict()}; python {checkout.python}; from {checkout.source})"


def show() -> int:
    locate.read_user_config()  # showing it needs it: a corrupt file is an error here
    print(f"config file: {locate.user_config_path()}")
    checkouts = locate.configured_checkouts()
    if not checkouts:
        print("no sd-scripts checkout configured: run `kohya-multiplier configure --sd-scripts DIR`")
    for label, checkout in checkouts.items():
        print(_describe(label, checkout))
    _show_musubi()
    return 0


def _show_musubi() -> None:
    from kohya_multiplier.checkouts import musubi

    python = musubi.configured_python()
    if python is None:
        return
    try:
        version = musubi.version_in(python)
    except UserError as error:
        print(f"musubi-tuner: python {python} ({error.message})")
        return
    print(f"musubi-tuner: python {python} (musubi-tuner {version})")


def run(args: argparse.Namespace) -> int:
    if args.musubi:
        if args.sd_scripts or args.python or args.label:
            raise UserError("configure one at a time: --musubi PY, or --sd-scripts DIR", key="--musubi")
        return _configure_musubi(args.musubi)
    if not args.sd_scripts:
        if args.python or args.label:
            raise UserError("--python and --label need --sd-scripts DIR")
        return show()
    root = locate._validate_root(args.sd_scripts, "--sd-scripts")
    revision = locate.require_supported(root)
    python = Path(args.python).expanduser() if args.python else locate.default_python(root)
    if not python.exists():
        raise UserError(f"--python {str(python)!r} does not exist")

    path = _update_config(lambda document: _set_entry(document, args, root, python))
    where = f"[checkouts.{args.label}]" if args.label else "sd_scripts"
    print(f"wrote {where} = {root} (revision {revision.verdict()}; python {python}) to {path}")
    return 0


def _update_config(change) -> Path:
    """Apply ``change`` to the user config document and write it; its path."""
    path = locate.user_config_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the folder of the kohya-multiplier config: {error.strerror or error}",
                        file=str(path.parent)) from None
    with update_lock(str(path)):  # read, change and write as one step: concurrent runs lose no entry
        document = _load_document(path)
        change(document)
        write_file(str(path), tomlkit.dumps(document), key="configure")
    return path


def _configure_musubi(python_given: str) -> int:
    from kohya_multiplier.checkouts import musubi

    python = Path(python_given).expanduser()
    version = musubi.version_in(python)  # a one-line error when that Python has no musubi-tuner
    path = _update_config(lambda document: document.__setitem__("musubi_python", str(python)))
    print(f"wrote musubi_python = {python} (musubi-tuner {version}) to {path}")
    return 0
