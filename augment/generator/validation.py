"""Checks of a generator config and its training data, run before any work starts.

Every allowed set in an error message is built from the table that dispatches on the value, so
the message cannot drift from what the code accepts.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import torch

from augment.config import GeneratorConfig
from augment.generator.denoiser import DENOISERS
from augment.generator.model import missing_components, read_metadata
from augment.generator.schedule import BETA_SCHEDULES, PREDICTION_TYPES, SAMPLERS
from augment.precision import PRECISIONS

# class_balance -> power p of the per-example sampling weight n_class ** -p.
CLASS_BALANCE: Dict[str, float] = {"none": 0.0, "sqrt": 0.5, "balanced": 1.0}
# Image mode -> channels.
IMAGE_MODES: Dict[str, int] = {"L": 1, "RGB": 3}
# sampler.mode: where each synthetic image starts (the orchestrator picks per-item variation flags).
SAMPLE_MODES = ("noise", "variation", "mix")
VARIATION_SOURCES = ("class", "other", "any")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine")


def resolve_mixed_precision(name: str) -> str:
    """ "auto" -> "bf16" on a CUDA device that supports it, else "no"; other names unchanged."""
    if name != "auto":
        return name
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _one_of(field: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not one of {sorted(allowed)}")


def _check_choices(cfg: GeneratorConfig) -> None:
    _one_of("generator.sampler.name", cfg.sampler.name, SAMPLERS)
    _one_of("generator.sampler.mode", cfg.sampler.mode, SAMPLE_MODES)
    _one_of("generator.sampler.variation_source", cfg.sampler.variation_source, VARIATION_SOURCES)
    _one_of("generator.sampler.precision", cfg.sampler.precision, PRECISIONS)
    _one_of("generator.denoiser.arch", cfg.denoiser.arch, DENOISERS)
    _one_of("generator.denoiser.class_balance", cfg.denoiser.class_balance, CLASS_BALANCE)
    _one_of("generator.denoiser.mixed_precision", cfg.denoiser.mixed_precision, MIXED_PRECISION)
    _one_of("generator.denoiser.lr_schedule", cfg.denoiser.lr_schedule, LR_SCHEDULES)
    _one_of("generator.autoencoder.lr_schedule", cfg.autoencoder.lr_schedule, LR_SCHEDULES)
    _one_of("generator.schedule.beta_schedule", cfg.schedule.beta_schedule, BETA_SCHEDULES)
    _one_of("generator.schedule.prediction_type", cfg.schedule.prediction_type, PREDICTION_TYPES)


def _check_ranges(cfg: GeneratorConfig) -> None:
    s, d, sch = cfg.sampler, cfg.denoiser, cfg.schedule
    checks = [
        ("generator.sampler.num_inference_steps", s.num_inference_steps, s.num_inference_steps >= 1, ">= 1"),
        ("generator.sampler.guidance_scale", s.guidance_scale, s.guidance_scale >= 0, ">= 0"),
        ("generator.sampler.classifier_guidance_scale", s.classifier_guidance_scale,
         s.classifier_guidance_scale >= 0, ">= 0"),
        ("generator.sampler.variation_strength", s.variation_strength,
         0 < s.variation_strength <= 1, "in (0, 1]"),
        ("generator.sampler.mix_fraction", s.mix_fraction, 0 <= s.mix_fraction <= 1, "in [0, 1]"),
        ("generator.denoiser.label_dropout", d.label_dropout, 0 <= d.label_dropout < 1, "in [0, 1)"),
        ("generator.denoiser.ema_decay", d.ema_decay, 0 <= d.ema_decay < 1, "in [0, 1)"),
        ("generator.denoiser.cbdm_weight", d.cbdm_weight, d.cbdm_weight >= 0, ">= 0"),
        ("generator.denoiser.cbdm_gamma", d.cbdm_gamma, d.cbdm_gamma >= 0, ">= 0"),
        ("generator.schedule.num_train_timesteps", sch.num_train_timesteps,
         sch.num_train_timesteps >= 2, ">= 2"),
    ]
    for name, value in (("generator.autoencoder.steps", cfg.autoencoder.steps),
                        ("generator.denoiser.steps", d.steps),
                        ("generator.denoiser.batch_size", d.batch_size),
                        ("generator.denoiser.grad_accum", d.grad_accum),
                        ("generator.denoiser.checkpoint_every", d.checkpoint_every),
                        ("generator.denoiser.log_every", d.log_every),
                        ("generator.autoencoder.batch_size", cfg.autoencoder.batch_size),
                        ("generator.sampler.batch_size", s.batch_size)):
        checks.append((name, value, value >= 1, ">= 1"))
    if s.guidance_interval is not None:
        interval = list(s.guidance_interval)
        if len(interval) != 2 or not 0 <= interval[0] < interval[1] <= 1:
            raise ValueError(
                f"generator.sampler.guidance_interval={interval} must be [lo, hi] with 0 <= lo < hi <= 1 "
                "(fractions of the noise schedule, 1 = pure noise), or null for every step"
            )
    for scale_class, scale in (s.guidance_per_class or {}).items():
        checks.append((f"generator.sampler.guidance_per_class[{scale_class!r}]", scale, scale >= 0, ">= 0"))
    if sch.min_snr_gamma is not None:
        checks.append(("generator.schedule.min_snr_gamma", sch.min_snr_gamma, sch.min_snr_gamma > 0,
                       "> 0 (or null = off)"))
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"{name}={value!r} must be {allowed}")
    if sch.zero_terminal_snr and sch.prediction_type != "v_prediction":
        # At zero terminal SNR the last step's input is pure noise: predicting that noise says
        # nothing about the image (Lin et al. 2024, Sec. 3.2).
        raise ValueError(
            f"generator.schedule.zero_terminal_snr=True needs prediction_type='v_prediction', "
            f"got {sch.prediction_type!r}"
        )


def _check_classes(cfg: GeneratorConfig, class_names: Sequence[str]) -> None:
    unknown = sorted(set(cfg.sampler.guidance_per_class or {}) - set(class_names))
    if unknown:
        raise ValueError(
            f"generator.sampler.guidance_per_class names unknown classes {unknown}; "
            f"the classes are {list(class_names)}"
        )


def _check_saved_generator(path: str, class_names: Optional[Sequence[str]]) -> None:
    if not os.path.isdir(path):
        return  # a Hub id: checked when it is downloaded
    missing = missing_components(path)
    if missing:
        raise ValueError(f"generator.path={path!r} is missing {missing}")
    saved = read_metadata(path).get("class_names")
    if class_names is not None and list(saved) != list(class_names):
        raise ValueError(
            f"generator.path={path!r} was trained on class names {list(saved)} but the dataset "
            f"has {list(class_names)}"
        )


def validate_generator_config(
    cfg: GeneratorConfig, class_names: Optional[Sequence[str]] = None
) -> None:
    """Check a generator config before any work starts.

    Args:
        cfg: The generator config.
        class_names: The dataset's classes, to check per-class settings and a saved generator.

    Raises:
        ValueError: Naming the field, its value and what is allowed.
    """
    _check_choices(cfg)
    _check_ranges(cfg)
    if class_names is not None:
        _check_classes(cfg, class_names)
    if cfg.path:
        _check_saved_generator(cfg.path, class_names)


def check_training_data(
    images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], mode: str
) -> None:
    """Check the training tensors against the class names and image mode.

    Raises:
        ValueError: Unknown mode, channel mismatch, non-square images or labels out of range.
    """
    _one_of("mode", mode, IMAGE_MODES)
    if images.ndim != 4 or images.shape[1] != IMAGE_MODES[mode] or images.shape[2] != images.shape[3]:
        raise ValueError(
            f"images of shape {tuple(images.shape)} are not (N, {IMAGE_MODES[mode]}, R, R) "
            f"square images of mode {mode!r}"
        )
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(class_names):
        raise ValueError(
            f"labels span [{int(labels.min())}, {int(labels.max())}] but there are "
            f"{len(class_names)} classes {list(class_names)}"
        )
