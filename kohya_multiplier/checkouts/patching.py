"""Apply, remove and inspect the patches in ``patches/`` on an sd-scripts checkout. Torch-free.

Each patch is a small unified diff. Application is all or nothing: every hunk of every file is
located first (exact context, at the stated line or anywhere else once), and files are written
only when all of them fit.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kohya_multiplier.errors import UserError
from kohya_multiplier.checkouts import locate

# Code layout (locate.LAYOUT_*) -> patch file shipped in the package data (kohya_multiplier.patches).
PATCH_FOR_LAYOUT = {
    locate.LAYOUT_STRATEGIES: "sd-scripts-main.diff",
    locate.LAYOUT_SPLIT: "sd-scripts-v0.11.1.diff",
    locate.LAYOUT_V09: "sd-scripts-v0.9.1.diff",
}

_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True)
class Hunk:
    old_start: int  # 1-based line of the first old line
    old: tuple[str, ...]  # lines before (context and removed), without newlines
    new: tuple[str, ...]  # lines after (context and added)


@dataclass(frozen=True)
class FilePatch:
    path: str  # relative to the checkout root
    hunks: tuple[Hunk, ...]


def patch_text(name: str) -> str:
    """A patch from the source tree's patches/ (running from a checkout) or the installed package data."""
    source = Path(__file__).resolve().parents[2] / "patches" / name
    if source.is_file():
        return source.read_text(encoding="utf-8")
    return resources.files("kohya_multiplier.patches").joinpath(name).read_text(encoding="utf-8")


def parse_unified_diff(text: str) -> list[FilePatch]:
    files: list[FilePatch] = []
    path = None
    hunks: list[Hunk] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("+++ "):
            if path is not None:
                files.append(FilePatch(path, tuple(hunks)))
            path = line[4:].split("\t")[0]
            path = path[2:] if path.startswith("b/") else path
            hunks = []
        elif line.startswith("@@"):
            match = _HUNK_HEADER.match(line)
            if not match:
                raise ValueError(f"bad hunk header: {line!r}")
            old_count = int(match.group(2) or 1)
            new_count = int(match.group(4) or 1)
            old, new = [], []
            i += 1
            while i < len(lines) and (len(old) < old_count or len(new) < new_count):
                body = lines[i]
                tag, content = (body[:1], body[1:]) if body else (" ", "")
                if tag in (" ", "-"):
                    old.append(content)
                if tag in (" ", "+"):
                    new.append(content)
                i += 1
            hunks.append(Hunk(int(match.group(1)), tuple(old), tuple(new)))
            continue
        i += 1
    if path is not None:
        files.append(FilePatch(path, tuple(hunks)))
    return files


def _find(lines: list[str], block: tuple[str, ...], near: int) -> int | None:
    """Index where ``block`` starts: at ``near`` if it matches there, else its only other place."""
    size = len(block)
    if 0 <= near <= len(lines) - size and tuple(lines[near : near + size]) == block:
        return near
    places = [i for i in range(len(lines) - size + 1) if tuple(lines[i : i + size]) == block]
    return places[0] if len(places) == 1 else None


@dataclass(frozen=True)
class PatchState:
    state: str  # "patched", "unpatched" or "modified"
    patch_name: str | None
    detail: str = ""


def _read_lines(root: Path, relative: str) -> tuple[list[str], bool]:
    text = (root / relative).read_text(encoding="utf-8")
    return text.splitlines(), text.endswith("\n")


def _is_applied(lines: list[str], hunk: Hunk) -> bool:
    return _find(lines, hunk.new, hunk.old_start - 1) is not None and hunk.new != hunk.old


def inspect(root: Path, patch_name: str) -> PatchState:
    applied = unapplied = 0
    for file_patch in parse_unified_diff(patch_text(patch_name)):
        try:
            lines, _ = _read_lines(root, file_patch.path)
        except OSError as error:
            return PatchState("modified", patch_name, f"{file_patch.path}: {error.strerror or error}")
        for hunk in file_patch.hunks:
            if _is_applied(lines, hunk):
                applied += 1
            elif _find(lines, hunk.old, hunk.old_start - 1) is not None:
                unapplied += 1
            else:
                return PatchState("modified", patch_name, f"{file_patch.path} near line {hunk.old_start} differs from the patch's context")
    if applied and not unapplied:
        return PatchState("patched", patch_name)
    if unapplied and not applied:
        return PatchState("unpatched", patch_name)
    return PatchState("modified", patch_name, "the patch is partly applied")


def apply(root: Path, patch_name: str, *, reverse: bool = False) -> list[str]:
    """Apply (or remove) the patch; all hunks are located before any file is written. Returns the files changed."""
    planned: list[tuple[Path, str]] = []
    for file_patch in parse_unified_diff(patch_text(patch_name)):
        lines, trailing_newline = _read_lines(root, file_patch.path)
        offset = 0
        for hunk in file_patch.hunks:
            before, after = (hunk.new, hunk.old) if reverse else (hunk.old, hunk.new)
            at = _find(lines, before, hunk.old_start - 1 + offset)
            if at is None:
                raise UserError(
                    f"{file_patch.path} near line {hunk.old_start} does not match the patch {patch_name}; nothing was changed",
                    file=str(root),
                )
            lines[at : at + len(before)] = list(after)
            offset += len(after) - len(before)
        planned.append((root / file_patch.path, "\n".join(lines) + ("\n" if trailing_newline else "")))
    from kohya_multiplier.writer import OutputFiles

    # every patched file renamed into place together at the end: an error leaves the checkout as it was
    with OutputFiles({str(path): str(path) for path, _ in planned}, None) as outputs:
        for path, text in planned:
            outputs.write(str(path), text.encode("utf-8"))
    return [str(path.relative_to(root)) for path, _ in planned]


def git_dirty_files(root: Path) -> list[str] | None:
    """Files git reports as changed (ignored files excluded); None when the checkout has no git."""
    if not (root / ".git").exists():
        return None
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return [line[3:] for line in result.stdout.splitlines() if line.strip()]


def loaded_package(python: Path) -> str:
    """Which kohya-multiplier the checkout's interpreter would import, as one line."""
    code = "import kohya_multiplier as k; print(k.__version__, k.__file__)"
    try:
        result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return f"cannot run {python}: {error}"
    if result.returncode != 0:
        return f"not importable by {python} (install kohya-multiplier into that environment)"
    version, _, location = result.stdout.strip().partition(" ")
    return f"kohya-multiplier {version} from {Path(location).parent}"
