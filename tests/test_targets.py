"""Class-balance targets: every strategy, extension and error message (pure, milliseconds)."""

import math
import re
import sys

import pytest

from augment.targets import TargetError, Targets, resolve_targets

# Four classes: 'a' is the majority, 'b' and 'd' tie for the minority (the lower id, 1, wins).
COUNTS = {0: 10, 1: 3, 2: 6, 3: 3}
NAMES = ["a", "b", "c", "d"]
TWO = {0: 10, 1: 3}
TWO_NAMES = ["a", "b"]
ALL_STRATEGY_NAMES = "'auto', 'not majority', 'not minority', 'minority', 'all'"
KNOWN = "known classes (id=name): 0='a', 1='b', 2='c', 3='d'; give a name or an id in 0..3."


def generate(counts, names, strategy, **options):
    return resolve_targets(counts, names, strategy, **options).to_generate


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("not majority", {0: 0, 1: 7, 2: 4, 3: 7}),
        ("auto", {0: 0, 1: 7, 2: 4, 3: 7}),
        ("not_majority", {0: 0, 1: 7, 2: 4, 3: 7}),  # "_" may stand for the space
        ("not minority", {0: 0, 1: 0, 2: 4, 3: 7}),  # tie: minority is id 1, not 3
        ("minority", {0: 0, 1: 7, 2: 0, 3: 0}),
        ("all", {0: 0, 1: 7, 2: 4, 3: 7}),
        ({"b": 8, 2: 6, "3": 4}, {0: 0, 1: 5, 2: 0, 3: 1}),  # name, int id, string of an id
        ({}, {0: 0, 1: 0, 2: 0, 3: 0}),
        (lambda counts: {c: 2 * n for c, n in counts.items()}, {0: 10, 1: 3, 2: 6, 3: 3}),
        (lambda counts: {"d": counts[0]}, {0: 0, 1: 0, 2: 0, 3: 7}),
    ],
)
def test_strategies(strategy, expected):
    assert generate(COUNTS, NAMES, strategy) == expected


def test_strategy_ties_pick_lowest_class_id_for_majority():
    counts = {0: 5, 1: 8, 2: 8}  # ids 1 and 2 tie for the majority: id 1 is it
    assert generate(counts, ["x", "y", "z"], "not majority") == {0: 3, 1: 0, 2: 0}
    assert generate(counts, ["x", "y", "z"], "minority") == {0: 3, 1: 0, 2: 0}


@pytest.mark.parametrize(
    "counts, strategy, expected",
    [
        (TWO, 0.5, {0: 0, 1: 2}),
        (TWO, 1.0, {0: 0, 1: 7}),
        (TWO, 1, {0: 0, 1: 7}),  # an int is a number too (Hydra turns "1" into an int)
        (TWO, 0.3, {0: 0, 1: 0}),  # floor(0.3 * 10) is 3 in decimal, not 2.9999...
        ({0: 2, 1: 9}, 0.5, {0: 2, 1: 0}),  # majority is id 1: floor(4.5) = 4
    ],
)
def test_float_strategy(counts, strategy, expected):
    assert generate(counts, TWO_NAMES, strategy) == expected


def test_callable_receives_counts_by_class_id():
    seen = []
    resolve_targets(COUNTS, NAMES, lambda counts: seen.append(counts) or {})
    assert seen == [{0: 10, 1: 3, 2: 6, 3: 3}]


def test_dict_key_name_wins_over_id_string():
    names = ["a", "3", "c", "d"]  # class 1 is literally named "3"
    assert generate(COUNTS, names, {"3": 5}) == {0: 0, 1: 2, 2: 0, 3: 0}
    assert generate(COUNTS, names, {3: 5}) == {0: 0, 1: 0, 2: 0, 3: 2}


@pytest.mark.parametrize(
    "counts, names, strategy, options, expected",
    [
        # ratio replaces the level of a strategy name: ceil(0.5 * 10) = 5
        (COUNTS, NAMES, "all", {"ratio": 0.5}, {0: 0, 1: 2, 2: 0, 3: 2}),
        (COUNTS, NAMES, "minority", {"ratio": 0.5}, {0: 0, 1: 2, 2: 0, 3: 0}),
        (COUNTS, NAMES, "not minority", {"ratio": 0.7}, {0: 0, 1: 0, 2: 1, 3: 4}),
        (COUNTS, NAMES, "all", {"ratio": 1.0}, {0: 0, 1: 7, 2: 4, 3: 7}),
        (COUNTS, NAMES, "all", {"ratio": 0.3}, {0: 0, 1: 0, 2: 0, 3: 0}),  # ceil(3) = 3, not 4
        (COUNTS, NAMES, "all", {"ratio": 0.31}, {0: 0, 1: 1, 2: 0, 3: 1}),  # ceil(3.1) = 4
        # ratio raises the explicit forms' selected classes; unselected ones stay
        (COUNTS, NAMES, {"b": 4}, {"ratio": 0.7}, {0: 0, 1: 4, 2: 0, 3: 0}),
        (COUNTS, NAMES, {"b": 9}, {"ratio": 0.7}, {0: 0, 1: 6, 2: 0, 3: 0}),
        (TWO, TWO_NAMES, 0.5, {"ratio": 0.8}, {0: 0, 1: 5}),
        # min_count: every class, selected or not
        (COUNTS, NAMES, "minority", {"min_count": 5}, {0: 0, 1: 7, 2: 0, 3: 2}),
        (COUNTS, NAMES, "not majority", {"min_count": 12}, {0: 2, 1: 9, 2: 6, 3: 9}),
        (COUNTS, NAMES, {}, {"min_count": 0}, {0: 0, 1: 0, 2: 0, 3: 0}),
        (COUNTS, NAMES, "all", {"ratio": 0.5, "min_count": 4}, {0: 0, 1: 2, 2: 0, 3: 2}),
        # exclude: names, ids, a single name; the minority stays the minority when excluded
        (COUNTS, NAMES, "all", {"exclude": ["b", 3]}, {0: 0, 1: 0, 2: 4, 3: 0}),
        (COUNTS, NAMES, "all", {"exclude": "b"}, {0: 0, 1: 0, 2: 4, 3: 7}),
        (COUNTS, NAMES, "all", {"exclude": ["2"]}, {0: 0, 1: 7, 2: 0, 3: 7}),
        (COUNTS, NAMES, "minority", {"exclude": ["b"]}, {0: 0, 1: 0, 2: 0, 3: 0}),
        (COUNTS, NAMES, "all", {"min_count": 12, "exclude": [0]}, {0: 0, 1: 9, 2: 6, 3: 9}),
        (COUNTS, NAMES, "all", {"exclude": None}, {0: 0, 1: 7, 2: 4, 3: 7}),
        # max_synthetic_per_real: at most floor(m * real)
        (COUNTS, NAMES, "all", {"max_synthetic_per_real": 1}, {0: 0, 1: 3, 2: 4, 3: 3}),
        (COUNTS, NAMES, "all", {"max_synthetic_per_real": 0.5}, {0: 0, 1: 1, 2: 3, 3: 1}),
        ({0: 1000, 1: 100}, TWO_NAMES, "all", {"max_synthetic_per_real": 0.29}, {0: 0, 1: 29}),
        # a class without real images is fine when nothing is asked of it
        ({0: 10, 1: 0, 2: 4}, ["x", "y", "z"], "all", {"exclude": ["y"]}, {0: 0, 1: 0, 2: 6}),
        ({0: 0, 1: 0}, TWO_NAMES, "all", {}, {0: 0, 1: 0}),
    ],
)
def test_extensions(counts, names, strategy, options, expected):
    assert generate(counts, names, strategy, **options) == expected


def test_targets_record_total_before_cap_and_where_the_cap_bit():
    targets = resolve_targets(COUNTS, NAMES, "all", max_synthetic_per_real=1, exclude=["d"])
    assert targets == Targets(
        to_generate={0: 0, 1: 3, 2: 4, 3: 0},
        target={0: 10, 1: 10, 2: 10, 3: 3},
        capped={0: False, 1: True, 2: False, 3: False},
    )
    assert targets.total_to_generate == 7


def test_output_sorted_by_class_id_whatever_the_input_order():
    targets = resolve_targets({3: 3, 1: 3, 0: 10, 2: 6}, NAMES, {"d": 5, "b": 4})
    for resolved in (targets.to_generate, targets.target, targets.capped):
        assert list(resolved) == [0, 1, 2, 3]
    assert targets.target == {0: 10, 1: 4, 2: 6, 3: 5}


def test_mnist_lt_not_majority_tops_every_class_up_to_300():
    counts = [300, 194, 125, 81, 52, 34, 22, 14, 9, 6]
    assert counts == [math.floor(300 * 50 ** (-c / 9)) for c in range(10)]
    targets = resolve_targets(dict(enumerate(counts)), [str(c) for c in range(10)])
    expected = {0: 0, 1: 106, 2: 175, 3: 219, 4: 248, 5: 266, 6: 278, 7: 286, 8: 291, 9: 294}
    assert targets.to_generate == expected
    assert targets.target == {c: 300 for c in range(10)}
    assert targets.total_to_generate == 2163


def test_hydra_style_values():
    """Keys as strings of ids, a list for exclude, numpy-free plain ints."""
    assert generate(COUNTS, NAMES, {"1": 5, "3": 3}, exclude=["0"]) == {0: 0, 1: 2, 2: 0, 3: 0}


@pytest.mark.parametrize(
    "counts, names, strategy, options, message",
    [
        (COUNTS, NAMES, "foo", {},
         f"targets.sampling_strategy: unknown strategy 'foo'; allowed names: "
         f"{ALL_STRATEGY_NAMES}."),
        (COUNTS, NAMES, "majority", {},
         f"targets.sampling_strategy: unknown strategy 'majority'; allowed names: "
         f"{ALL_STRATEGY_NAMES}."),
        (COUNTS, NAMES, {"x": 3}, {},
         f"targets.sampling_strategy: unknown class 'x'; {KNOWN}"),
        (COUNTS, NAMES, {7: 3}, {},
         f"targets.sampling_strategy: unknown class 7; {KNOWN}"),
        (COUNTS, NAMES, {"-1": 3}, {},
         f"targets.sampling_strategy: unknown class -1; {KNOWN}"),
        (COUNTS, NAMES, {True: 3}, {},
         f"targets.sampling_strategy: unknown class True; {KNOWN}"),
        (COUNTS, NAMES, "all", {"exclude": ["zz"]},
         f"targets.exclude: unknown class 'zz'; {KNOWN}"),
        (COUNTS, NAMES, "all", {"exclude": [4]},
         f"targets.exclude: unknown class 4; {KNOWN}"),
        (COUNTS, NAMES, {"b": 2}, {},
         "targets.sampling_strategy: class 'b' (1) asks for a total of 2 but already has 3 real "
         "images; over-sampling only adds images, so the total must be >= 3."),
        (COUNTS, NAMES, {"b": -1}, {},
         "targets.sampling_strategy: the total of class 'b' (1) must be an integer >= 0; "
         "got -1."),
        (COUNTS, NAMES, {"b": 2.5}, {},
         "targets.sampling_strategy: the total of class 'b' (1) must be an integer >= 0; "
         "got 2.5."),
        (COUNTS, NAMES, {"b": 5, 1: 6}, {},
         "targets.sampling_strategy: class 'b' (1) is given twice (as 'b' and 1)."),
        (COUNTS, NAMES, lambda counts: [1], {},
         "targets.sampling_strategy: the callable must return a mapping "
         "{class name or id: total}; got list [1]."),
        (COUNTS, NAMES, lambda counts: {"b": 1}, {},
         "targets.sampling_strategy: class 'b' (1) asks for a total of 1 but already has 3 real "
         "images; over-sampling only adds images, so the total must be >= 3."),
        ({0: 10, 1: -1}, TWO_NAMES, "all", {},
         "counts: the real count of class 'b' (1) must be an integer >= 0; got -1."),
        ({0: 1, 2: 3}, TWO_NAMES, "all", {},
         "counts: class ids must be exactly 0..1 (one per class name); got [0, 2]."),
        ({0: 3}, ["a"], "all", {},
         "class_names: need at least 2 classes to balance; got 1 (['a'])."),
        ({0: 1, 1: 2, 2: 3}, ["a", "b", "a"], "all", {},
         "class_names: names must be unique; repeated: ['a']."),
        (COUNTS, NAMES, "all", {"ratio": 0},
         "targets.ratio must be a number in (0, 1] or null; got 0."),
        (COUNTS, NAMES, "all", {"ratio": 1.5},
         "targets.ratio must be a number in (0, 1] or null; got 1.5."),
        (COUNTS, NAMES, "all", {"min_count": -1},
         "targets.min_count must be an integer >= 0 or null; got -1."),
        (COUNTS, NAMES, "all", {"min_count": 2.5},
         "targets.min_count must be an integer >= 0 or null; got 2.5."),
        (COUNTS, NAMES, "all", {"max_synthetic_per_real": 0},
         "targets.max_synthetic_per_real must be a finite number > 0 or null; got 0."),
        (COUNTS, NAMES, "all", {"max_synthetic_per_real": math.inf},
         "targets.max_synthetic_per_real must be a finite number > 0 or null; got inf."),
        (COUNTS, NAMES, 0.5, {},
         "targets.sampling_strategy: a float (0.5) needs exactly 2 classes; got 4. For more "
         "classes use a mapping {class name or id: total}."),
        (TWO, TWO_NAMES, 1.5, {},
         "targets.sampling_strategy: a float must be in (0, 1]; got 1.5."),
        (TWO, TWO_NAMES, 0.0, {},
         "targets.sampling_strategy: a float must be in (0, 1]; got 0.0."),
        (TWO, TWO_NAMES, 0.2, {},
         "targets.sampling_strategy: 0.2 * 10 (majority 'a' (0)) asks for 2 images of minority "
         "'b' (1), which already has 3; over-sampling cannot remove images, so the float must "
         "be at least 3/10."),
        (COUNTS, NAMES, [1, 2], {},
         f"targets.sampling_strategy: expected a strategy name ({ALL_STRATEGY_NAMES}), a float "
         "in (0, 1] (two classes only), a mapping {class name or id: total} or a "
         "callable(counts) returning such a mapping; got list [1, 2]."),
        (COUNTS, NAMES, True, {},
         f"targets.sampling_strategy: expected a strategy name ({ALL_STRATEGY_NAMES}), a float "
         "in (0, 1] (two classes only), a mapping {class name or id: total} or a "
         "callable(counts) returning such a mapping; got bool True."),
        ({0: 10, 1: 0}, TWO_NAMES, "all", {},
         "targets: class 'b' (1) has no real images to learn from but is asked for 10; exclude "
         "it (targets.exclude) or add images."),
        ({0: 10, 1: 0, 2: 4}, ["x", "y", "z"], {}, {"min_count": 1},
         "targets: class 'y' (1) has no real images to learn from but is asked for 1; exclude "
         "it (targets.exclude) or add images."),
    ],
)
def test_errors(counts, names, strategy, options, message):
    with pytest.raises(TargetError, match=f"^{re.escape(message)}$"):
        resolve_targets(counts, names, strategy, **options)


def test_target_error_is_a_value_error():
    assert issubclass(TargetError, ValueError)


def test_module_is_pure():
    """targets.py must import neither torch nor hydra (stdlib only)."""
    import augment.targets as targets

    source = open(targets.__file__, encoding="utf-8").read()
    imported = set(re.findall(r"^(?:from|import) (\w+)", source, flags=re.MULTILINE))
    assert imported <= set(sys.stdlib_module_names) | {"augment"}
