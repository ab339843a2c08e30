"""The autoencoder: a diffusers ``AutoencoderKL`` trained on the source images, or any diffusers
autoencoder loaded from a folder or the Hub, plus the latent normalisation computed from the data.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Dict, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny
from diffusers.models.modeling_utils import ModelMixin

from augment.config import AutoencoderConfig

logger = logging.getLogger(__name__)

# Loadable autoencoders, by the ``_class_name`` diffusers writes into their config.json.
AUTOENCODER_CLASSES: Dict[str, Type[ModelMixin]] = {
    "AutoencoderKL": AutoencoderKL,
    "AutoencoderTiny": AutoencoderTiny,
}
CONFIG_NAME = "config.json"


def build_autoencoder(cfg: AutoencoderConfig, channels: int, resolution: int) -> AutoencoderKL:
    """A fresh ``AutoencoderKL``; each entry of ``block_out_channels`` after the first halves the
    resolution (3 entries: 32x32 images -> 8x8 latents)."""
    levels = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=resolution,
    )


def autoencoder_class_name(path: str, subfolder: Optional[str] = None) -> str:
    """The diffusers class named in a saved autoencoder's config (local folder or Hub id).

    Raises:
        ValueError: The class is not one of :data:`AUTOENCODER_CLASSES`.
    """
    folder = os.path.join(path, subfolder) if subfolder else path
    if os.path.isdir(folder):
        config_file = os.path.join(folder, CONFIG_NAME)
    else:
        from huggingface_hub import hf_hub_download

        config_file = hf_hub_download(path, CONFIG_NAME, subfolder=subfolder)
    with open(config_file) as f:
        name = json.load(f).get("_class_name")
    if name not in AUTOENCODER_CLASSES:
        raise ValueError(
            f"autoencoder.path={path!r} holds a {name!r}, not one of {sorted(AUTOENCODER_CLASSES)}"
        )
    return name


def load_autoencoder(path: str, subfolder: Optional[str] = None) -> ModelMixin:
    """Load an ``AutoencoderKL`` or ``AutoencoderTiny`` from a local folder or a Hub id."""
    cls = AUTOENCODER_CLASSES[autoencoder_class_name(path, subfolder)]
    kwargs = {"subfolder": subfolder} if subfolder else {}
    return cls.from_pretrained(path, **kwargs)


def encode(vae: ModelMixin, images: torch.Tensor) -> torch.Tensor:
    """Deterministic latents of images in [-1, 1]: the posterior mean for ``AutoencoderKL``."""
    out = vae.encode(images)
    latents = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latents
    # The posterior mean is a strided view of the moments; kernels may round differently on
    # another memory layout, so make it the same dense layout a reload from the cache gives.
    return latents.contiguous()


def decode(vae: ModelMixin, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (clamped) from raw (unnormalised) latents."""
    return vae.decode(latents).sample.clamp(-1, 1)


def downsampling_factor(vae: ModelMixin) -> int:
    """How many image pixels one latent pixel spans, read from the autoencoder's config."""
    config = vae.config
    if "block_out_channels" in config:  # AutoencoderKL: one downsample between levels
        return 2 ** (len(config.block_out_channels) - 1)
    return config.upsampling_scaling_factor ** (len(config.decoder_block_out_channels) - 1)


def latent_normalisation(latents: torch.Tensor) -> Tuple[float, float]:
    """Shift and scaling factor that give the training latents zero mean and unit variance.

    Rombach et al. 2022 (Sec. 4.3.2, "rescale the latent by the component-wise standard
    deviation"): a diffusion schedule assumes unit-variance data, so its signal-to-noise ratios are
    only right if the latents have it too.

    Returns:
        ``(shift, scale)``: normalised latents are ``(z - shift) * scale``.
    """
    shift = latents.float().mean().item()
    scale = 1.0 / latents.float().std().item()
    return shift, scale


class AutoencoderKLLoss(torch.nn.Module):
    """The training objective of an ``AutoencoderKL`` as one module, so a DDP wrapper around it
    sees the whole forward pass (``encode`` and ``decode`` are not ``forward``).

    L1 + MSE reconstruction plus a small KL term (the "KL-reg" autoencoder of Rombach et al. 2022):
    L1 keeps strokes sharp, MSE weights large errors, the KL weight only keeps latents bounded.
    """

    def __init__(self, vae: AutoencoderKL, kl_weight: float) -> None:
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight

    def forward(self, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Loss of a batch; ``noise`` (latent-shaped, standard normal) samples the posterior."""
        posterior = self.vae.encode(images).latent_dist
        z = posterior.mean + posterior.std * noise  # reparameterised sample
        recon = self.vae.decode(z).sample
        rec = F.l1_loss(recon.float(), images) + F.mse_loss(recon.float(), images)
        kl = posterior.kl().mean()  # summed over latent dims, averaged over the batch (LDM recipe)
        return rec + self.kl_weight * kl


@torch.no_grad()
def reconstruction_psnr(vae: ModelMixin, images: torch.Tensor, batch_size: int) -> float:
    """Peak signal-to-noise ratio (dB) of reconstructions of images in [-1, 1] (peak-to-peak 2)."""
    se, count = 0.0, 0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        recon = decode(vae, encode(vae, batch))
        se += F.mse_loss(recon.float(), batch.float(), reduction="sum").item()
        count += batch.numel()
    mse = se / max(count, 1)
    peak = 2.0  # images span [-1, 1]
    return float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)
