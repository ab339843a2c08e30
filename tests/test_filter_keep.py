"""Keep rules on hand-built candidate tables (pure numpy/pandas, milliseconds)."""

import math

import numpy as np
import pandas as pd
import pytest

from augment.filter.keep import (
    REASON_COLUMNS,
    near_duplicates,
    next_round_counts,
    resolve_thresholds,
    select,
)


def table(rows):
    """rows: (class_id, index, pred, confidence, near_real, near_synthetic); seed = 100 + index."""
    df = pd.DataFrame(rows, columns=["class_id", "index", "pred", "confidence", "near_real", "near_synthetic"])
    df["seed"] = 100 + df["index"]
    return df


def reasons_of(result, class_id):
    row = result.reasons.set_index("class_id").loc[class_id]
    return row.to_dict()


def counts(generated, wrong=0, low=0, real=0, synth=0, accepted=0, kept=0, short=0):
    return dict(zip(REASON_COLUMNS, [generated, wrong, low, real, synth, accepted, kept, short]))


def test_exact_quota_most_confident_first():
    cands = table([(0, i, 0, c, False, False) for i, c in enumerate([0.91, 0.99, 0.95, 0.97, 0.93])])
    result = select(cands, {0: 3}, min_confidence=0.9)
    assert result.kept["index"].tolist() == [1, 3, 2]
    assert result.kept["seed"].tolist() == [101, 103, 102]
    assert reasons_of(result, 0) == counts(5, accepted=5, kept=3)


def test_ties_broken_by_index_ascending():
    cands = table([(0, i, 0, 0.95, False, False) for i in [7, 3, 5, 1]])
    result = select(cands, {0: 3}, min_confidence=0.9)
    assert result.kept["index"].tolist() == [1, 3, 5]


def test_kept_sorted_by_class_then_confidence():
    cands = table([(1, 0, 1, 0.92, False, False), (0, 1, 0, 0.93, False, False),
                   (1, 2, 1, 0.99, False, False), (0, 3, 0, 0.97, False, False)])
    result = select(cands, {0: 2, 1: 2}, min_confidence=0.9)
    assert result.kept[["class_id", "index"]].values.tolist() == [[0, 3], [0, 1], [1, 2], [1, 0]]


def test_per_class_thresholds():
    cands = table([(0, 0, 0, 0.6, False, False), (0, 1, 0, 0.4, False, False),
                   (1, 2, 1, 0.85, False, False), (1, 3, 1, 0.95, False, False)])
    result = select(cands, {0: 2, 1: 2}, min_confidence={0: 0.5, 1: 0.9})
    assert result.kept["index"].tolist() == [0, 3]
    assert reasons_of(result, 0) == counts(2, low=1, accepted=1, kept=1, short=1)
    assert reasons_of(result, 1) == counts(2, low=1, accepted=1, kept=1, short=1)


def test_each_rejection_counted_once_under_the_first_reason():
    cands = table([
        (0, 0, 1, 0.10, True, True),    # wrong class (also low, near real, near synthetic)
        (0, 1, 0, 0.10, True, True),    # low confidence (also near real and synthetic)
        (0, 2, 0, 0.99, True, True),    # near real (also near synthetic)
        (0, 3, 0, 0.99, False, True),   # near synthetic
        (0, 4, 0, 0.99, False, False),  # accepted
    ])
    result = select(cands, {0: 1}, min_confidence=0.9)
    assert reasons_of(result, 0) == counts(5, wrong=1, low=1, real=1, synth=1, accepted=1, kept=1)
    assert result.kept["index"].tolist() == [4]
    assert result.rejection.tolist() == ["wrong_class", "low_confidence", "near_real", "near_synthetic", ""]


def test_all_rejected_counts_short_and_class_without_candidates():
    cands = table([(0, 0, 1, 0.99, False, False), (0, 1, 0, 0.2, False, False)])
    result = select(cands, {0: 4, 2: 3}, min_confidence=0.9)
    assert result.kept.empty
    assert result.reasons["class_id"].tolist() == [0, 2]
    assert result.reasons.columns.tolist() == ["class_id", *REASON_COLUMNS]
    assert all(dtype.kind == "i" for dtype in result.reasons.dtypes)
    assert reasons_of(result, 0) == counts(2, wrong=1, low=1, short=4)
    assert reasons_of(result, 2) == counts(0, short=3)


def test_no_candidates_at_all():
    result = select(table([]), {0: 2}, min_confidence={0: 0.9})
    assert result.kept.empty
    assert reasons_of(result, 0) == counts(0, short=2)


def test_threshold_is_inclusive():
    cands = table([(0, 0, 0, 0.9, False, False)])
    assert select(cands, {0: 1}, min_confidence=0.9).kept["index"].tolist() == [0]


@pytest.mark.parametrize(
    "quotas, thresholds, cands, message",
    [
        ({0: -1}, 0.5, table([]), "quotas must be >= 0, got {0: -1}"),
        ({0: 1, 1: 1}, {0: 0.5}, table([]), "min_confidence has no threshold for classes [1]; it has [0]"),
        ({0: 1}, 0.5, table([]).drop(columns=["seed", "near_real"]),
         "candidates lack columns ['seed', 'near_real']; required: "
         "['class_id', 'index', 'seed', 'pred', 'confidence', 'near_real', 'near_synthetic']"),
    ],
)
def test_select_errors(quotas, thresholds, cands, message):
    with pytest.raises(ValueError) as err:
        select(cands, quotas, min_confidence=thresholds)
    assert str(err.value) == message


def test_resolve_thresholds_by_name_and_id():
    got = resolve_thresholds(["cat", "dog", "eel"], 0.9, {"dog": 0.5, "2": 0.7})
    assert got == {0: 0.9, 1: 0.5, 2: 0.7}


@pytest.mark.parametrize(
    "global_, per_class, message",
    [
        (0.9, {"cow": 0.5}, "filter.min_confidence_per_class: unknown class 'cow'; allowed: ['cat', 'dog']"),
        (0.9, {"cat": 1.5}, "filter.min_confidence_per_class['cat'] must be in [0, 1], got 1.5"),
        (-0.1, {}, "filter.min_confidence must be in [0, 1], got -0.1"),
    ],
)
def test_resolve_thresholds_errors(global_, per_class, message):
    with pytest.raises(ValueError) as err:
        resolve_thresholds(["cat", "dog"], global_, per_class)
    assert str(err.value) == message


def unit(*angles_deg):
    """2-D unit vectors at the given angles: cos(angle difference) is their similarity."""
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def test_near_real():
    synth = unit(0, 30, 90) * 5.0  # scale does not matter: features are normalised
    real = unit(1, 200)
    near_real, near_synth = near_duplicates(synth, real, max_real_similarity=0.99, max_synthetic_similarity=0.99)
    assert near_real.tolist() == [True, False, False]
    assert near_synth.tolist() == [False, False, False]


def test_near_synthetic_greedy_in_order():
    # 0, 5 and 10 degrees: 0~5 and 5~10 are near (cos 5 deg > 0.995), 0~10 is not (cos 10 deg < 0.995).
    synth = unit(0, 5, 10)
    kw = dict(max_real_similarity=0.99, max_synthetic_similarity=0.995)
    _, default_order = near_duplicates(synth, np.zeros((0, 2)), **kw)
    assert default_order.tolist() == [False, True, False]  # 5 suppressed by 0; 10 kept (5 was marked)
    _, middle_first = near_duplicates(synth, np.zeros((0, 2)), order=np.array([1, 0, 2]), **kw)
    assert middle_first.tolist() == [True, False, True]


def test_near_synthetic_only_within_a_class_and_only_by_keepers():
    synth = unit(0, 1, 2, 3)
    labels = np.array([0, 1, 1, 1])
    eligible = np.array([True, True, True, True])
    real = unit(180)
    _, marks = near_duplicates(synth, real, max_real_similarity=0.99, max_synthetic_similarity=0.999,
                               labels=labels, eligible=eligible)
    assert marks.tolist() == [False, False, True, True]
    # A sample that cannot be kept (not eligible, or near a real image) suppresses nothing.
    real = unit(1)
    near_real, marks = near_duplicates(synth, real, max_real_similarity=0.99999, max_synthetic_similarity=0.999,
                                       labels=labels, eligible=np.array([True, True, False, True]))
    assert near_real.tolist() == [False, True, False, False]
    assert marks.tolist() == [False, False, False, False]


def test_near_duplicates_chunked_matches_unchunked(monkeypatch):
    rng = np.random.default_rng(0)
    synth = rng.normal(size=(60, 3))
    real = rng.normal(size=(25, 3))
    kw = dict(max_real_similarity=0.95, max_synthetic_similarity=0.9, order=rng.permutation(60))
    full = near_duplicates(synth, real, **kw)
    monkeypatch.setattr("augment.filter.keep.MAX_SIMILARITY_ELEMENTS", 16)  # 4x4 blocks
    chunked = near_duplicates(synth, real, **kw)
    assert full[0].tolist() == chunked[0].tolist() and full[1].tolist() == chunked[1].tolist()
    assert full[0].any() and full[1].any()


def test_near_duplicates_bad_order():
    with pytest.raises(ValueError) as err:
        near_duplicates(unit(0, 1), unit(0), max_real_similarity=0.9, max_synthetic_similarity=0.9,
                        order=np.array([0, 0]))
    assert str(err.value) == "order must be a permutation of range(2)"


def test_next_round_counts_same_rate_everywhere():
    # Both classes at the global rate 0.5: the prior changes nothing; 10 / 0.5 * 1.2 = 24.
    got = next_round_counts({0: 10, 1: 3, 2: 0}, {0: 50, 1: 25}, {0: 100, 1: 50}, overgenerate=1.2)
    assert got == {0: 24, 1: 8, 2: 0}  # 3 / 0.5 * 1.2 = 7.2 -> 8


def test_next_round_counts_prior_floor_and_cap():
    accepted, generated = {0: 8, 1: 0, 2: 0}, {0: 10, 1: 30, 2: 0}
    # global rate 8 / 40 = 0.2; prior strength 10.
    got = next_round_counts({0: 9, 1: 2, 2: 5}, accepted, generated, overgenerate=1.0, min_rate=0.1, max_factor=8)
    rate0 = (8 + 10 * 0.2) / (10 + 10)  # 0.5
    assert got[0] == math.ceil(9 / rate0)  # 18
    assert got[1] == 16  # rate (0 + 2) / 40 = 0.05 -> floored at 0.1 -> 20, capped at 2 * 8
    assert got[2] == 25  # no observations: the global rate, 5 / 0.2
    assert list(got) == [0, 1, 2]


def test_next_round_counts_first_round_assumes_everything_accepted():
    assert next_round_counts({3: 7}, {}, {}, overgenerate=1.5) == {3: 11}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(overgenerate=0.5), "overgenerate must be >= 1, got 0.5"),
        (dict(overgenerate=1.0, min_rate=0.0), "min_rate must be in (0, 1], got 0.0"),
        (dict(overgenerate=1.0, max_factor=0.5), "max_factor must be >= 1, got 0.5"),
    ],
)
def test_next_round_counts_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        next_round_counts({0: 1}, {}, {}, **kwargs)
    assert str(err.value) == message


def test_next_round_counts_negative_deficit():
    with pytest.raises(ValueError) as err:
        next_round_counts({0: -1}, {}, {}, overgenerate=1.0)
    assert str(err.value) == "deficit counts must be >= 0, got {0: -1}"


def test_keep_module_needs_no_torch():
    import subprocess
    import sys

    code = "import sys, augment.filter.keep; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
