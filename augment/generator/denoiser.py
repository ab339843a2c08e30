"""The class-conditional denoiser: a diffusers ``UNet2DModel`` with a class embedding, or a
DiT-style ``DiTTransformer2DModel``. Both get one embedding more than there are classes: the last
one is the "null" class of classifier-free guidance, and its id is read back from the config.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, Tuple, Type

import torch
from diffusers import DiTTransformer2DModel, UNet2DModel
from diffusers.models.embeddings import LabelEmbedding
from diffusers.models.modeling_utils import ModelMixin

from augment.config import DenoiserConfig


def _build_unet(
    cfg: DenoiserConfig, latent_channels: int, latent_size: int, num_embeds: int
) -> UNet2DModel:
    if len(cfg.attention_levels) != len(cfg.block_out_channels):
        raise ValueError(
            f"denoiser.attention_levels={list(cfg.attention_levels)} needs one entry per "
            f"denoiser.block_out_channels={list(cfg.block_out_channels)}"
        )
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels))
    return UNet2DModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        class_embed_type=None,
        num_class_embeds=num_embeds,
    )


def _build_dit(
    cfg: DenoiserConfig, latent_channels: int, latent_size: int, num_embeds: int
) -> DiTTransformer2DModel:
    model = DiTTransformer2DModel(
        num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim,
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_layers=cfg.num_layers,
        sample_size=latent_size,
        patch_size=cfg.patch_size,
        num_embeds_ada_norm=num_embeds,
    )
    disable_internal_label_dropout(model)
    return model


def disable_internal_label_dropout(model: torch.nn.Module) -> None:
    """Turn off DiT's built-in label dropout.

    Its ``LabelEmbedding`` drops labels with the *global* torch RNG in train mode; the training loop
    drops them itself with its own generator (reproducible runs) to the null id
    ``num_embeds_ada_norm - 1``, the same id sampling uses.
    """
    for module in model.modules():
        if isinstance(module, LabelEmbedding):
            module.dropout_prob = 0.0


@dataclass(frozen=True)
class DenoiserKind:
    """How one denoiser architecture is built, found in a saved folder and conditioned."""

    cls: Type[ModelMixin]
    build: Callable[[DenoiserConfig, int, int, int], ModelMixin]
    num_embeds_key: str  # config key holding the number of class embeddings (classes + null)


# One table: arch name -> how to build it. The saved config's _class_name finds the kind on load.
DENOISERS: Dict[str, DenoiserKind] = {
    "unet": DenoiserKind(UNet2DModel, _build_unet, "num_class_embeds"),
    "dit": DenoiserKind(DiTTransformer2DModel, _build_dit, "num_embeds_ada_norm"),
}


def build_denoiser(
    cfg: DenoiserConfig, latent_channels: int, latent_size: int, num_classes: int
) -> ModelMixin:
    """A fresh denoiser for ``num_classes`` classes plus the null class.

    Raises:
        ValueError: ``cfg.arch`` is not a key of :data:`DENOISERS`.
    """
    if cfg.arch not in DENOISERS:
        raise ValueError(f"denoiser.arch={cfg.arch!r} is not one of {sorted(DENOISERS)}")
    return DENOISERS[cfg.arch].build(cfg, latent_channels, latent_size, num_classes + 1)


def _kind_of(model: ModelMixin) -> DenoiserKind:
    for kind in DENOISERS.values():
        if isinstance(model, kind.cls):
            return kind
    raise ValueError(f"denoiser class {type(model).__name__!r} is not one of {sorted(DENOISERS)}")


def null_class_id(model: ModelMixin) -> int:
    """The null class of classifier-free guidance: the last class embedding."""
    return int(model.config[_kind_of(model).num_embeds_key]) - 1


def latent_size(model: ModelMixin) -> int:
    """Side of the (square) latents the denoiser was built for."""
    size = model.config.sample_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def predict(model: ModelMixin, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One forward pass: latents (N, c, h, w), timesteps (N,), class ids (N,) -> (N, c, h, w)."""
    return model(x, t, class_labels=labels).sample


def load_denoiser(folder: str) -> ModelMixin:
    """Load a saved denoiser of any kind in :data:`DENOISERS`, found by its config's class name."""
    with open(os.path.join(folder, "config.json")) as f:
        class_name = json.load(f).get("_class_name")
    by_class = {kind.cls.__name__: kind for kind in DENOISERS.values()}
    if class_name not in by_class:
        raise ValueError(f"denoiser class {class_name!r} in {folder!r} is not one of {sorted(by_class)}")
    model = by_class[class_name].cls.from_pretrained(folder)
    disable_internal_label_dropout(model)
    return model


def parameter_count(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def shape_info(model: ModelMixin) -> Tuple[int, int]:
    """(latent channels, latent size) read from the denoiser config."""
    return int(model.config.in_channels), latent_size(model)
