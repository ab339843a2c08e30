"""Confidence calibration: temperature scaling and the expected calibration error.

A classifier trained to low loss is usually over-confident: its softmax probability of the top class
is higher than its accuracy. Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural
Networks") divides the logits by one scalar ``T`` fitted on held-out data by minimising the negative
log-likelihood; it changes no prediction, only how confident they are, so a threshold on the
calibrated probability means what it says.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# Search range of the temperature: wide enough for any trained classifier, bounded so that a
# degenerate validation split (all correct and confident) cannot drive T to 0 or infinity.
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
# LBFGS on log T: one scalar, smooth convex-in-practice objective; these converge in a few steps.
LBFGS_MAX_ITER = 100
LBFGS_TOLERANCE = 1.0e-7
# Equal-width confidence bins of the ECE, as in Guo et al. 2017.
DEFAULT_ECE_BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fit the temperature that minimises the NLL of ``softmax(logits / T)`` on held-out data.

    Args:
        logits: Uncalibrated logits, shape (N, K).
        labels: True class ids, shape (N,).

    Returns:
        The temperature, in ``[MIN_TEMPERATURE, MAX_TEMPERATURE]``; 1.0 when there is no data.

    Raises:
        ValueError: If the shapes of ``logits`` and ``labels`` do not match.
    """
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"logits must be (N, K) and labels (N,), got logits {tuple(logits.shape)} "
            f"and labels {tuple(labels.shape)}"
        )
    if logits.shape[0] == 0:
        return 1.0
    logits = logits.detach().double().cpu()
    labels = labels.detach().long().cpu()
    # Optimise log T: positive by construction and better conditioned than T itself.
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t],
        max_iter=LBFGS_MAX_ITER,
        tolerance_grad=LBFGS_TOLERANCE,
        tolerance_change=LBFGS_TOLERANCE,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):
        logger.warning("temperature fit diverged; using T = 1")
        return 1.0
    return min(max(temperature, MIN_TEMPERATURE), MAX_TEMPERATURE)


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, *, n_bins: int = DEFAULT_ECE_BINS
) -> float:
    """Expected calibration error of the top-class confidence (Guo et al. 2017, eq. 3).

    The samples are binned by their top-class probability into ``n_bins`` equal-width bins; the ECE
    is the mean over bins of ``|accuracy - mean confidence|`` weighted by the share of samples in
    the bin.

    Args:
        probs: Class probabilities, shape (N, K).
        labels: True class ids, shape (N,).
        n_bins: Number of equal-width bins on [0, 1].

    Returns:
        The ECE in [0, 1]; NaN when there is no data.

    Raises:
        ValueError: If ``n_bins`` is not positive or the shapes do not match.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if probs.ndim != 2 or labels.ndim != 1 or probs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"probs must be (N, K) and labels (N,), got probs {tuple(probs.shape)} "
            f"and labels {tuple(labels.shape)}"
        )
    n = probs.shape[0]
    if n == 0:
        return float("nan")
    probs = probs.detach().double().cpu()
    confidence, pred = probs.max(dim=1)  # (N,), (N,)
    correct = (pred == labels.detach().cpu()).double()  # (N,)
    # sum_b (n_b / N) |acc_b - conf_b| = sum_b |sum conf - sum correct| / N over the samples of bin b.
    # Bin b holds confidences in (b / n_bins, (b + 1) / n_bins]; a confidence of 0 goes to bin 0.
    bins = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)  # (N,)
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, confidence)
    correct_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, correct)
    return float((conf_sum - correct_sum).abs().sum() / n)
