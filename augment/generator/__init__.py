"""Class-conditional latent diffusion generator: train it, save/load it, sample from it.

Public API::

    generator = train_generator(images, labels, class_names, cfg, work_dir=..., seed=0, mode="L")
    images = generator.sample(class_ids, seeds, cfg.sampler)  # (N, C, H, W) in [0, 1]
    generator = LatentDiffusionGenerator.from_pretrained(path)
"""

from augment.generator.model import LatentDiffusionGenerator
from augment.generator.schedule import SAMPLERS, build_sampler
from augment.generator.training import train_generator
from augment.generator.validation import SAMPLE_MODES, validate_generator_config

__all__ = [
    "LatentDiffusionGenerator",
    "SAMPLERS",
    "SAMPLE_MODES",
    "build_sampler",
    "train_generator",
    "validate_generator_config",
]
