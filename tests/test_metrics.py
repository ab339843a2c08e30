"""Tests of augment.metrics: the Fréchet distance and its per-class table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from augment.metrics import FRECHET_COLUMNS, frechet_distance, per_class_frechet


def exact_sample(n: int, mean: np.ndarray, std: np.ndarray, seed: int) -> np.ndarray:
    """n rows of sample mean exactly ``mean`` and sample covariance exactly ``diag(std^2)``."""
    z = np.random.default_rng(seed).normal(size=(n, len(mean)))  # (n, D)
    z -= z.mean(axis=0)
    cov = np.atleast_2d(np.cov(z, rowvar=False))
    z = z @ np.linalg.inv(np.linalg.cholesky(cov)).T  # cov(z) = I
    return z * std + mean


def reference_distance(a: np.ndarray, b: np.ndarray, eps: float = 0.0) -> float:
    """FID by a different route: Tr((Sa Sb)^1/2) = sum of sqrt eigenvalues of Sa^1/2 Sb Sa^1/2."""
    d = a.shape[1]
    cov_a = np.atleast_2d(np.cov(a, rowvar=False)) + eps * np.eye(d)
    cov_b = np.atleast_2d(np.cov(b, rowvar=False)) + eps * np.eye(d)
    w, v = np.linalg.eigh(cov_a)
    root_a = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    trace = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * trace - 2 * eps * d)


def test_identical_sets_give_zero():
    feats = np.random.default_rng(0).normal(size=(200, 6))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("shift", [[1.5, 0, 0], [1, -2, 0.5], [0, 0, 1e-3]])
def test_shifted_copy_gives_squared_shift(shift):
    feats = np.random.default_rng(1).normal(size=(100, 3))
    expected = float(np.sum(np.square(shift)))
    assert frechet_distance(feats, feats + np.asarray(shift)) == pytest.approx(expected, rel=1e-8)


def test_shifted_independent_samples_large_n():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(20000, 2)), rng.normal(size=(20000, 2)) + [2.0, 0.0]
    assert frechet_distance(a, b) == pytest.approx(4.0, abs=0.1)


@pytest.mark.parametrize(
    ("mean_a", "std_a", "mean_b", "std_b"),
    [
        ([0, 0], [1, 1], [0, 0], [2, 3]),  # (1-2)^2 + (1-3)^2 = 5
        ([1, 2, 3], [1, 2, 0.5], [0, 0, 0], [1, 1, 1]),
        ([0.5], [4.0], [-0.5], [1.0]),  # one feature
    ],
)
def test_diagonal_gaussians_match_closed_form(mean_a, std_a, mean_b, std_b):
    # Diagonal covariances: d^2 = |mu_a - mu_b|^2 + sum_i (s_a,i - s_b,i)^2.
    mean_a, std_a, mean_b, std_b = map(np.asarray, (mean_a, std_a, mean_b, std_b))
    a = exact_sample(50, mean_a, std_a, seed=3)
    b = exact_sample(70, mean_b, std_b, seed=4)
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((std_a - std_b) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_full_covariance_matches_eigen_route():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5)) + 1.0
    assert frechet_distance(a, b) == pytest.approx(reference_distance(a, b), rel=1e-8)


@pytest.mark.parametrize(("n_a", "n_b", "dim"), [(2, 2, 64), (5, 9, 32), (40, 40, 40)])
def test_few_samples_finite_and_stable(n_a, n_b, dim):
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(n_a, dim)), rng.normal(size=(n_b, dim)) + 0.5
    value = frechet_distance(a, b)
    assert math.isfinite(value) and value > 0
    assert value == pytest.approx(reference_distance(a, b, eps=1e-6), rel=1e-4)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "eps", "message"),
    [
        ((1, 3), (5, 3), 1e-6, "feats_a must have at least 2 rows to fit a covariance, got 1"),
        ((5, 3), (0, 3), 1e-6, "feats_b must have at least 2 rows to fit a covariance, got 0"),
        ((5,), (5, 3), 1e-6, "feats_a must be a 2-D array (N, D), got shape (5,)"),
        ((5, 3), (5, 3, 1), 1e-6, "feats_b must be a 2-D array (N, D), got shape (5, 3, 1)"),
        (
            (5, 3),
            (6, 4),
            1e-6,
            "feats_a and feats_b must have the same feature dimension, got feats_a (5, 3) "
            "and feats_b (6, 4)",
        ),
        ((5, 3), (5, 3), 0.0, "eps must be > 0, got 0.0"),
    ],
)
def test_frechet_errors(a_shape, b_shape, eps, message):
    with pytest.raises(ValueError) as info:
        frechet_distance(np.zeros(a_shape), np.ones(b_shape), eps=eps)
    assert str(info.value) == message


def test_non_finite_features_rejected():
    a = np.zeros((3, 2))
    a[1, 1] = np.nan
    with pytest.raises(ValueError) as info:
        frechet_distance(a, np.zeros((3, 2)))
    assert str(info.value) == "feats_a holds NaN or infinite values"


def test_per_class_frechet_table_and_nan_rules():
    rng = np.random.default_rng(7)
    real = rng.normal(size=(9, 2))
    real_labels = np.array([0, 0, 0, 1, 1, 1, 2, 3, 3])  # class 2: one real sample
    synth = rng.normal(size=(7, 2))
    synth_labels = np.array([0, 0, 0, 1, 2, 2, 3])  # class 1 and 3: one synthetic sample
    names = ["a", "b", "c", "d", "e"]  # class 4: no samples at all
    table = per_class_frechet(real, real_labels, synth, synth_labels, names)
    expected = pd.DataFrame(
        {
            "class_id": [0, 1, 2, 3, 4],
            "class_name": names,
            "n_real": [3, 3, 1, 2, 0],
            "n_synthetic": [3, 1, 2, 1, 0],
            "frechet": [frechet_distance(real[:3], synth[:3])] + [float("nan")] * 4,
        }
    )
    assert tuple(table.columns) == FRECHET_COLUMNS
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    assert table["frechet"].dtype == np.float64 and table["n_real"].dtype == np.int64


@pytest.mark.parametrize(
    ("real_labels", "synth_labels", "message"),
    [
        ([0, 1, 5, 0], [0, 1], "real_labels holds class ids [5] outside 0..1"),
        ([0, 1, 1, 0], [-1, 1], "synth_labels holds class ids [-1] outside 0..1"),
        ([0, 1, 1], [0, 1], "real_labels must have shape (4,) like its features, got (3,)"),
    ],
)
def test_per_class_frechet_errors(real_labels, synth_labels, message):
    with pytest.raises(ValueError) as info:
        per_class_frechet(
            np.zeros((4, 2)),
            np.array(real_labels),
            np.zeros((2, 2)),
            np.array(synth_labels),
            ["x", "y"],
        )
    assert str(info.value) == message
