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

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kohya_multiplier.errors import UserError, warn_once
from kohya_multiplier.checkouts import fingerprint
from kohya_multiplier.checkouts.known_revisions import TESTED_REVISIONS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_CHECKOUT = "KOHYA_SD_SCRIPTS"
CONFIG_FILE_NAME = "config.toml"

# Code layouts the integration layer knows: "strategies" = v0.10.x and
# main up to v0.11 (train and validation groups, tokenizers in strategy objects, datasets in
# train_util.py); "split" = v0.11.x (the same, with the dataset code split out of train_util.py
# into library/dataset.py, dreambooth_dataset.py, ...); "v0.9" = v0.9.0 and v0.9.1 (one group, the
# tokenizer travels through the dataset params). The hooks find every name where its caller looks
# it up, so a layout only decides the patch file and the revision's rules.
LAYOUT_STRATEGIES = "strategies"
LAYOUT_SPLIT = "split"
LAYOUT_V09 = "v0.9"
LAYOUT_NAMES = {LAYOUT_V09: "v0.9.x", LAYOUT_STRATEGIES: "v0.10.x and main up to v0.11", LAYOUT_SPLIT: "v0.11.x"}


def tested_names() -> str:
    return ", ".join(TESTED_REVISIONS)


def supported_names() -> str:
    return ", ".join(LAYOUT_NAMES.values())


@dataclass(frozen=True)
class Revision:
    """What we know about a checkout's version."""

    name: str  # for messages: "v0.9.1", "main 48d368fa", "a1b2c3d4 (untagged)", "unknown"
    layout: str | None  # LAYOUT_* or None when the code is not one we can patch
    tested: bool  # its hooked code is that of a revision the integration suite runs against
    commit: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    nearest: str | None = None  # the tested revision whose hooked code is closest (equal when tested)
    differs: tuple[str, ...] = ()  # hooked symbols whose code differs from ``nearest``

    @property
    def supported(self) -> bool:
        return self.layout is not None

    def verdict(self) -> str:
        """One line for `status` and `configure`."""
        if not self.supported:
            return f"{self.name} (NOT supported: no code layout kohya-multiplier can hook)"
        layout = LAYOUT_NAMES.get(self.layout, self.layout)
        if self.tested:
            return f"{self.name} ({layout} layout; tested: its hooked code is that of {self.nearest})"
        return f"{self.name} ({layout} layout; untested: {self.difference_text()})"

    def difference_text(self) -> str:
        shown = ", ".join(self.differs[:6]) + (f" and {len(self.differs) - 6} more" if len(self.differs) > 6 else "")
        return f"its hooked code differs from {self.nearest} in {shown}"


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


def read_user_config(*, required: bool = True) -> dict:
    """The user config (``configure`` writes it). Unreadable or corrupt: a one-line error when the
    command needs it (``required``), else a one-line warning and no settings."""
    path = user_config_path()
    try:
        if not path.is_file():
            return {}
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
        return data if isinstance(data, dict) else {}
    except OSError as error:
        reason = error.strerror or str(error)
    except UnicodeDecodeError:
        reason = "it is not UTF-8 text"
    except RecursionError:
        reason = "it is nested too deeply"
    except tomllib.TOMLDecodeError as error:
        reason = str(error)
    if required:
        raise UserError(f"cannot read the kohya-multiplier config: {reason}", file=str(path))
    warn_once(f"{path}: cannot read the kohya-multiplier config ({reason}); going on without it")
    return {}


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


def resolve_checkout(cli_value: str | None = None, *, required: bool = True, given_as: str = "--sd-scripts DIR") -> Checkout | None:
    """The checkout to use: the command line's (``given_as``: how that command takes it) >
    ``KOHYA_SD_SCRIPTS`` > user config; None if none and not required."""
    config = None
    if cli_value:
        source = given_as.removesuffix(" DIR")
        root, python = _validate_root(cli_value, source), None
    elif os.environ.get(ENV_CHECKOUT):
        root, source, python = _validate_root(os.environ[ENV_CHECKOUT], ENV_CHECKOUT), ENV_CHECKOUT, None
    else:
        config = read_user_config(required=required)
        if not config.get("sd_scripts"):
            if required:
                labelled = config.get("checkouts") if isinstance(config.get("checkouts"), dict) else {}
                also = f" (the config has labelled checkouts only: {', '.join(map(str, labelled))})" if labelled else ""
                raise UserError(
                    f"no sd-scripts checkout given: pass {given_as}, set KOHYA_SD_SCRIPTS, "
                    f"or run `kohya-multiplier configure --sd-scripts DIR` once{also}"
                )
            return None
        source = str(user_config_path())
        root = _validate_root(config["sd_scripts"], source)
        python = config.get("python")
    if python is None:
        # An explicit interpreter in the config belongs to the configured checkout only.
        config = read_user_config(required=required) if config is None else config
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
    config = read_user_config(required=False)
    checkouts = config.get("checkouts")
    for label, entry in (checkouts if isinstance(checkouts, dict) else {}).items():
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


def detect_layout(root: Path) -> str | None:
    """Which code layout the checkout has, read from the files themselves (works without .git)."""
    try:
        config_util = (root / "library" / "config_util.py").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if "class ConfigSanitizer" not in config_util or "SUBSET_ASCENDABLE_SCHEMA" not in config_util:
        return None
    if "validation_split" in config_util and (root / "library" / "strategy_base.py").is_file():
        dataset_module = root / "library" / "dataset.py"
        if dataset_module.is_file() and "class BaseDataset" in dataset_module.read_text(encoding="utf-8", errors="replace"):
            return LAYOUT_SPLIT
        return LAYOUT_STRATEGIES
    # v0.9.x: tokenizers pass through the dataset params; v0.8.x lacks alpha_mask and replays
    # epochs differently, which the integration layer does not handle.
    if "alpha_mask" in config_util and "tokenizer" in config_util:
        return LAYOUT_V09
    return None


def detect_revision(root: Path) -> Revision:
    """Judge the checkout by its hooked code (fingerprint.py); git only names it."""
    root = Path(root)
    layout = detect_layout(root)
    commit = _git(root, "rev-parse", "HEAD") if (root / ".git").exists() else None
    tags = tuple(t for t in (_git(root, "tag", "--points-at", "HEAD") or "").split() if t) if commit else ()
    own_name = tags[0] if tags else (commit[:8] if commit else "without git")
    if layout is None:
        return Revision(name=own_name if commit else "unknown", layout=None, tested=False, commit=commit, tags=tags)
    prints = fingerprint.fingerprint(root)
    for name, entry in TESTED_REVISIONS.items():
        if entry["symbols"] == prints:
            same_commit = commit is None or commit == entry["commit"]
            shown = name if same_commit else f"{name} code at {own_name}"
            return Revision(name=shown, layout=layout, tested=True, commit=commit, tags=tags, nearest=name)
    candidates = [n for n, e in TESTED_REVISIONS.items() if e["layout"] == layout] or list(TESTED_REVISIONS)
    nearest = min(candidates, key=lambda n: len(fingerprint.differences(prints, TESTED_REVISIONS[n]["symbols"])))
    differs = tuple(fingerprint.differences(prints, TESTED_REVISIONS[nearest]["symbols"]))
    return Revision(name=own_name, layout=layout, tested=False, commit=commit, tags=tags, nearest=nearest, differs=differs)


def require_supported(root: Path) -> Revision:
    """The checkout's revision; a one-line UserError if the integration layer cannot hook it."""
    revision = detect_revision(root)
    if not revision.supported:
        raise UserError(
            f"sd-scripts at {str(root)!r} is revision {revision.name}, which kohya-multiplier does not support "
            f"(supported: {supported_names()})"
        )
    if not revision.tested:
        warn_once(
            f"sd-scripts {revision.name} is not a tested revision ({tested_names()}): {revision.difference_text()}; "
            "training goes ahead, and stops at start if a hook does not take effect"
        )
    return revision
