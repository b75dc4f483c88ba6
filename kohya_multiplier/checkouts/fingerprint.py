"""What a checkout's hooked code is, read from the code itself. Torch-free, sd-scripts-free.

A revision is judged by the source of the functions and classes that kohya-multiplier hooks or
mirrors (``HOOKED_SYMBOLS``), wherever in ``library/`` they are defined, not by its commit: a zip
download, a fork, a local commit on top of a tested revision or a re-created git history are
recognised for what their code is, and a change to unrelated code does not matter.

Each symbol's source is normalised (trailing spaces, blank lines and whole-line comments dropped)
and hashed; a symbol defined in several files hashes all its definitions. Line numbers and the file
a symbol lives in do not count, so v0.11's move of classes out of train_util.py changes nothing by
itself; what the classes do does.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

# The code the integration layer replaces, subclasses, calls or mirrors (the dry run's bucket
# assignment mirrors BucketManager and make_bucket_resolutions, finetune_metadata.py the metadata reading). "Class.method" names one method.
HOOKED_SYMBOLS: tuple[str, ...] = (
    "ConfigSanitizer",
    "BlueprintGenerator",
    "generate_dataset_group_by_blueprint",
    "generate_dreambooth_subsets_config_by_subdirs",
    "BaseSubsetParams",
    "DreamBoothSubsetParams",
    "prepare_dataset_args",
    "ImageInfo.__init__",
    "BucketManager",
    "make_bucket_resolutions",
    "BucketBatchIndex",
    "BaseDataset.make_buckets",
    "BaseDataset.shuffle_buckets",
    "BaseDataset.set_current_epoch",
    "BaseDataset.register_image",
    "BaseDataset.__len__",
    "BaseDataset.__getitem__",
    "DreamBoothSubset.__init__",
    "DreamBoothDataset.__init__",
    "FineTuningDataset.__init__",  # mirrored by finetune_metadata.py
    "DatasetGroup.__init__",
    "collator_class",
)

MISSING = "missing"


def _normalised_segment(lines: list[str], node: ast.AST) -> str:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    kept = []
    for line in lines[first - 1 : node.end_lineno]:
        stripped = line.rstrip()
        if stripped and not stripped.lstrip().startswith("#"):
            kept.append(stripped)
    return "\n".join(kept)


def _definitions(tree: ast.Module) -> dict[str, list[ast.AST]]:
    """Top-level functions and classes, and the methods of those classes, by (dotted) name."""
    found: dict[str, list[ast.AST]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.setdefault(node.name, []).append(node)
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        found.setdefault(f"{node.name}.{item.name}", []).append(item)
    return found


def _library_files(root: Path) -> list[Path]:
    library = root / "library"
    return sorted(p for p in library.glob("*.py") if p.is_file())


def _stamp(root: Path) -> tuple:
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in _library_files(root))


def fingerprint(root: Path | str) -> dict[str, str]:
    """{symbol: short hash of its normalised source, or "missing"} for every HOOKED_SYMBOLS entry."""
    root = Path(root).resolve()
    return dict(_fingerprint(root, _stamp(root)))


@lru_cache(maxsize=16)
def _fingerprint(root: Path, stamp: tuple) -> tuple[tuple[str, str], ...]:
    wanted = {name.split(".")[0] for name in HOOKED_SYMBOLS}
    segments: dict[str, list[str]] = {}
    for path in _library_files(root):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if not any(f"class {w}" in text or f"def {w}" in text for w in wanted):
            continue  # most files define none of them: skip the parse
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        lines = text.splitlines()
        definitions = _definitions(tree)
        for name in HOOKED_SYMBOLS:
            for node in definitions.get(name, []):
                segments.setdefault(name, []).append(_normalised_segment(lines, node))
    result = []
    for name in HOOKED_SYMBOLS:
        if name not in segments:
            result.append((name, MISSING))
            continue
        digest = hashlib.sha1("\n\0\n".join(sorted(segments[name])).encode("utf-8")).hexdigest()[:16]
        result.append((name, digest))
    return tuple(result)


def differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """Symbols whose code differs between two fingerprints, in HOOKED_SYMBOLS order."""
    return [name for name in HOOKED_SYMBOLS if a.get(name) != b.get(name)]
