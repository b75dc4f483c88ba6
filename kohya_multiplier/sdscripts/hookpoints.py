"""Replace a name of sd-scripts where the code that uses it looks it up, and remember where.

sd-scripts' v0.11 split moved classes and functions out of ``library/train_util.py`` and left
re-export shims behind: a name replaced on train_util alone is no longer seen by callers that
import it from its new home. So every hook is placed by one of two rules, and the self-check
(``selfcheck.py``) later asks the same places whether the hook is still there:

- ``in_caller_globals``: the name is looked up in the globals of a known caller (a function or
  method of sd-scripts), e.g. the dataset classes that ``generate_dataset_group_by_blueprint``
  builds; the replacement goes into exactly that namespace;
- ``everywhere``: the name is looked up as an attribute of a module by scripts we have not
  imported yet (``train_util.collator_class``, ``dataset_util.collator_class``,
  ``accelerator_setup.prepare_dataset_args``); the replacement goes into the module that defines
  the original and into every loaded ``library`` module that re-exports it by name, so later
  ``from ... import`` statements pick it up too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

SD_SCRIPTS_PACKAGE = "library"


@dataclass
class Hook:
    """One replacement: what it is for (for messages), and the namespaces it was put into."""

    purpose: str
    name: str
    original: Any
    replacement: Any
    namespaces: list[tuple[str, dict]] = field(default_factory=list)  # (module name, its dict)
    rule: str = "everywhere"

    def missing_in(self) -> list[str]:
        """Namespaces that no longer hold the replacement, plus loaded modules and scripts that still
        hold the original (a caller there would bypass the hook)."""
        missing = [name for name, namespace in self.namespaces if namespace.get(self.name) is not self.replacement]
        if self.rule == "everywhere":
            for module_name, namespace in _candidate_namespaces():
                if namespace.get(self.name) is self.original and module_name not in missing:
                    missing.append(module_name)
        if not self.namespaces and not missing:
            missing.append(f"{self.name} (found nowhere)")
        return missing


def _candidate_namespaces() -> list[tuple[str, dict]]:
    """Loaded sd-scripts library modules and the running training script (``__main__``)."""
    found = []
    for name, module in list(sys.modules.items()):
        if module is None:
            continue
        if name == SD_SCRIPTS_PACKAGE or name.startswith(SD_SCRIPTS_PACKAGE + ".") or name in ("__main__", "__mp_main__"):
            namespace = getattr(module, "__dict__", None)
            if isinstance(namespace, dict):
                found.append((name, namespace))
    return found


def everywhere(purpose: str, name: str, original: Any, replacement: Any) -> Hook:
    hook = Hook(purpose, name, original, replacement, rule="everywhere")
    defining = getattr(original, "__module__", None)
    seen = set()
    targets = []
    if defining in sys.modules:
        targets.append((defining, vars(sys.modules[defining])))
    targets += _candidate_namespaces()
    for module_name, namespace in targets:
        if id(namespace) in seen or namespace.get(name) is not original:
            continue
        seen.add(id(namespace))
        namespace[name] = replacement
        hook.namespaces.append((module_name, namespace))
    return hook


def in_caller_globals(purpose: str, name: str, caller: Callable, replacement: Any) -> Hook:
    """Replace ``name`` in the globals where ``caller`` (a function or method) looks it up."""
    function = getattr(caller, "__func__", caller)
    namespace = function.__globals__
    original = namespace.get(name)
    hook = Hook(purpose, name, original, replacement, rule="in_caller_globals")
    if original is not None:
        namespace[name] = replacement
        hook.namespaces.append((namespace.get("__name__", "?"), namespace))
    return hook

