"""Where the user's sd-scripts checkout is, which revision it is, and which Python runs it.

Torch-free and sd-scripts-free on purpose: `configure`, the test suite's skip logic and the
launcher's first checks import this module before anything heavy.

Resolution order for the checkout, everywhere: ``--sd-scripts DIR`` > ``KOHYA_SD_SCRIPTS`` > the user
config file written by ``kohya-multiplier configure`` (``$XDG_CONFIG_HOME/kohya-multiplier/config.toml``,
default ``~/.config/kohya-multiplier/config.toml``)::

    sd_scripts = "/home/me/sd-scripts"
    python = "/home/me/sd-scripts/venv/bin/python"   # optional

    [checkouts."v0.9.1"]                              # optional extra checkouts, e.g. for tests
    path = "/home/me/sd-scripts-v0.9.1"
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kohya_multiplier.errors import UserError, warn_once

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_CHECKOUT = "KOHYA_SD_SCRIPTS"
CONFIG_FILE_NAME = "config.toml"

# Code layouts the integration layer knows. Within a layout the names and call shapes it patches
# are the same (see SD_SCRIPTS_NOTES.md): "strategies" = v0.10.x and main (returns train and
# validation groups, tokenizers live in strategy objects); "v0.9" = v0.9.0 and v0.9.1 (one group,
# the tokenizer travels through the dataset params).
LAYOUT_STRATEGIES = "strategies"
LAYOUT_V09 = "v0.9"

# Revisions the integration suite runs against (full commit hash -> name).
TESTED_COMMITS = {
    "48d368fa557731ad0488c07304dfeba8c07910eb": "main 48d368fa",
    "8f4ee8fc343b047965cd8976fca65c3a35b7593a": "v0.9.1",
}
# A descendant of this commit on main counts as tested main (newer main is what users run).
MAIN_BASELINE = "48d368fa557731ad0488c07304dfeba8c07910eb"

# Git blob hashes of library/train_util.py, for checkouts without .git (a zip download): name.
KNOWN_TRAIN_UTIL_BLOBS = {
    "100ef475dda4904efde3d45fc66f619f58f9b09c": "v0.9.0/v0.9.1",
    "a19006093cc01f9f6af23655976971f05a5b5208": "v0.10.0",
    "d8577b9d7ff0787cf98225d8c6690aac098afd7f": "v0.10.1/main 48d368fa",
}
TESTED_TRAIN_UTIL_BLOBS = {"100ef475dda4904efde3d45fc66f619f58f9b09c", "d8577b9d7ff0787cf98225d8c6690aac098afd7f"}


@dataclass(frozen=True)
class Revision:
    """What we know about a checkout's version."""

    name: str  # for messages: "v0.9.1", "main 48d368fa", "a1b2c3d4 (untagged)", "unknown"
    layout: str | None  # LAYOUT_* or None when the code is not one we can patch
    tested: bool  # one of the revisions the integration suite runs against
    commit: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def supported(self) -> bool:
        return self.layout is not None


@dataclass(frozen=True)
class Checkout:
    root: Path
    python: Path  # interpreter that runs sd-scripts
    source: str  # where the path came from, for messages

    def revision(self) -> Revision:
        return detect_revision(self.root)


# --- user config file ----------------------------------------------------------------------------


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "kohya-multiplier" / CONFIG_FILE_NAME


def read_user_config() -> dict:
    path = user_config_path()
    if not path.is_file():
        return {}
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise UserError(f"cannot read the kohya-multiplier config: {error}", file=str(path)) from None


def default_python(root: Path) -> Path:
    """``<checkout>/venv``'s interpreter (sd-scripts' documented set-up) if it exists, else this one."""
    for candidate in (root / "venv" / "bin" / "python", root / "venv" / "Scripts" / "python.exe"):
        if candidate.exists():
            return candidate
    return Path(sys.executable)


# --- resolution ----------------------------------------------------------------------------------


def _validate_root(path: str | os.PathLike, source: str) -> Path:
    root = Path(os.path.expanduser(str(path))).resolve()
    if not root.is_dir():
        raise UserError(f"sd-scripts checkout {str(path)!r} (from {source}) is not a directory")
    if not (root / "library" / "train_util.py").is_file():
        raise UserError(f"{str(root)!r} (from {source}) is not an sd-scripts checkout: library/train_util.py is missing")
    return root


def resolve_checkout(cli_value: str | None = None, *, required: bool = True) -> Checkout | None:
    """The checkout to use: ``--sd-scripts`` > ``KOHYA_SD_SCRIPTS`` > user config; None if none and not required."""
    config = None
    if cli_value:
        root, source, python = _validate_root(cli_value, "--sd-scripts"), "--sd-scripts", None
    elif os.environ.get(ENV_CHECKOUT):
        root, source, python = _validate_root(os.environ[ENV_CHECKOUT], ENV_CHECKOUT), ENV_CHECKOUT, None
    else:
        config = read_user_config()
        if not config.get("sd_scripts"):
            if required:
                raise UserError(
                    "no sd-scripts checkout given: pass --sd-scripts DIR, set KOHYA_SD_SCRIPTS, "
                    "or run `kohya-multiplier configure --sd-scripts DIR` once"
                )
            return None
        source = str(user_config_path())
        root = _validate_root(config["sd_scripts"], source)
        python = config.get("python")
    if python is None:
        # An explicit interpreter in the config belongs to the configured checkout only.
        config = read_user_config() if config is None else config
        if config.get("python") and config.get("sd_scripts") and Path(config["sd_scripts"]).expanduser().resolve() == root:
            python = config["python"]
    return Checkout(root=root, python=Path(python) if python else default_python(root), source=source)


def configured_checkouts() -> dict[str, Checkout]:
    """Every checkout the environment and the user config name, keyed by a label (tests use this).

    The default checkout (env var or ``sd_scripts``) is labelled ``"default"``; extra ones keep their
    table name from ``[checkouts]``. Missing directories are left out.
    """
    found: dict[str, Checkout] = {}
    try:
        default = resolve_checkout(required=False)
    except UserError:
        default = None
    if default is not None:
        found["default"] = default
    config = read_user_config()
    for label, entry in (config.get("checkouts") or {}).items():
        path = entry.get("path") if isinstance(entry, dict) else entry
        if not path:
            continue
        try:
            root = _validate_root(path, f"[checkouts.{label}]")
        except UserError:
            continue
        python = entry.get("python") if isinstance(entry, dict) else None
        found[str(label)] = Checkout(root=root, python=Path(python) if python else default_python(root), source=str(user_config_path()))
    return found


# --- revision detection --------------------------------------------------------------------------


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _git_blob_hash(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def detect_layout(root: Path) -> str | None:
    """Which code layout the checkout has, read from the files themselves (works without .git)."""
    try:
        config_util = (root / "library" / "config_util.py").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if "class ConfigSanitizer" not in config_util or "SUBSET_ASCENDABLE_SCHEMA" not in config_util:
        return None
    if "validation_split" in config_util and (root / "library" / "strategy_base.py").is_file():
        return LAYOUT_STRATEGIES
    # v0.9.x: tokenizers pass through the dataset params; v0.8.x lacks alpha_mask and replays
    # epochs differently, which the integration layer does not handle.
    if "alpha_mask" in config_util and "tokenizer" in config_util:
        return LAYOUT_V09
    return None


def detect_revision(root: Path) -> Revision:
    root = Path(root)
    layout = detect_layout(root)
    commit = _git(root, "rev-parse", "HEAD") if (root / ".git").exists() else None
    if commit:
        tags = tuple(t for t in (_git(root, "tag", "--points-at", "HEAD") or "").split() if t)
        if commit in TESTED_COMMITS:
            name, tested = TESTED_COMMITS[commit], True
        else:
            descends = _git(root, "merge-base", "--is-ancestor", MAIN_BASELINE, "HEAD") is not None
            name = tags[0] if tags else f"{commit[:8]}" + (" (main after 48d368fa)" if descends else " (untagged)")
            tested = descends and layout == LAYOUT_STRATEGIES
        return Revision(name=name, layout=layout, tested=tested, commit=commit, tags=tags)
    blob = _git_blob_hash(root / "library" / "train_util.py")
    name = KNOWN_TRAIN_UTIL_BLOBS.get(blob or "", "unknown (no .git, unrecognised library/train_util.py)")
    return Revision(name=name, layout=layout, tested=blob in TESTED_TRAIN_UTIL_BLOBS)


def require_supported(root: Path) -> Revision:
    """The checkout's revision; a one-line UserError if the integration layer cannot patch it."""
    revision = detect_revision(root)
    if not revision.supported:
        raise UserError(
            f"sd-scripts at {str(root)!r} is revision {revision.name}, which kohya-multiplier does not support "
            "(supported: main 48d368fa or newer, v0.10.x, v0.9.0/v0.9.1)"
        )
    if not revision.tested:
        warn_once(
            f"sd-scripts revision {revision.name} is not one the integration tests run against "
            f"(main 48d368fa, v0.9.1); its code layout ({revision.layout}) is supported, so training goes ahead"
        )
    return revision
