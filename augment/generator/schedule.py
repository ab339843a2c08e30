"""Noise schedule, samplers and guidance.

The training scheduler (a :class:`diffusers.DDPMScheduler`) *is* the noise schedule: its config is
saved with the generator, and every sampler is built from it with ``Cls.from_config(config)``, so a
sampler swaps in one line and can never disagree with the schedule the denoiser was trained on.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Tuple, Type

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from augment.config import ScheduleConfig

logger = logging.getLogger(__name__)

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction")

# "trailing" spacing starts sampling at the last training timestep, so the first step sees the
# same (pure-noise) input the sampler draws; the default "leading"/"linspace" spacings skip the
# noisiest timesteps (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
# Flawed", Sec. 3.3) and need zero-terminal-SNR to be exact.
_SPACING = {"timestep_spacing": "trailing"}

# One table: name -> (scheduler class, extra config). Built with Cls.from_config(schedule config).
SAMPLERS: Dict[str, Tuple[Type[SchedulerMixin], Dict[str, Any]]] = {
    # DPM-Solver++(2M), Lu et al. 2022: the default, good images in 15-25 steps.
    "dpmsolver++": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, **_SPACING},
    ),
    "ddim": (DDIMScheduler, {"set_alpha_to_one": True, **_SPACING}),
    "ddpm": (DDPMScheduler, {**_SPACING}),
    "unipc": (UniPCMultistepScheduler, {**_SPACING}),
    "euler": (EulerDiscreteScheduler, {**_SPACING}),
}


# With zero-terminal-SNR, alpha_bar reaches 0 at the last timestep; there the image carries no
# signal, classifier gradients are meaningless and the v-shift would divide by zero.
_MIN_SQRT_ALPHA_BAR = 1.0e-3


def build_noise_scheduler(cfg: ScheduleConfig) -> DDPMScheduler:
    """Build the training noise schedule.

    Args:
        cfg: The schedule config (validated by ``validate_generator_config``).

    Returns:
        A ``DDPMScheduler`` whose config is the noise schedule saved with the generator.
    """
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        rescale_betas_zero_snr=cfg.zero_terminal_snr,
        clip_sample=False,
    )


def build_sampler(noise_scheduler: SchedulerMixin, name: str) -> SchedulerMixin:
    """Build a sampler from the training schedule.

    Args:
        noise_scheduler: The training scheduler; its config is the noise schedule.
        name: A key of :data:`SAMPLERS`.

    Returns:
        A fresh scheduler instance (samplers are stateful: one per sampling run).

    Raises:
        ValueError: ``name`` is not a key of :data:`SAMPLERS`.
    """
    if name not in SAMPLERS:
        raise ValueError(f"sampler.name={name!r} is not one of {sorted(SAMPLERS)}")
    cls, kwargs = SAMPLERS[name]
    return cls.from_config(noise_scheduler.config, **kwargs)


def alpha_bar_at(noise_scheduler: SchedulerMixin, timesteps: torch.Tensor) -> torch.Tensor:
    """Cumulative signal level at (possibly fractional) timesteps, interpolated linearly.

    Args:
        noise_scheduler: The training scheduler.
        timesteps: Any shape; values in ``[0, num_train_timesteps - 1]``.

    Returns:
        ``alpha_bar(t)`` with the shape of ``timesteps`` (float32, on its device).
    """
    table = noise_scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)
    t = timesteps.float().clamp(0, len(table) - 1)
    low = t.floor().long()
    high = t.ceil().long()
    frac = t - low.float()
    return table[low] * (1 - frac) + table[high] * frac


def training_target(
    noise_scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """What the denoiser learns to predict: the noise (epsilon) or the velocity (Salimans & Ho 2022)."""
    if noise_scheduler.config.prediction_type == "epsilon":
        return noise
    return noise_scheduler.get_velocity(latents, noise, t)


def loss_weights(
    noise_scheduler: DDPMScheduler, t: torch.Tensor, min_snr_gamma: Optional[float]
) -> torch.Tensor:
    """Per-example loss weights: Min-SNR-gamma (Hang et al. 2023) or ones.

    Args:
        noise_scheduler: The training scheduler.
        t: Integer timesteps, shape (B,).
        min_snr_gamma: gamma of Min-SNR weighting; ``None`` = uniform weights.

    Returns:
        Weights of shape (B,).
    """
    if min_snr_gamma is None:
        return torch.ones(t.shape, device=t.device)
    alpha_bar = alpha_bar_at(noise_scheduler, t)
    snr = alpha_bar / (1 - alpha_bar)
    clipped = torch.clamp(snr, max=min_snr_gamma)
    # Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", Eq. 7 and
    # its v-prediction form: the x0-loss weight min(SNR, gamma) expressed for the eps-loss is
    # min(SNR, gamma) / SNR, and for the v-loss min(SNR, gamma) / (SNR + 1).
    if noise_scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr


def guided_output(cond: torch.Tensor, uncond: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): ``uncond + s * (cond - uncond)`` per item.

    Args:
        cond: Conditional model output, (N, c, h, w).
        uncond: Null-class model output, (N, c, h, w).
        scales: Guidance scale per item, (N,).
    """
    return uncond + scales.view(-1, 1, 1, 1) * (cond - uncond)


def predicted_x0(
    model_output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """The clean latent implied by a model output at noise level ``alpha_bar`` (N,)."""
    a = alpha_bar.view(-1, 1, 1, 1)
    if prediction_type == "v_prediction":
        return a.sqrt() * x_t - (1 - a).sqrt() * model_output
    return (x_t - (1 - a).sqrt() * model_output) / a.sqrt()


def classifier_guidance_shift(
    grad: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str, scale: float
) -> torch.Tensor:
    """How classifier guidance changes the model output (Dhariwal & Nichol 2021, Eq. 14 / Alg. 2).

    The guided noise is ``eps - sqrt(1 - alpha_bar) * s * grad log p(y | x_t)``; the velocity
    ``v = eps / sqrt(alpha_bar) - sqrt(1 - alpha_bar) / sqrt(alpha_bar) * x_t`` is linear in eps,
    so its shift is the noise shift divided by ``sqrt(alpha_bar)``.

    Args:
        grad: Gradient of the summed class log-probabilities wrt the model input, (N, c, h, w).
        alpha_bar: Noise level per item, (N,).
        prediction_type: epsilon | v_prediction.
        scale: Classifier guidance scale.

    Returns:
        The shift to add to the model output.
    """
    a = alpha_bar.view(-1, 1, 1, 1)
    eps_shift = -(1 - a).sqrt() * scale * grad
    if prediction_type == "v_prediction":
        return eps_shift / a.sqrt().clamp_min(_MIN_SQRT_ALPHA_BAR)
    return eps_shift


def class_log_prob_grad(
    classifier: Callable[[torch.Tensor], torch.Tensor],
    decode: Callable[[torch.Tensor], torch.Tensor],
    x_in: torch.Tensor,
    x0: torch.Tensor,
    class_ids: torch.Tensor,
) -> torch.Tensor:
    """Gradient of ``sum_i log p(class_i | decode(x0_i))`` wrt ``x_in`` (through the decoder).

    Args:
        classifier: Images in [0, 1] -> logits (N, C).
        decode: Latents -> images in [0, 1].
        x_in: The model input that ``x0`` was computed from (requires grad).
        x0: Predicted clean latents, a differentiable function of ``x_in``.
        class_ids: Target class per item, (N,).
    """
    logits = classifier(decode(x0))  # (N, C)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    selected = log_probs.gather(1, class_ids.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(selected, x_in)
    return grad
