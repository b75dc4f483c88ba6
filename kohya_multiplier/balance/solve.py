"""The arithmetic behind ``kohya-multiplier balance``: targets in, multipliers out.

Pure functions on plain numbers; no file I/O. Three kinds of target, one per subset at most:

- a fixed number of images per epoch: ``--per-epoch N`` for every training subset, or
  ``images_per_epoch = N`` in a subset's TOML table (which wins for that subset);
  with ``group_by="parent"`` the subsets under one parent folder share one target, and every
  image of the group gets the same multiplier (``N / images in the group``);
- a ratio: a set of subsets shares a fixed fraction of each epoch (all images trained per epoch,
  over every dataset), e.g. regularization images at 10 %; inside the set every image gets the
  same multiplier, so all of them rotate through training at one rate;
- nothing: the subset keeps its multiplier, except a regularization subset without a multiplier of
  its own in a dataset that uses multipliers: its multiplier is automatic and follows the training
  images of its dataset (``multipliers.auto_regularization_multipliers``:
  ``max(0, T - R_explicit) / R_auto``), as ``plan`` and training compute it.

Excluded subsets (multiplier or num_repeats <= 0) stay excluded unless they have a target of
their own (``images_per_epoch``) or are picked by a ratio selector.

Ratios depend on the epoch total, which depends on the ratios (and automatic regularization
multipliers depend on the training subsets, which may be in a ratio set): every subset's images per
epoch is an affine function of the epoch total E, so E = c0 + c1 * E is solved exactly.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.multipliers import auto_regularization_rate

GROUP_BY = ("subset", "parent")


@dataclass(frozen=True)
class BalanceSubset:
    """One subset as balance sees it."""

    dataset: int  # 0-based dataset index
    index: int  # 0-based subset index inside the dataset
    name: str  # shown in tables, matched by --ratio selectors
    images: int  # number of images in the subset
    multiplier: float  # current effective multiplier
    is_reg: bool = False
    explicit: bool = True  # has a multiplier of its own or inherited (False: num_repeats, or automatic)
    num_repeats: int = 1
    group: str = ""  # subject key for group_by="parent" (the parent folder); "" = the subset itself
    images_per_epoch: float | None = None  # per-subset target from the TOML
    aliases: tuple[str, ...] = ()  # further names --ratio selectors match (e.g. the image_dir)


@dataclass(frozen=True)
class Ratio:
    """A set of subsets sharing ``fraction`` of every epoch; with ``points`` ((epoch, fraction),
    ...), a share that changes over training, linear between the points (``fraction``: the first)."""

    selectors: tuple[str, ...]
    fraction: float
    text: str = ""
    points: tuple[tuple[int, float], ...] = ()

    def at(self, epoch: int) -> "Ratio":
        """This ratio's share in ``epoch``."""
        if not self.points:
            return self
        from kohya_multiplier.dataset.schedules import Schedule

        share = Schedule(tuple(e for e, _ in self.points), tuple(f for _, f in self.points)).at(epoch)
        return Ratio(self.selectors, share, self.text)


@dataclass
class Assignment:
    """What balance decided for one subset."""

    multiplier: float  # new multiplier
    images_per_epoch: float  # expected images per epoch with it (m x N)
    rule: str  # why: "per-epoch 25", "images_per_epoch 25", "ratio reg=10%", "unchanged", "auto"
    changed: bool = False  # multiplier differs from the old one (to be written)
    target: float | None = None  # the images_per_epoch target, when there is one (for the TOML comment)


def parse_ratio(text: str) -> Ratio:
    """Parse ``SELECTOR[,SELECTOR...]=FRACTION`` where FRACTION is ``0.1`` or ``10%``, or
    ``SELECTOR=EPOCH:FRACTION,EPOCH:FRACTION,...`` for a share that changes over training."""
    if "=" not in text:
        raise UserError(f"expected SELECTOR=FRACTION (e.g. reg=10%), got {text!r}", key="--ratio")
    left, _, right = text.rpartition("=")
    selectors = tuple(s.strip() for s in left.split(",") if s.strip())
    if not selectors:
        raise UserError(f"no subset selector before '=' in {text!r}", key="--ratio")
    value = right.strip()
    if ":" in value:  # a share that changes: EPOCH:FRACTION,EPOCH:FRACTION,...
        points = []
        for part in value.split(","):
            epoch_text, _, share_text = part.partition(":")
            if not epoch_text.strip().isdigit() or not 1 <= int(epoch_text) <= 10_000:
                raise UserError(f"expected EPOCH:FRACTION points (e.g. reg=1:10%,20:2%), got {part.strip()!r} in {text!r}", key="--ratio")
            if points and int(epoch_text) <= points[-1][0]:
                raise UserError(f"epochs must increase in {text!r}", key="--ratio")
            points.append((int(epoch_text), _fraction(share_text.strip(), text)))
        return Ratio(selectors, points[0][1], text, tuple(points))
    return Ratio(selectors, _fraction(value, text), text)


def _fraction(value: str, text: str) -> float:
    """``0.1`` or ``10%``, above 0 and below 1."""
    percent = value.endswith("%")
    try:
        fraction = float(value[:-1] if percent else value)
    except ValueError:
        raise UserError(f"fraction {value!r} is not a number (use 0.1 or 10%)", key="--ratio") from None
    if percent:
        fraction /= 100.0
    if not math.isfinite(fraction) or not 0.0 < fraction < 1.0:
        raise UserError(f"fraction in {text!r} must be above 0 and below 1 (0 %-100 %)", key="--ratio")
    return fraction


def positive_target(value: object, *, key: str, where: str | None = None, file: str | None = None) -> float:
    """Validate an images-per-epoch target: a finite number above 0 and at most
    ``limits.MAX_IMAGES_PER_EPOCH``. A target of 0 or below is bad input (a subset that should not
    train takes ``multiplier = 0``), not a config that then fails to plan."""
    from kohya_multiplier.dataset.limits import MAX_IMAGES_PER_EPOCH

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"must be a number of images, got {value!r}", file=file, where=where, key=key)
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise UserError(f"must be a finite number of images above 0, got {value!r} "
                        "(to leave a subset out, set its multiplier to 0)", file=file, where=where, key=key)
    if number > MAX_IMAGES_PER_EPOCH:
        raise UserError(f"must be at most {MAX_IMAGES_PER_EPOCH:,} images per epoch, got {value!r}",
                        file=file, where=where, key=key)
    return number


def matches(subset: BalanceSubset, selector: str) -> bool:
    """Does a --ratio selector pick this subset? ``reg``/``train`` pick by kind; otherwise the
    subset's name, group or aliases, exactly or as a shell glob (``style_*``)."""
    if selector == "reg":
        return subset.is_reg
    if selector == "train":
        return not subset.is_reg
    names = (subset.name, subset.group, *subset.aliases)
    return any(n and (n == selector or fnmatch.fnmatchcase(n, selector)) for n in names)


def tidy_multiplier(target: float, images: int) -> float:
    """The shortest decimal m with m x images equal to ``target`` within 1e-9 images.

    ``25 / 200`` gives 0.125 and ``25 / 300`` gives 0.08333333333 rather than 17 digits, while
    the planner still sees the intended count (it rounds fractional demand only within 1e-9)."""
    if images <= 0 or target <= 0:
        return 0.0
    exact = target / images
    for digits in range(1, 18):
        candidate = float(f"{exact:.{digits}g}")
        if abs(candidate * images - target) <= 1e-9:
            return candidate
    return exact


def _solve_epoch_total(total_of: Callable[[float], float], has_ratios: bool) -> float:
    """The epoch total E with E = total_of(E). ``total_of`` is piecewise affine and increasing
    (automatic regularization clips at 0); Newton steps on the local slope land on the exact
    piece in a few steps."""
    if not has_ratios:
        return total_of(0.0)
    estimate = 0.0
    for _ in range(64):
        value = total_of(estimate)
        slope = total_of(estimate + 1.0) - value
        if slope >= 1.0 - 1e-12:
            raise UserError("ratio sets leave no room for the other subsets (the shares add up to 100 % or more)",
                            key="--ratio")
        fixed = value - slope * estimate
        if fixed <= 0 and estimate == 0.0:
            raise UserError("ratio sets need other subsets with images per epoch to take a share of", key="--ratio")
        following = fixed / (1.0 - slope)
        if abs(following - estimate) <= 1e-9 * max(1.0, following):
            return following
        estimate = following
    return estimate


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


@dataclass
class _Targets:
    """What kind of target each subset has, and what it needs to be solved."""

    kind: list[str]  # "fixed" | "ratio" | "keep" | "auto"
    fixed_rule: list[str]
    fixed_target: list[float | None]
    ratio_of: list[int | None]  # index of the subset's ratio set
    group_images: dict[int, int] = field(default_factory=dict)  # --per-epoch subset -> images of its group

    @classmethod
    def empty(cls, n: int) -> "_Targets":
        return cls([""] * n, [""] * n, [None] * n, [None] * n)


def solve(
    subsets: Sequence[BalanceSubset],
    *,
    per_epoch: float | None = None,
    ratios: Sequence[Ratio] = (),
    group_by: str = "subset",
) -> list[Assignment]:
    """New multipliers for ``subsets`` (same order), meeting every target exactly."""
    if group_by not in GROUP_BY:
        raise UserError(f"must be one of {', '.join(GROUP_BY)}, got {group_by!r}", key="--group-by")
    if per_epoch is not None:
        per_epoch = positive_target(per_epoch, key="--per-epoch")
    targets = _Targets.empty(len(subsets))
    _claim_ratio_sets(subsets, ratios, targets)
    groups = _claim_fixed_targets(subsets, per_epoch, group_by, targets)
    _mark_auto_regularization(subsets, targets)
    _share_per_epoch(subsets, groups, per_epoch, targets)
    ratio_images = [sum(subsets[i].images for i in range(len(subsets)) if targets.ratio_of[i] == r)
                    for r in range(len(ratios))]

    def contributions(epoch_total: float) -> list[float]:
        return _contributions(subsets, ratios, targets, ratio_images, epoch_total)

    epoch_total = _solve_epoch_total(lambda total: sum(contributions(total)), bool(ratios))
    return _assignments(subsets, ratios, targets, per_epoch, contributions(epoch_total))


def _claim_ratio_sets(subsets: Sequence[BalanceSubset], ratios: Sequence[Ratio], targets: _Targets) -> None:
    """Ratio sets first: they claim subsets (each subset at most one set, and no TOML target)."""
    total_fraction = 0.0
    for r_index, ratio in enumerate(ratios):
        members = [i for i, s in enumerate(subsets) if any(matches(s, sel) for sel in ratio.selectors)]
        if not members:
            raise UserError(f"{ratio.text or ','.join(ratio.selectors)!r} matches no subset", key="--ratio")
        for i in members:
            if targets.ratio_of[i] is not None:
                other = ratios[targets.ratio_of[i]]
                raise UserError(
                    f"subset {subsets[i].name!r} is in two ratio sets ({other.text!r} and {ratio.text!r})",
                    key="--ratio",
                )
            if subsets[i].images_per_epoch is not None:
                raise UserError(
                    f"subset {subsets[i].name!r} has images_per_epoch in the TOML and is also in the ratio set "
                    f"{ratio.text!r}; give it one target",
                    key="--ratio",
                )
            targets.ratio_of[i] = r_index
            targets.kind[i] = "ratio"
        total_fraction += ratio.fraction
    if total_fraction >= 1.0 - 1e-12:
        raise UserError(f"ratio sets take {total_fraction:.0%} of the epoch; together they must stay below 100 %",
                        key="--ratio")


def _claim_fixed_targets(subsets, per_epoch: float | None, group_by: str, targets: _Targets) -> dict:
    """Fixed targets: images_per_epoch per subset, then --per-epoch for the remaining training
    subsets; the rest keep their multiplier. Returns the --per-epoch subsets by subject
    ((dataset, group) -> subset indices)."""
    groups: dict[tuple[int, str], list[int]] = {}
    for i, s in enumerate(subsets):
        if targets.kind[i]:
            continue
        if s.images_per_epoch is not None:
            targets.kind[i] = "fixed"
            targets.fixed_target[i] = s.images_per_epoch
            targets.fixed_rule[i] = f"images_per_epoch {_num(s.images_per_epoch)}"
        elif per_epoch is not None and not s.is_reg and s.multiplier > 0:
            targets.kind[i] = "fixed"
            targets.fixed_rule[i] = f"per-epoch {_num(per_epoch)}"
            key = (s.dataset, s.group or f"\0{s.index}") if group_by == "parent" else (s.dataset, f"\0{s.index}")
            groups.setdefault(key, []).append(i)
        else:
            targets.kind[i] = "keep"
    return groups


def _mark_auto_regularization(subsets, targets: _Targets) -> None:
    """Automatic regularization multipliers: in a dataset that uses multipliers after balancing."""
    kind = targets.kind
    for i, s in enumerate(subsets):
        if kind[i] == "keep" and s.is_reg and not s.explicit and s.num_repeats >= 1:
            if any(subsets[j].dataset == s.dataset and (subsets[j].explicit or kind[j] in ("fixed", "ratio"))
                   for j in range(len(subsets))):
                kind[i] = "auto"


def _share_per_epoch(subsets, groups: dict, per_epoch: float | None, targets: _Targets) -> None:
    """--per-epoch: one target per subject (a group of subsets shares it, same multiplier for all)."""
    for (dataset, key), members in groups.items():
        total_images = sum(subsets[i].images for i in members)
        for i in members:
            share = per_epoch * subsets[i].images / total_images if total_images else 0.0
            targets.fixed_target[i] = share
            targets.group_images[i] = total_images
            if len(members) > 1:
                targets.fixed_rule[i] = f"per-epoch {_num(per_epoch)} shared by {key}"


def _contributions(subsets, ratios: Sequence[Ratio], targets: _Targets, ratio_images: list[int],
                   epoch_total: float) -> list[float]:
    """Each subset's images per epoch when the epoch holds ``epoch_total`` images."""
    out = [0.0] * len(subsets)
    for i, s in enumerate(subsets):
        kind = targets.kind[i]
        if kind == "fixed":
            out[i] = float(targets.fixed_target[i])
        elif kind == "keep":
            out[i] = max(s.multiplier, 0.0) * s.images
        elif kind == "ratio":
            r = targets.ratio_of[i]
            out[i] = ratios[r].fraction * epoch_total * s.images / ratio_images[r] if ratio_images[r] else 0.0
    for i, m in _auto_regularization_rates(subsets, targets.kind, lambda i: out[i]).items():
        out[i] = m * subsets[i].images
    return out


def _assignments(subsets, ratios: Sequence[Ratio], targets: _Targets, per_epoch: float | None,
                 amounts: list[float]) -> list[Assignment]:
    """The multipliers for the solved images per epoch (``amounts``), tidied; automatic
    regularization multipliers last, from the final multipliers of the others."""
    kind = targets.kind
    result: list[Assignment | None] = [None] * len(subsets)
    for i, s in enumerate(subsets):
        amount = amounts[i]
        if kind[i] == "keep":
            m = s.multiplier
            result[i] = Assignment(m, max(m, 0.0) * s.images, "unchanged")
            continue
        if kind[i] == "auto":
            continue  # below, from the final multipliers of the others
        if kind[i] == "fixed" and i in targets.group_images:
            m = tidy_multiplier(per_epoch, targets.group_images[i])
        elif kind[i] == "ratio":
            m = float(f"{amount / s.images:.4g}") if s.images else 0.0  # a share: 4 digits are plenty
        else:
            m = tidy_multiplier(amount, s.images)
        if kind[i] == "ratio":
            ratio = ratios[targets.ratio_of[i]]
            rule = f"ratio {ratio.text or ','.join(ratio.selectors)}"
            target = None
        else:
            rule = targets.fixed_rule[i]
            target = s.images_per_epoch
        result[i] = Assignment(m, m * s.images, rule, changed=not _same(m, s.multiplier), target=target)
    for i, m in _auto_regularization_rates(subsets, kind, lambda i: result[i].images_per_epoch).items():
        result[i] = Assignment(m, m * subsets[i].images, "auto (regularization)")
    return result  # type: ignore[return-value]


def _auto_regularization_rates(subsets, kind: list[str], images_per_epoch) -> dict[int, float]:
    """Per automatic regularization subset, its multiplier from the other subsets' images per epoch
    (``images_per_epoch(i)``), dataset by dataset: the formula of auto_regularization_rate."""
    rates: dict[int, float] = {}
    for dataset in sorted({s.dataset for s in subsets}):
        autos = [i for i, s in enumerate(subsets) if kind[i] == "auto" and s.dataset == dataset]
        if not autos:
            continue
        others = [i for i, s in enumerate(subsets) if s.dataset == dataset and kind[i] != "auto"]
        training = sum(images_per_epoch(i) for i in others if not subsets[i].is_reg)
        explicit = sum(images_per_epoch(i) for i in others if subsets[i].is_reg)
        m = auto_regularization_rate(training, explicit, sum(subsets[i].images for i in autos))
        rates.update({i: m for i in autos})
    return rates


def epoch_images(assignments: Sequence[Assignment]) -> float:
    return sum(a.images_per_epoch for a in assignments)


def _num(value: float) -> str:
    return f"{value:g}"


@dataclass
class DatasetSteps:
    """Batches per epoch of one dataset before and after (from the real planner)."""

    dataset: int
    batch_size: int
    batches_before: int
    batches_after: int
    notes: list[str] = field(default_factory=list)


def total_steps(datasets: Sequence[DatasetSteps], epochs: int) -> tuple[int, int]:
    """Optimizer steps for ``epochs`` epochs (sd-scripts concatenates the datasets' batches)."""
    before = sum(d.batches_before for d in datasets) * epochs
    after = sum(d.batches_after for d in datasets) * epochs
    return before, after


_MARKER = re.compile(r"images_per_epoch\s*=\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)")


def target_from_comment(comment: str | None) -> float | None:
    """The ``images_per_epoch = N`` that ``balance --write`` leaves in the comment of a multiplier
    it translated, so that a later ``balance`` run keeps the target."""
    if not comment:
        return None
    found = _MARKER.search(comment)
    return float(found.group(1)) if found else None


def marker_comment(target: float, old_comment: str | None = None) -> str:
    """The comment after a translated multiplier: the target, then whatever the user wrote there
    before (an older marker is replaced)."""
    marker = f"images_per_epoch = {_num(target)} (kohya-multiplier balance)"
    rest = _MARKER_FULL.sub("", old_comment or "").strip(" ;")
    return f"{marker}; {rest}" if rest else marker


_MARKER_FULL = re.compile(r"images_per_epoch\s*=\s*[0-9.eE+-]+\s*(\(kohya-multiplier balance\))?")
