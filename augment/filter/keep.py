"""Keep rules: which synthetic images survive the filter, and how many to generate next round.

Pure numpy/pandas, no torch: the classifier turns images into a table of candidates (predicted
class, calibrated confidence, feature vectors) and everything here works on that table.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

# Columns of the candidates table consumed by `select`.
CANDIDATE_COLUMNS = ("class_id", "index", "seed", "pred", "confidence", "near_real", "near_synthetic")
# Rejection reasons, in the order they are tested: a rejected image is counted under the first.
REJECTION_REASONS = ("wrong_class", "low_confidence", "near_real", "near_synthetic")
REASON_COLUMNS = ("generated", *REJECTION_REASONS, "accepted", "kept", "short")
# Bound on the similarity matrix held at once by `near_duplicates` (float32 entries: 64 MiB).
MAX_SIMILARITY_ELEMENTS = 1 << 24
# Pseudo-observations of the global acceptance rate added to each class's own (a Beta prior): a
# class with few generated images gets about the global rate, one with many gets its own.
DEFAULT_PRIOR_STRENGTH = 10.0
# ceil(10 / 0.5 * 1.2) must be 24, not 25 from 24.000000000000004.
_CEIL_TOLERANCE = 1.0e-9


@dataclass
class KeepResult:
    """Outcome of :func:`select`.

    Attributes:
        kept: The chosen rows of the candidates table, sorted by class, then confidence descending,
            then index ascending; the index is reset.
        reasons: One row per class, sorted: integer columns ``class_id`` and ``REASON_COLUMNS``: how
            many were generated, rejected for each reason (each rejection counted once), accepted,
            kept (accepted capped at the quota) and short of the quota.
        rejection: Per candidate (the candidates' index): the first rejection reason that applies,
            ``""`` for an accepted one.
    """

    kept: pd.DataFrame
    reasons: pd.DataFrame
    rejection: pd.Series


def resolve_thresholds(
    class_names: Sequence[str], min_confidence: float, per_class: Mapping[str, float] | None = None
) -> dict[int, float]:
    """Resolve the global and per-class confidence thresholds into one ``{class_id: threshold}``.

    Args:
        class_names: The dataset's class names; position = class id.
        min_confidence: Threshold of every class not named in ``per_class``.
        per_class: Class name (or class id written as a string) -> threshold.

    Returns:
        A threshold for every class id, sorted by class id.

    Raises:
        ValueError: For a threshold outside [0, 1] or a class that is not in the dataset.
    """
    if not 0.0 <= float(min_confidence) <= 1.0:
        raise ValueError(f"filter.min_confidence must be in [0, 1], got {min_confidence}")
    ids = {name: i for i, name in enumerate(class_names)}
    ids.update({str(i): i for i in range(len(class_names))})
    thresholds = {i: float(min_confidence) for i in range(len(class_names))}
    for key, value in (per_class or {}).items():
        if str(key) not in ids:
            raise ValueError(
                f"filter.min_confidence_per_class: unknown class {key!r}; allowed: {list(class_names)}"
            )
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"filter.min_confidence_per_class[{key!r}] must be in [0, 1], got {value}")
        thresholds[ids[str(key)]] = float(value)
    return thresholds


def select(
    candidates: pd.DataFrame,
    quotas: Mapping[int, int],
    *,
    min_confidence: float | Mapping[int, float],
) -> KeepResult:
    """Keep the most confident acceptable candidates of each class, up to its quota.

    A candidate is accepted when the classifier's top class is its target class, its calibrated
    confidence reaches the class's threshold and it is neither a near-copy of a real image nor of
    a more confident synthetic one. The accepted ones are ranked by confidence (ties: lower index
    first) and exactly ``quotas[c]`` are kept, fewer when class ``c`` is short.

    Args:
        candidates: One row per generated image with columns ``CANDIDATE_COLUMNS`` (other columns
            are carried into ``kept``).
        quotas: Class id -> number of images to keep; a class absent from it keeps none.
        min_confidence: One threshold for all classes, or class id -> threshold (every class of
            the candidates must be present).

    Returns:
        The kept rows and the per-class counts.

    Raises:
        ValueError: For missing columns, a negative quota or a class without a threshold.
    """
    missing = [c for c in CANDIDATE_COLUMNS if c not in candidates.columns]
    if missing:
        raise ValueError(f"candidates lack columns {missing}; required: {list(CANDIDATE_COLUMNS)}")
    negative = {c: q for c, q in quotas.items() if q < 0}
    if negative:
        raise ValueError(f"quotas must be >= 0, got {negative}")
    classes = sorted({int(c) for c in candidates["class_id"]} | {int(c) for c in quotas})
    threshold = _threshold_column(candidates, min_confidence, classes)

    reason = pd.Series("", index=candidates.index, dtype=object)
    tests = {
        "wrong_class": candidates["pred"].to_numpy() != candidates["class_id"].to_numpy(),
        "low_confidence": candidates["confidence"].to_numpy() < threshold,
        "near_real": candidates["near_real"].to_numpy(dtype=bool),
        "near_synthetic": candidates["near_synthetic"].to_numpy(dtype=bool),
    }
    for name in REJECTION_REASONS:  # first reason that applies wins
        reason[(reason == "").to_numpy() & tests[name]] = name

    accepted = candidates[(reason == "").to_numpy()]
    ranked = accepted.sort_values(
        ["class_id", "confidence", "index"], ascending=[True, False, True], kind="mergesort"
    )
    rank = ranked.groupby("class_id").cumcount().to_numpy()
    quota = ranked["class_id"].map(lambda c: quotas.get(int(c), 0)).to_numpy()
    kept = ranked[rank < quota].reset_index(drop=True)
    return KeepResult(kept=kept, reasons=_reason_table(candidates, reason, kept, quotas, classes), rejection=reason)


def _threshold_column(
    candidates: pd.DataFrame, min_confidence: float | Mapping[int, float], classes: list[int]
) -> np.ndarray:
    """The confidence threshold of each candidate row, shape (N,)."""
    if not isinstance(min_confidence, Mapping):
        return np.full(len(candidates), float(min_confidence))
    lacking = [c for c in classes if c not in min_confidence]
    if lacking:
        raise ValueError(
            f"min_confidence has no threshold for classes {lacking}; "
            f"it has {sorted(min_confidence)}"
        )
    return candidates["class_id"].map(lambda c: float(min_confidence[int(c)])).to_numpy(float)


def _reason_table(
    candidates: pd.DataFrame,
    reason: pd.Series,
    kept: pd.DataFrame,
    quotas: Mapping[int, int],
    classes: list[int],
) -> pd.DataFrame:
    """Per-class counts of generated, rejected (by reason), accepted, kept and short."""
    class_id = candidates["class_id"].astype(int)
    table = pd.DataFrame(0, index=pd.Index(classes), columns=list(REASON_COLUMNS))
    table["generated"] = class_id.value_counts().reindex(classes, fill_value=0)
    for name in REJECTION_REASONS:
        table[name] = class_id[reason == name].value_counts().reindex(classes, fill_value=0)
    table["accepted"] = class_id[reason == ""].value_counts().reindex(classes, fill_value=0)
    table["kept"] = kept["class_id"].astype(int).value_counts().reindex(classes, fill_value=0)
    wanted = pd.Series({c: int(quotas.get(c, 0)) for c in classes}).reindex(classes)
    table["short"] = (wanted - table["accepted"]).clip(lower=0)
    table = table.astype(int).rename_axis("class_id").reset_index()
    return table


def near_duplicates(
    synth_feats: np.ndarray,
    real_feats: np.ndarray,
    *,
    max_real_similarity: float,
    max_synthetic_similarity: float,
    order: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    eligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flag synthetic images that nearly copy a real image or another synthetic image.

    Similarity is the cosine of L2-normalised feature vectors (normalised again here).

    * ``near_real[i]``: ``max_j cos(s_i, r_j) > max_real_similarity``.
    * ``near_synthetic[i]``: within each class (``labels``; one group when None), samples are
      visited in ``order`` (e.g. confidence descending; default: row order) and greedily kept, as in
      non-maximum suppression: a sample is marked when its similarity to an already visited,
      unmarked, eligible sample that is not near a real image exceeds ``max_synthetic_similarity``.
      Samples that cannot be kept anyway (``eligible`` False: wrong class, low confidence) are never
      marked and suppress nothing.

    Work is done in chunks so that at most ``MAX_SIMILARITY_ELEMENTS`` similarities exist at once.

    Args:
        synth_feats: Synthetic features, shape (N, D).
        real_feats: Real features, shape (M, D); M may be 0.
        max_real_similarity: Cosine above which a sample is a near-copy of a real image.
        max_synthetic_similarity: Cosine above which a sample duplicates a kept synthetic one.
        order: A permutation of ``range(N)``: the visiting order of the greedy pass.
        labels: Class of each synthetic sample, shape (N,).
        eligible: Which samples may be kept, shape (N,) bool.

    Returns:
        ``(near_real, near_synthetic)``, two bool arrays of shape (N,).

    Raises:
        ValueError: If the shapes disagree or ``order`` is not a permutation.
    """
    synth = _normalise(np.asarray(synth_feats, dtype=np.float32))
    n = synth.shape[0]
    real = _normalise(np.asarray(real_feats, dtype=np.float32).reshape(-1, synth.shape[1]))
    order = np.arange(n) if order is None else np.asarray(order)
    if sorted(order.tolist()) != list(range(n)):
        raise ValueError(f"order must be a permutation of range({n})")
    labels = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels)
    eligible = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    if labels.shape != (n,) or eligible.shape != (n,):
        raise ValueError(f"labels and eligible must have shape ({n},)")

    near_real = _max_similarity(synth, real) > max_real_similarity
    near_synthetic = np.zeros(n, dtype=bool)
    candidates = order[(eligible & ~near_real)[order]]  # visiting order, only possible keepers
    for label in np.unique(labels[candidates]):
        group = candidates[labels[candidates] == label]
        near_synthetic[group] = _greedy_marks(synth[group], max_synthetic_similarity)
    return near_real, near_synthetic


def _normalise(feats: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(feats, axis=1, keepdims=True)
    return feats / np.maximum(norm, np.finfo(np.float32).tiny)


def _max_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``max_j a_i . b_j`` for each row of ``a`` (-inf when ``b`` is empty), in bounded chunks."""
    out = np.full(a.shape[0], -np.inf, dtype=np.float32)
    if b.shape[0] == 0 or a.shape[0] == 0:
        return out
    rows = max(1, MAX_SIMILARITY_ELEMENTS // b.shape[0])
    for start in range(0, a.shape[0], rows):
        out[start : start + rows] = (a[start : start + rows] @ b.T).max(axis=1)
    return out


def _greedy_marks(feats: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy pass over ``feats`` (rows in visiting order): True for rows too similar to a kept one."""
    n = feats.shape[0]
    marked = np.zeros(n, dtype=bool)
    kept = np.empty_like(feats)  # rows [:n_kept] are the kept features so far
    n_kept = 0
    block = max(1, int(math.isqrt(MAX_SIMILARITY_ELEMENTS)))
    for start in range(0, n, block):
        chunk = feats[start : start + block]  # (B, D)
        dup = _max_similarity(chunk, kept[:n_kept]) > threshold  # against earlier blocks
        sims = chunk @ chunk.T  # (B, B): the greedy pass inside the block
        local: list[int] = []
        for i in range(chunk.shape[0]):
            if not dup[i] and local and sims[i, local].max() > threshold:
                dup[i] = True
            if not dup[i]:
                local.append(i)
        kept[n_kept : n_kept + len(local)] = chunk[local]
        n_kept += len(local)
        marked[start : start + chunk.shape[0]] = dup
    return marked


def next_round_counts(
    deficit: Mapping[int, int],
    accepted: Mapping[int, int],
    generated: Mapping[int, int],
    *,
    overgenerate: float,
    min_rate: float = 0.05,
    max_factor: float = 20.0,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
) -> dict[int, int]:
    """How many images to generate per class in the next round.

    The acceptance rate of class c is estimated with ``prior_strength`` pseudo-observations of the
    global rate: ``rate_c = (accepted_c + s * global) / (generated_c + s)``, floored at
    ``min_rate``. Then ``n_c = ceil(deficit_c / rate_c * overgenerate)``, capped at
    ``ceil(deficit_c * max_factor)``. With nothing generated yet the global rate is 1.

    Args:
        deficit: Class id -> images still missing (classes with 0 get 0).
        accepted: Class id -> images accepted so far (absent = 0).
        generated: Class id -> images generated so far (absent = 0).
        overgenerate: Safety factor >= 1 on top of the expected need.
        min_rate: Lowest acceptance rate assumed, in (0, 1].
        max_factor: Most images generated per missing image in one round.
        prior_strength: Pseudo-observations of the global rate per class, >= 0.

    Returns:
        Class id -> number to generate, for every class of ``deficit``, sorted by class id.

    Raises:
        ValueError: For counts or parameters out of range.
    """
    checks = {
        "overgenerate": (overgenerate, overgenerate >= 1.0, ">= 1"),
        "min_rate": (min_rate, 0.0 < min_rate <= 1.0, "in (0, 1]"),
        "max_factor": (max_factor, max_factor >= 1.0, ">= 1"),
        "prior_strength": (prior_strength, prior_strength >= 0.0, ">= 0"),
    }
    for name, (value, ok, allowed) in checks.items():
        if not ok:
            raise ValueError(f"{name} must be {allowed}, got {value}")
    for name, counts in {"deficit": deficit, "accepted": accepted, "generated": generated}.items():
        negative = {c: v for c, v in counts.items() if v < 0}
        if negative:
            raise ValueError(f"{name} counts must be >= 0, got {negative}")
    total_generated = sum(generated.values())
    global_rate = sum(accepted.values()) / total_generated if total_generated else 1.0
    counts = {}
    for c in sorted(deficit):
        if deficit[c] == 0:
            counts[c] = 0
            continue
        gen, acc = generated.get(c, 0), accepted.get(c, 0)
        pseudo = prior_strength * global_rate
        rate = (acc + pseudo) / (gen + prior_strength) if gen + prior_strength > 0 else global_rate
        rate = max(rate, min_rate)
        need = math.ceil(deficit[c] / rate * overgenerate - _CEIL_TOLERANCE)
        counts[c] = min(need, math.ceil(deficit[c] * max_factor - _CEIL_TOLERANCE))
    logger.debug("next round: global acceptance %.3f, counts %s", global_rate, counts)
    return counts
