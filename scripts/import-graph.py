"""The import graph of kohya_multiplier: circles, imports that run back up a layer, torch in the core.

    python scripts/import-graph.py          # print the findings; exit 1 if there are any
    python scripts/import-graph.py --edges  # also print every module -> module arrow

Every ``import`` and ``from ... import`` in the package counts, also those inside functions (a
lazy import is still an arrow). The layers, from the ground up (a module may import its own layer
and the layers below, never one above):

    0  foundation   errors, rng, progress, run_arithmetic (and the package face)
    1  dataset/     read and resolve
    2  planner/     plan (the plan input, the planner, the jump)
    3  report/      statistics, table, page, picture, schedules, schedule-diff
    4  balance/     targets to multipliers, TOML edits
    5  writer, example, bench
    6  checkouts/   sd-scripts checkouts: locate, fingerprint, patch, the training scripts
    7  sdscripts/, musubi/, runtime/   the trainer adapters (the only layer that may import torch):
                    sd-scripts' and musubi-tuner's, which never import each other, and what both share
    8  commands/, cli, __main__

tests/test_import_graph.py runs it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "kohya_multiplier"
LAYERS = [
    ("foundation", ["errors", "rng", "progress", "run_arithmetic", ""]),
    ("dataset", ["dataset"]),
    ("planner", ["planner"]),
    ("report", ["report"]),
    ("balance", ["balance"]),
    ("writer, example, bench", ["writer", "example", "bench"]),
    ("checkouts", ["checkouts"]),
    ("trainer adapters", ["sdscripts", "musubi", "runtime"]),
    ("commands", ["commands", "cli", "__main__", "patches"]),
]
TORCH_FROM_LAYER = 7
TRAINER_ADAPTERS = ("sdscripts", "musubi")


def layer_of(module: str) -> int:
    """The layer of ``kohya_multiplier.X...`` by its first part under the package."""
    first = module[len(PACKAGE) + 1:].split(".")[0] if module != PACKAGE else ""
    for index, (_, parts) in enumerate(LAYERS):
        if first in parts:
            return index
    raise SystemExit(f"import-graph: {module} is in no layer; add it to LAYERS")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module: str, is_package: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1] if node.level > 1 else base
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """{module: modules of the package it imports}, {module: outside top-level names it imports}."""
    paths = {module_name(p, root): p for p in (root / PACKAGE).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    outside: dict[str, set[str]] = {}
    for module, path in paths.items():
        names = imports_of(path, module, path.name == "__init__.py")
        edges[module] = {n for n in names if n in paths and n != module}
        outside[module] = {n.split(".")[0] for n in names if not n.startswith(PACKAGE)}
    return edges, outside


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def findings(root: Path) -> list[str]:
    edges, outside = graph(root)
    problems = [f"circle: {' -> '.join(c)}" for c in circles(edges)]
    for module in sorted(edges):
        for target in sorted(edges[module]):
            if layer_of(target) > layer_of(module) and not target.startswith(module + "."):
                problems.append(f"runs back up: {module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                                f"({LAYERS[layer_of(target)][0]})")
        trainer = _adapter_of(module)
        for target in sorted(edges[module]):
            other = _adapter_of(target)
            if trainer and other and other != trainer:
                problems.append(f"adapters cross: {module} imports {target} (one trainer's adapter never imports another's)")
        if "torch" in outside[module] and layer_of(module) < TORCH_FROM_LAYER:
            problems.append(f"torch in the core: {module} imports torch")
    return problems


def _adapter_of(module: str) -> str | None:
    first = module[len(PACKAGE) + 1:].split(".")[0]
    return first if first in TRAINER_ADAPTERS else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every arrow too")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    if args.edges:
        edges, _ = graph(root)
        for module in sorted(edges):
            for target in sorted(edges[module]):
                print(f"{module} -> {target}")
    problems = findings(root)
    for line in problems:
        print(line)
    edges, _ = graph(root)
    print(f"{len(edges)} modules, {sum(len(t) for t in edges.values())} arrows, {len(problems)} findings")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
