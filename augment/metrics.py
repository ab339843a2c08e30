"""Distribution metrics between real and synthetic images, computed on feature vectors.

Pure numpy/scipy, no torch: the caller turns images into features (for instance the filter
classifier's penultimate layer) and everything here works on those arrays. The expected calibration
error lives beside the temperature fit, in :mod:`augment.filter.calibration`.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.linalg

logger = logging.getLogger(__name__)

# A covariance needs two samples (ddof=1); per_class_frechet reports NaN below this.
MIN_SAMPLES = 2
# Relative residual ||X @ X - A||_F / ||A||_F above which a matrix square root is not trusted and is
# computed again on the eps-offset covariances.
SQRTM_RESIDUAL_TOLERANCE = 1.0e-5
# Largest imaginary part of sqrtm that is rounding noise (the same bound as pytorch-fid); a larger
# one after the eps offset is logged, then dropped as well.
MAX_IMAGINARY = 1.0e-3
FRECHET_COLUMNS = ("class_id", "class_name", "n_real", "n_synthetic", "frechet")


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    The FID formula of Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge
    to a Local Nash Equilibrium", eq. 6::

        d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

    with the means and (unbiased) covariances of the two sets. When ``S_a S_b`` is singular (always
    so when a set has no more rows than columns) ``eps * I`` is added to both covariances before the
    square root, and imaginary parts left by rounding are dropped.

    With few samples (``n <= dim``) the value is finite but strongly biased upwards, and the bias
    depends on ``n``: compare it only between sets of similar sizes, never with a published FID.

    Args:
        feats_a: First feature set, shape (N_a, D).
        feats_b: Second feature set, shape (N_b, D).
        eps: Diagonal offset of the covariances when their product is singular; must be > 0.

    Returns:
        The squared Fréchet distance, >= 0 (tiny negative rounding is clipped to 0).

    Raises:
        ValueError: If a set is not a 2-D array of finite values with at least 2 rows, the feature
            dimensions differ or ``eps`` is not positive.
    """
    a = _check_features("feats_a", feats_a)
    b = _check_features("feats_b", feats_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feats_a and feats_b must have the same feature dimension, got feats_a {a.shape} "
            f"and feats_b {b.shape}"
        )
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)  # (D,), (D,)
    cov_a, cov_b = _covariance(a), _covariance(b)  # (D, D), (D, D)
    rank_deficient = min(a.shape[0], b.shape[0]) <= a.shape[1]
    covmean = None if rank_deficient else _sqrtm_or_none(cov_a @ cov_b)
    if covmean is None:
        offset = eps * np.eye(a.shape[1])
        if not rank_deficient:
            logger.warning("S_a S_b is singular; adding %g to the covariance diagonals", eps)
        covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = _drop_imaginary(covmean)
    diff = mu_a - mu_b
    distance = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean)
    return max(float(distance), 0.0)


def per_class_frechet(
    real_feats: np.ndarray,
    real_labels: np.ndarray,
    synth_feats: np.ndarray,
    synth_labels: np.ndarray,
    class_names: Sequence[str],
) -> pd.DataFrame:
    """Fréchet distance between the real and the synthetic features of each class.

    Args:
        real_feats: Features of the real images, shape (N_r, D).
        real_labels: Class ids of the real images, shape (N_r,).
        synth_feats: Features of the synthetic images, shape (N_s, D).
        synth_labels: Class ids of the synthetic images, shape (N_s,).
        class_names: Class names; position = class id.

    Returns:
        One row per class id 0..C-1 with the columns of :data:`FRECHET_COLUMNS`; ``frechet`` is NaN
        when either side has fewer than :data:`MIN_SAMPLES` samples of the class.

    Raises:
        ValueError: If features and labels disagree in length or a label is not a class id.
    """
    real_labels = _check_labels("real_labels", real_labels, len(real_feats), len(class_names))
    synth_labels = _check_labels("synth_labels", synth_labels, len(synth_feats), len(class_names))
    real_feats, synth_feats = np.asarray(real_feats), np.asarray(synth_feats)
    rows = []
    for class_id, name in enumerate(class_names):
        real = real_feats[real_labels == class_id]
        synth = synth_feats[synth_labels == class_id]
        enough = min(len(real), len(synth)) >= MIN_SAMPLES
        rows.append(
            {
                "class_id": class_id,
                "class_name": str(name),
                "n_real": len(real),
                "n_synthetic": len(synth),
                "frechet": frechet_distance(real, synth) if enough else float("nan"),
            }
        )
    frame = pd.DataFrame(rows, columns=list(FRECHET_COLUMNS))
    dtypes = {"class_id": "int64", "n_real": "int64", "n_synthetic": "int64", "frechet": "float64"}
    return frame.astype(dtypes)


def _check_features(name: str, feats: np.ndarray) -> np.ndarray:
    """Return ``feats`` as a float64 (N, D) array, or raise naming the argument."""
    array = np.asarray(feats, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {array.shape}")
    if array.shape[0] < MIN_SAMPLES:
        raise ValueError(
            f"{name} must have at least {MIN_SAMPLES} rows to fit a covariance, "
            f"got {array.shape[0]}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def _check_labels(name: str, labels: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    """Return ``labels`` as an int array of length ``n_rows`` with values in 0..n_classes-1."""
    array = np.asarray(labels)
    if array.ndim != 1 or len(array) != n_rows:
        raise ValueError(
            f"{name} must have shape ({n_rows},) like its features, got {array.shape}"
        )
    if len(array) and (array.min() < 0 or array.max() >= n_classes):
        bad = sorted({int(v) for v in array if not 0 <= v < n_classes})
        raise ValueError(f"{name} holds class ids {bad} outside 0..{n_classes - 1}")
    return array.astype(np.int64)


def _covariance(feats: np.ndarray) -> np.ndarray:
    """Unbiased covariance (D, D) of the rows; 2-D even when D == 1."""
    return np.atleast_2d(np.cov(feats, rowvar=False))


def _sqrtm_or_none(matrix: np.ndarray) -> np.ndarray | None:
    """``sqrtm(matrix)``, or None when the result is not finite or does not square back."""
    root = scipy.linalg.sqrtm(matrix)
    if not np.isfinite(root).all():
        return None
    scale = np.linalg.norm(matrix)
    if scale > 0 and np.linalg.norm(root @ root - matrix) / scale > SQRTM_RESIDUAL_TOLERANCE:
        return None
    return root


def _drop_imaginary(root: np.ndarray) -> np.ndarray:
    """The real part of a matrix square root; logs when the imaginary part is more than rounding."""
    if np.iscomplexobj(root):
        largest = float(np.max(np.abs(root.imag)))
        if largest > MAX_IMAGINARY:
            logger.warning("matrix square root has an imaginary part up to %g; dropped", largest)
        root = root.real
    return root
