"""Checks of a filter config, run before any data is loaded or model trained.

Allowed sets in the messages come from the tables the code dispatches on. Checks that need the
dataset (class names of ``min_confidence_per_class``, a user classifier's classes) happen later,
in :func:`augment.filter.keep.resolve_thresholds` and
:func:`augment.filter.classifier.load_user_classifier`.
"""

from __future__ import annotations

import os

import torchvision

from augment.config import FilterConfig
from augment.filter.classifier import ARCHITECTURES
from augment.precision import PRECISIONS

# filter.name: "none" keeps every synthetic image (no classifier is built).
FILTER_NAMES = ("classifier", "none")
# filter.on_shortfall: what happens when a class is still short after max_rounds.
ON_SHORTFALL = ("warn", "fail")


def validate_filter_config(cfg: FilterConfig) -> None:
    """Raise on a filter config that cannot work, naming the field, the value and what is allowed.

    Args:
        cfg: The filter config.

    Raises:
        ValueError: For an unknown choice, a value out of range or a missing classifier path.
    """
    _one_of("filter.name", cfg.name, FILTER_NAMES)
    if cfg.name == "none":
        return
    _one_of("filter.on_shortfall", cfg.on_shortfall, ON_SHORTFALL)
    _one_of("filter.precision", cfg.precision, PRECISIONS)
    if cfg.path is None:
        _one_of("filter.arch", cfg.arch, ARCHITECTURES)  # trained here
    elif not os.path.exists(cfg.path):
        raise ValueError(f"filter.path={cfg.path!r} does not exist")
    elif cfg.path.endswith(".safetensors") and cfg.arch not in ARCHITECTURES:
        if cfg.arch not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(
                f"filter.arch={cfg.arch!r} is not one of {sorted(ARCHITECTURES)} nor a name from "
                "torchvision.models.list_models(module=torchvision.models)"
            )
    checks = [
        ("filter.width", cfg.width, cfg.width >= 1, ">= 1"),
        ("filter.steps", cfg.steps, cfg.steps >= 1, ">= 1"),
        ("filter.batch_size", cfg.batch_size, cfg.batch_size >= 1, ">= 1"),
        ("filter.lr", cfg.lr, cfg.lr > 0, "> 0"),
        ("filter.val_fraction", cfg.val_fraction, 0 <= cfg.val_fraction < 1, "in [0, 1)"),
        ("filter.min_confidence", cfg.min_confidence, 0 <= cfg.min_confidence <= 1, "in [0, 1]"),
        ("filter.max_real_similarity", cfg.max_real_similarity, -1 <= cfg.max_real_similarity <= 1, "in [-1, 1]"),
        ("filter.max_synthetic_similarity", cfg.max_synthetic_similarity,
         -1 <= cfg.max_synthetic_similarity <= 1, "in [-1, 1]"),
        ("filter.max_rounds", cfg.max_rounds, cfg.max_rounds >= 1, ">= 1"),
        ("filter.overgenerate", cfg.overgenerate, cfg.overgenerate >= 1, ">= 1"),
    ]
    for name, value in (cfg.min_confidence_per_class or {}).items():
        checks.append((f"filter.min_confidence_per_class[{name!r}]", value, 0 <= value <= 1, "in [0, 1]"))
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"{name}={value!r} must be {allowed}")


def _one_of(field: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not one of {sorted(allowed)}")
