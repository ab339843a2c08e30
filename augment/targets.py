"""Class-balance targets: how many synthetic images each class gets.

Every accepted form of ``targets.sampling_strategy`` is resolved here, and only here, into one
sorted ``{class_id: n_to_generate}`` (STYLE.md rule 2). The vocabulary is imbalanced-learn's
``sampling_strategy`` for *over*-sampling (``imblearn.utils.check_sampling_strategy``), with the
same structure: a dispatch table from strategy name to function, and a second table from the
accepted value types to their resolvers; every "allowed" list in an error is built from them.

Rules, applied in this order (``n_c`` = real count of class ``c``, ``max`` = the largest ``n_c``):

1. **Strategy** picks WHICH classes are topped up and, for the explicit forms, how high:

   - ``"auto"`` / ``"not majority"``: every class but the majority; ``"not minority"``: every
     class but the minority; ``"minority"``: only the minority; ``"all"``: every class (the
     majority gets 0). Selected classes reach the *level*, ``max`` by default. Ties: the
     majority (minority) is the LOWEST class id among the classes with the largest (smallest)
     count; imbalanced-learn takes the first one in ``Counter`` order instead.
   - a float ``f`` in (0, 1], two classes only: the minority's total is ``floor(f * max)``
     (imbalanced-learn: ``int(f * n_majority - n_minority)`` added); an error if the minority
     already has more.
   - a mapping ``{class name or id: desired total}``: those totals; other classes are not
     selected. Keys are names, int ids or strings of ints (``"3"``); a class literally named
     ``"3"`` wins over id 3. A total below ``n_c`` is an error.
   - a callable (Python API only): called with ``{class_id: n_c}``; returns such a mapping.
2. **ratio** ``r`` in (0, 1] sets HOW HIGH with level ``ceil(r * max)``: for a strategy name it
   REPLACES the default level ``max`` (``"all"`` + ``r = 0.5``: every class reaches at least
   half the majority); for the explicit forms it raises each selected class's total to at least
   the level. Unselected classes are never raised by ``ratio``.
3. **min_count** ``N``: every class, selected or not, reaches at least ``N``.
4. **exclude**: the listed classes (names or ids) keep their real count (0 generated). Exclusion
   does not change which class is the majority or the minority.
5. A class with no real image whose total is above 0 is an error: nothing to learn it from.
6. **max_synthetic_per_real** ``m`` > 0 caps: ``to_generate <= floor(m * n_c)``; ``capped`` marks
   the classes where the cap bit. ``target`` keeps the total asked for before the cap.

Products of a user fraction and a count are computed on the decimal the user wrote
(``Fraction(repr(x))``), so ``ceil(0.3 * 10)`` is 3, not the 4 that binary floats give.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

STRATEGY_FIELD = "targets.sampling_strategy"
EXCLUDE_FIELD = "targets.exclude"
MIN_CLASSES = 2  # balancing needs a majority and at least one other class


class TargetError(ValueError):
    """A target setting (or the class counts it applies to) that cannot be resolved."""


@dataclass(frozen=True)
class Targets:
    """Resolved class-balance targets, every dict keyed by class id 0..C-1 in order.

    Attributes:
        to_generate: Synthetic images to add per class (>= 0), after the cap.
        target: Desired total (real + synthetic) per class before the cap.
        capped: Whether ``max_synthetic_per_real`` lowered the class's ``to_generate``.
    """

    to_generate: dict[int, int]
    target: dict[int, int]
    capped: dict[int, bool]

    @property
    def total_to_generate(self) -> int:
        """Synthetic images to add over all classes."""
        return sum(self.to_generate.values())


@dataclass(frozen=True)
class _Data:
    """What the resolvers need: the real counts and the class names, by id."""

    counts: dict[int, int]
    names: tuple[str, ...]
    ratio_level: int | None  # ceil(ratio * max), or None without a ratio

    @property
    def majority_count(self) -> int:
        return max(self.counts.values())

    def label(self, class_id: int) -> str:
        return f"{self.names[class_id]!r} ({class_id})"


def _exact(x: float) -> Fraction:
    """The decimal value the user wrote (0.3 -> 3/10), not its binary approximation."""
    return Fraction(repr(float(x)))


def _majority(counts: Mapping[int, int]) -> int:
    """Class id of the largest class; the lowest id wins a tie."""
    return min(counts, key=lambda c: (-counts[c], c))


def _minority(counts: Mapping[int, int]) -> int:
    """Class id of the smallest class; the lowest id wins a tie."""
    return min(counts, key=lambda c: (counts[c], c))


# Strategy name -> the class ids it tops up (imbalanced-learn's SAMPLING_TARGET_KIND).
_STRATEGIES: dict[str, Callable[[Mapping[int, int]], frozenset[int]]] = {
    "auto": lambda counts: frozenset(counts) - {_majority(counts)},
    "not majority": lambda counts: frozenset(counts) - {_majority(counts)},
    "not minority": lambda counts: frozenset(counts) - {_minority(counts)},
    "minority": lambda counts: frozenset({_minority(counts)}),
    "all": lambda counts: frozenset(counts),
}


def _allowed_names() -> str:
    return ", ".join(repr(name) for name in _STRATEGIES)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


def _resolve_name(value: str, data: _Data) -> dict[int, int]:
    """Strategy name -> desired totals of the classes it selects."""
    key = value.strip().replace("_", " ")
    if key not in _STRATEGIES:
        raise TargetError(
            f"{STRATEGY_FIELD}: unknown strategy {value!r}; allowed names: {_allowed_names()}."
        )
    level = data.majority_count if data.ratio_level is None else data.ratio_level
    selected = _STRATEGIES[key](data.counts)
    return {c: max(data.counts[c], level) for c in sorted(selected)}


def _resolve_float(value: float, data: _Data) -> dict[int, int]:
    """Two classes: the minority's total becomes floor(value * majority count)."""
    if len(data.counts) != MIN_CLASSES:
        raise TargetError(
            f"{STRATEGY_FIELD}: a float ({value}) needs exactly {MIN_CLASSES} classes; got "
            f"{len(data.counts)}. For more classes use a mapping {{class name or id: total}}."
        )
    if not 0 < value <= 1:
        raise TargetError(f"{STRATEGY_FIELD}: a float must be in (0, 1]; got {value}.")
    majority = _majority(data.counts)
    minority = next(c for c in data.counts if c != majority)
    n_major, n_minor = data.counts[majority], data.counts[minority]
    total = math.floor(_exact(value) * n_major)
    if total < n_minor:
        raise TargetError(
            f"{STRATEGY_FIELD}: {value} * {n_major} (majority {data.label(majority)}) asks "
            f"for {total} images of minority {data.label(minority)}, which already has "
            f"{n_minor}; over-sampling cannot remove images, so the float must be at least "
            f"{n_minor}/{n_major}."
        )
    return _raise_to_ratio({minority: total}, data)


def _resolve_mapping(value: Mapping[Any, Any], data: _Data) -> dict[int, int]:
    """{class name or id: desired total} -> {class id: desired total}."""
    totals: dict[int, int] = {}
    given_as: dict[int, Any] = {}
    for key, total in value.items():
        class_id = _class_id(key, data, STRATEGY_FIELD)
        if class_id in totals:
            raise TargetError(
                f"{STRATEGY_FIELD}: class {data.label(class_id)} is given twice "
                f"(as {given_as[class_id]!r} and {key!r})."
            )
        if not _is_count(total):
            raise TargetError(
                f"{STRATEGY_FIELD}: the total of class {data.label(class_id)} must be an "
                f"integer >= 0; got {total!r}."
            )
        if total < data.counts[class_id]:
            raise TargetError(
                f"{STRATEGY_FIELD}: class {data.label(class_id)} asks for a total of {total} "
                f"but already has {data.counts[class_id]} real images; over-sampling only "
                f"adds images, so the total must be >= {data.counts[class_id]}."
            )
        totals[class_id], given_as[class_id] = int(total), key
    return _raise_to_ratio(dict(sorted(totals.items())), data)


def _resolve_callable(value: Callable[[dict[int, int]], Any], data: _Data) -> dict[int, int]:
    """Call with {class id: real count}; the result is read as a mapping."""
    result = value(dict(data.counts))
    if not isinstance(result, Mapping):
        raise TargetError(
            f"{STRATEGY_FIELD}: the callable must return a mapping {{class name or id: total}}; "
            f"got {type(result).__name__} {result!r}."
        )
    return _resolve_mapping(result, data)


def _raise_to_ratio(totals: dict[int, int], data: _Data) -> dict[int, int]:
    """Explicit totals: each selected class reaches at least the ratio level."""
    if data.ratio_level is None:
        return totals
    return {c: max(total, data.ratio_level) for c, total in totals.items()}


# Accepted type of sampling_strategy -> (test, resolver, how the error describes it). Order
# matters: a str is a Sequence and a bool is a number, so names come first and bools fail all.
_FORMS: tuple[tuple[Callable[[Any], bool], Callable[[Any, _Data], dict[int, int]], str], ...] = (
    (lambda v: isinstance(v, str), _resolve_name, "a strategy name ({names})"),
    (_is_number, _resolve_float, "a float in (0, 1] (two classes only)"),
    (lambda v: isinstance(v, Mapping), _resolve_mapping, "a mapping {{class name or id: total}}"),
    (callable, _resolve_callable, "a callable(counts) returning such a mapping"),
)


def _resolve_strategy(value: Any, data: _Data) -> dict[int, int]:
    for accepts, resolver, _ in _FORMS:
        if accepts(value):
            return resolver(value, data)
    forms = [text.format(names=_allowed_names()) for _, _, text in _FORMS]
    allowed = ", ".join(forms[:-1]) + " or " + forms[-1]
    raise TargetError(
        f"{STRATEGY_FIELD}: expected {allowed}; got {type(value).__name__} {value!r}."
    )


def _class_id(key: Any, data: _Data, field: str) -> int:
    """A class name, an int id or a string of an int id -> the class id."""
    if isinstance(key, str) and key in data.names:
        return data.names.index(key)
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        key = int(key)
    if isinstance(key, numbers.Integral) and not isinstance(key, bool) and key in data.counts:
        return int(key)
    known = ", ".join(f"{c}={name!r}" for c, name in enumerate(data.names))
    raise TargetError(
        f"{field}: unknown class {key!r}; known classes (id=name): {known}; give a name or an "
        f"id in 0..{len(data.names) - 1}."
    )


def _check_counts(counts: Mapping[int, int], class_names: Sequence[str]) -> dict[int, int]:
    """Validate the real counts against the class names; return them sorted by id."""
    names = list(class_names)
    if len(names) < MIN_CLASSES:
        raise TargetError(
            f"class_names: need at least {MIN_CLASSES} classes to balance; got {len(names)} "
            f"({names!r})."
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TargetError(f"class_names: names must be unique; repeated: {duplicates!r}.")
    if sorted(counts) != list(range(len(names))):
        raise TargetError(
            f"counts: class ids must be exactly 0..{len(names) - 1} (one per class name); "
            f"got {sorted(counts)!r}."
        )
    for class_id in sorted(counts):
        if not _is_count(counts[class_id]):
            raise TargetError(
                f"counts: the real count of class {names[class_id]!r} ({class_id}) must be an "
                f"integer >= 0; got {counts[class_id]!r}."
            )
    return {c: int(counts[c]) for c in sorted(counts)}


def _check_options(
    ratio: float | None, min_count: int | None, max_synthetic_per_real: float | None
) -> None:
    """Validate the extensions' ranges (None means off)."""
    if ratio is not None and not (_is_number(ratio) and 0 < ratio <= 1):
        raise TargetError(f"targets.ratio must be a number in (0, 1] or null; got {ratio!r}.")
    if min_count is not None and not _is_count(min_count):
        raise TargetError(f"targets.min_count must be an integer >= 0 or null; got {min_count!r}.")
    cap = max_synthetic_per_real
    if cap is not None and not (_is_number(cap) and 0 < cap < math.inf):
        raise TargetError(
            f"targets.max_synthetic_per_real must be a finite number > 0 or null; got {cap!r}."
        )


def _excluded_ids(exclude: Sequence[str | int] | str | int | None, data: _Data) -> set[int]:
    """Class names or ids -> class ids; a single name or id counts as a one-item list."""
    if exclude is None:
        return set()
    items = [exclude] if isinstance(exclude, (str, numbers.Integral)) else list(exclude)
    return {_class_id(item, data, EXCLUDE_FIELD) for item in items}


def _cap(
    counts: Mapping[int, int], target: Mapping[int, int], max_synthetic_per_real: float | None
) -> tuple[dict[int, int], dict[int, bool]]:
    """to_generate = target - real, at most floor(max_synthetic_per_real * real)."""
    to_generate, capped = {}, {}
    for c in sorted(counts):
        wanted = target[c] - counts[c]
        limit = wanted
        if max_synthetic_per_real is not None:
            limit = math.floor(_exact(max_synthetic_per_real) * counts[c])
        to_generate[c], capped[c] = min(wanted, limit), limit < wanted
    return to_generate, capped


def resolve_targets(
    counts: Mapping[int, int],
    class_names: Sequence[str],
    sampling_strategy: str | float | Mapping[Any, int] | Callable[..., Any] = "not majority",
    *,
    ratio: float | None = None,
    min_count: int | None = None,
    max_synthetic_per_real: float | None = None,
    exclude: Sequence[str | int] = (),
) -> Targets:
    """Resolve a class-balance setting into per-class numbers of images to generate.

    See the module docstring for the exact rules and their order.

    Args:
        counts: Real images per class id; every id 0..C-1 present, values >= 0.
        class_names: Class names by id (unique).
        sampling_strategy: A strategy name (``"auto"``, ``"not majority"``, ``"not minority"``,
            ``"minority"``, ``"all"``; ``_`` may stand for the space), a float in (0, 1] (two
            classes only), a mapping ``{class name or id: desired total}`` or a callable taking
            ``{class_id: count}`` and returning such a mapping.
        ratio: Level ``ceil(ratio * majority count)``, ratio in (0, 1], for the selected classes.
        min_count: Every class that is not excluded reaches at least this total.
        max_synthetic_per_real: Cap: at most ``floor(this * real count)`` synthetic images.
        exclude: Class names or ids never topped up.

    Returns:
        The resolved :class:`Targets`, every dict sorted by class id.

    Raises:
        TargetError: A ``ValueError`` naming the field, the value and what is allowed.
    """
    real = _check_counts(counts, class_names)
    _check_options(ratio, min_count, max_synthetic_per_real)
    ratio_level = None if ratio is None else math.ceil(_exact(ratio) * max(real.values()))
    data = _Data(counts=real, names=tuple(class_names), ratio_level=ratio_level)
    target = {**real, **_resolve_strategy(sampling_strategy, data)}
    if min_count is not None:
        target = {c: max(total, int(min_count)) for c, total in target.items()}
    for c in _excluded_ids(exclude, data):
        target[c] = real[c]
    for c, total in target.items():
        if real[c] == 0 and total > 0:
            raise TargetError(
                f"targets: class {data.label(c)} has no real images to learn from but is asked "
                f"for {total}; exclude it (targets.exclude) or add images."
            )
    to_generate, capped = _cap(real, target, max_synthetic_per_real)
    logger.debug("Targets: to_generate=%s capped=%s", to_generate, capped)
    return Targets(to_generate=to_generate, target=dict(sorted(target.items())), capped=capped)
