"""The wrapper options both launchers take out of a training script's arguments."""

from __future__ import annotations

from kohya_multiplier.errors import UserError


def take_options(argv: list[str], names: dict[str, str]) -> tuple[dict[str, str | None], list[str]]:
    """({field: value or None} for each option in ``names`` (spelling -> field), the rest of
    ``argv`` in order). ``--name value`` and ``--name=value`` both count; a missing value is a
    one-line error."""
    found: dict[str, str | None] = {field: None for field in names.values()}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name in names:
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise UserError("needs a value", key=name)
                value = argv[i + 1]
                i += 1
            found[names[name]] = value
        else:
            rest.append(argv[i])
        i += 1
    return found, rest
