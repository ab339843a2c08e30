"""Training the filter's classifier on the real (imbalanced) training images.

Class-balanced sampling keeps the rare classes from being ignored, a stratified split holds out
images of every class for calibration, and temperature scaling on that split makes the
confidence threshold a probability. Every random draw comes from one ``torch.Generator`` seeded
with the run seed, and the result is cached under ``work_dir/classifier`` by a fingerprint of the
data, the config and the seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError

from augment.config import FilterConfig
from augment.filter.calibration import expected_calibration_error, fit_temperature
from augment.filter.classifier import (
    ARCHITECTURES,
    META_FILE,
    MODES,
    PREDICT_BATCH_SIZE,
    FilterClassifier,
    build_network,
    init_weights,
)

logger = logging.getLogger(__name__)

# Bump when the training recipe changes, so cached classifiers of the old recipe are retrained.
RECIPE_VERSION = 1
# Config fields that change the trained classifier (the fingerprint's part of the config).
TRAINING_FIELDS = ("arch", "width", "steps", "batch_size", "lr", "val_fraction")
# Random-crop padding as a share of the side: 4 px at 32 px, the CIFAR recipe (He et al. 2016).
CROP_PAD_FRACTION = 1 / 8
WEIGHT_DECAY = 0.05  # AdamW
WARMUP_FRACTION = 0.05  # linear warm-up share of the steps, then cosine decay to 0
LOG_EVERY_FRACTION = 0.1


def stratified_split(
    labels: torch.Tensor, val_fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into train and validation, class by class.

    Each class puts ``round(val_fraction * n_c)`` random images in validation, at least 1 and at
    most ``n_c - 1`` when it has two or more images (and ``val_fraction > 0``), none when it has one.

    Args:
        labels: Class ids, shape (N,).
        val_fraction: Share of each class held out, in [0, 1).
        generator: Source of the shuffles.

    Returns:
        ``(train_idx, val_idx)``, sorted index tensors.
    """
    train, val = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n_val = round(val_fraction * idx.numel())
        if val_fraction > 0 and idx.numel() >= 2:
            n_val = min(max(n_val, 1), idx.numel() - 1)
        elif idx.numel() < 2:
            n_val = 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def augment_batch(images: torch.Tensor, generator: torch.Generator, *, flip: bool) -> torch.Tensor:
    """Random crop with zero padding (and a random horizontal flip when ``flip``), per image.

    Args:
        images: (B, C, R, R) in [0, 1].
        generator: CPU generator of the offsets and flips.
        flip: Flip half the images left-right (never for digits or text).

    Returns:
        (B, C, R, R) augmented images on the same device.
    """
    b, _, r, _ = images.shape
    pad = max(1, round(r * CROP_PAD_FRACTION))
    padded = F.pad(images, (pad, pad, pad, pad))  # (B, C, R + 2p, R + 2p)
    oy, ox = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(images.device)
    ar = torch.arange(r, device=images.device)
    rows = (oy[:, None] + ar)[:, :, None]  # (B, R, 1)
    cols = (ox[:, None] + ar)[:, None, :]  # (B, 1, R)
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, R, R)
    if flip:
        flipped = (torch.rand(b, generator=generator) < 0.5).to(images.device)
        out = torch.where(flipped[:, None, None, None], out.flip(-1), out)
    return out.contiguous()


def fingerprint(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    cfg: FilterConfig,
    *,
    seed: int,
    mode: str,
) -> str:
    """SHA-256 of everything that determines the trained classifier."""
    h = hashlib.sha256()
    settings = {f: getattr(cfg, f) for f in TRAINING_FIELDS}
    settings.update(recipe=RECIPE_VERSION, seed=seed, mode=mode, class_names=list(class_names))
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(str(tuple(images.shape)).encode())
    h.update(images.detach().to("cpu", torch.float32).contiguous().numpy().data)
    h.update(labels.detach().to("cpu", torch.int64).contiguous().numpy().data)
    return h.hexdigest()


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    cfg: FilterConfig,
    *,
    seed: int,
    mode: str,
    work_dir: Path | None = None,
    device: torch.device | str | None = None,
) -> FilterClassifier:
    """Train and calibrate a classifier on the real training images (or load the cached one).

    Args:
        images: (N, C, R, R) floats in [-1, 1].
        labels: (N,) class ids in ``[0, len(class_names))``.
        class_names: Class names; position = class id.
        cfg: Filter config (``arch``, ``steps``, ``batch_size``, ``lr``, ``val_fraction``).
        seed: Run seed; the split, sampling, augmentation and initialisation derive from it.
        mode: Image mode of ``images`` ("L" or "RGB"); flips are used only for RGB.
        work_dir: When set, the classifier is cached in ``work_dir/classifier``.
        device: Where to train; default CUDA when available.

    Returns:
        The calibrated classifier on ``device``, with ``metrics`` filled in.

    Raises:
        ValueError: For an unknown arch or mode, or inconsistent images, labels and settings.
    """
    _check_inputs(images, labels, class_names, cfg, mode)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    key = fingerprint(images, labels, class_names, cfg, seed=seed, mode=mode)
    cache = Path(work_dir) / "classifier" if work_dir is not None else None
    cached = _load_cache(cache) if cache is not None else None
    if cached is not None and cached.fingerprint == key:
        logger.info("filter classifier: using the cached one in %s", cache)
        return cached.to(device)
    if cached is not None:
        logger.info("filter classifier: cache in %s is for other data or settings; retraining", cache)

    generator = torch.Generator().manual_seed(seed)
    train_idx, val_idx = stratified_split(labels.cpu(), cfg.val_fraction, generator)
    net, _ = build_network(cfg.arch, mode, len(class_names), width=cfg.width)
    init_weights(net, generator)
    classifier = FilterClassifier(
        net, class_names, arch=cfg.arch, mode=mode, resolution=images.shape[-1], fingerprint=key
    ).to(device)
    x = ((images.detach().float() + 1) / 2).clamp(0, 1).to(device)  # [-1, 1] -> [0, 1]
    y = labels.detach().long().to(device)
    _fit(classifier, x[train_idx.to(device)], y[train_idx.to(device)], cfg, generator, flip=mode == "RGB")
    classifier.fit_feature_mean(x)  # centre of the real images' features (see FilterClassifier)
    classifier.temperature, classifier.metrics = _calibrate(
        classifier, x[val_idx.to(device)], y[val_idx.to(device)], n_train=train_idx.numel()
    )
    if cache is not None:
        classifier.save(cache)
    return classifier


def _load_cache(cache: Path) -> FilterClassifier | None:
    """The classifier saved in ``cache``, or None when there is none or it cannot be read."""
    if not (cache / META_FILE).is_file():
        return None
    try:
        return FilterClassifier.load(cache)
    except (ValueError, KeyError, OSError, SafetensorError) as err:  # a partial or older save: retrain over it
        logger.warning("filter classifier: cannot read the cache in %s (%s); retraining", cache, err)
        return None


def _check_inputs(
    images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], cfg: FilterConfig, mode: str
) -> None:
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"filter.arch: cannot train {cfg.arch!r} here; allowed: {sorted(ARCHITECTURES)}")
    if mode not in MODES:
        raise ValueError(f"mode: unknown image mode {mode!r}; allowed: {sorted(MODES)}")
    if images.ndim != 4 or images.shape[1] != MODES[mode] or images.shape[2] != images.shape[3]:
        shape = tuple(images.shape)
        raise ValueError(f"images must be (N, {MODES[mode]}, R, R) for mode {mode!r}, got {shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(class_names):
        low, high = int(labels.min()), int(labels.max())
        raise ValueError(f"labels must be in [0, {len(class_names)}), got [{low}, {high}]")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ValueError(f"filter.val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(
            f"filter.steps and filter.batch_size must be >= 1, got {cfg.steps} and {cfg.batch_size}"
        )


def _fit(
    classifier: FilterClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: FilterConfig,
    generator: torch.Generator,
    *,
    flip: bool,
) -> None:
    """AdamW with warm-up and cosine decay on class-balanced batches (each class equally likely)."""
    module = classifier.module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=WEIGHT_DECAY)
    warmup = max(1, round(WARMUP_FRACTION * cfg.steps))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    counts = torch.bincount(y.cpu())
    weights = 1.0 / counts[y.cpu()].double()  # (N,): every class has the same total weight
    log_every = max(1, round(LOG_EVERY_FRACTION * cfg.steps))
    for step in range(cfg.steps):
        idx = torch.multinomial(weights, cfg.batch_size, replacement=True, generator=generator).to(x.device)
        logits, _ = module(augment_batch(x[idx], generator, flip=flip))
        loss = F.cross_entropy(logits, y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % log_every == 0:
            logger.info("filter classifier step %d/%d: loss %.4f", step + 1, cfg.steps, loss.item())
    module.eval()


def _calibrate(
    classifier: FilterClassifier, x: torch.Tensor, y: torch.Tensor, *, n_train: int
) -> tuple[float, dict]:
    """Fit the temperature on the validation split; return it and the validation metrics."""
    with torch.no_grad():
        starts = range(0, x.shape[0], PREDICT_BATCH_SIZE)
        chunks = [classifier.module(x[i : i + PREDICT_BATCH_SIZE])[0] for i in starts]  # raw (B, K)
    logits = torch.cat(chunks).float().cpu() if chunks else torch.zeros(0, len(classifier.class_names))
    labels = y.cpu()
    probs_raw = torch.softmax(logits, dim=1)
    temperature = fit_temperature(logits, labels)
    probs = torch.softmax(logits / temperature, dim=1)
    metrics = {
        "val_balanced_accuracy": _balanced_accuracy(probs.argmax(1), labels),
        "val_ece_before": expected_calibration_error(probs_raw, labels),
        "val_ece_after": expected_calibration_error(probs, labels),
        "temperature": temperature,
        "n_train": n_train,
        "n_val": int(labels.numel()),
        "arch": classifier.arch,
    }
    if labels.numel() == 0:
        logger.warning("filter classifier: empty validation split; no calibration (T = 1)")
    logger.info(
        "filter classifier: val balanced accuracy %.4f, ECE %.4f -> %.4f at T = %.3f (%d train, %d val)",
        *(metrics[k] for k in ("val_balanced_accuracy", "val_ece_before", "val_ece_after", "temperature")),
        n_train,
        metrics["n_val"],
    )
    return temperature, metrics


def _balanced_accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean recall over the classes present in ``labels`` (NaN when empty)."""
    recalls = [(pred[labels == c] == c).double().mean().item() for c in torch.unique(labels).tolist()]
    return sum(recalls) / len(recalls) if recalls else float("nan")
