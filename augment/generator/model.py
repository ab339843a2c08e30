"""The generator bundle: autoencoder + class-conditional denoiser + noise schedule, saved and
loaded as one folder, and its ``sample`` (guided, seeded per image)."""

from __future__ import annotations

import inspect
import json
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from diffusers import DDPMScheduler
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.torch_utils import randn_tensor

from augment.config import SamplerConfig
from augment.generator import autoencoder as ae
from augment.generator import denoiser as dn
from augment.generator import schedule
from augment.precision import autocast, resolve_precision

logger = logging.getLogger(__name__)

# Folder layout of a saved generator. Each component is a diffusers save_pretrained folder.
COMPONENTS = ("vae", "denoiser", "scheduler")
METADATA_FILE = "generator.json"

Classifier = Callable[[torch.Tensor], torch.Tensor]


def missing_components(folder: str) -> List[str]:
    """The parts of a saved generator that ``folder`` lacks (empty when complete)."""
    missing = [f"{name}/" for name in COMPONENTS if not os.path.isdir(os.path.join(folder, name))]
    if not os.path.isfile(os.path.join(folder, METADATA_FILE)):
        missing.append(METADATA_FILE)
    return missing


def read_metadata(folder: str) -> Dict[str, Any]:
    """The ``generator.json`` of a saved generator folder."""
    with open(os.path.join(folder, METADATA_FILE)) as f:
        return json.load(f)


def _accepts_generator(sampler) -> bool:
    return "generator" in inspect.signature(sampler.step).parameters


class LatentDiffusionGenerator:
    """A class-conditional latent diffusion model ready to sample.

    Args:
        vae: A diffusers ``AutoencoderKL`` or ``AutoencoderTiny``.
        denoiser: A ``UNet2DModel`` or ``DiTTransformer2DModel`` with ``C + 1`` class embeddings.
        noise_scheduler: The training scheduler; its config is the noise schedule.
        class_names: Class names, indexed by class id.
        metadata: Everything else saved in ``generator.json``: ``scaling_factor``, ``shift_factor``,
            ``image_size``, ``mode``, ``fingerprint``, the resolved config and training metrics.
    """

    def __init__(
        self,
        vae: ModelMixin,
        denoiser: ModelMixin,
        noise_scheduler: DDPMScheduler,
        class_names: Sequence[str],
        metadata: Dict[str, Any],
    ) -> None:
        self.vae = vae.eval().requires_grad_(False)
        self.denoiser = denoiser.eval().requires_grad_(False)
        self.noise_scheduler = noise_scheduler
        self.class_names = list(class_names)
        self.metadata = dict(metadata)
        if dn.null_class_id(denoiser) != len(self.class_names):
            raise ValueError(
                f"the denoiser has {dn.null_class_id(denoiser)} class embeddings besides the null "
                f"class but class_names has {len(self.class_names)} entries: {self.class_names}"
            )

    # ----------------------------------------------------------------------------- properties
    @property
    def null_class_id(self) -> int:
        return dn.null_class_id(self.denoiser)

    @property
    def latent_shape(self) -> Tuple[int, int, int]:
        channels, size = dn.shape_info(self.denoiser)
        return channels, size, size

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        size = self.latent_shape[1] * ae.downsampling_factor(self.vae)
        return int(self.vae.config.in_channels), size, size

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def scaling_factor(self) -> float:
        return float(self.metadata["scaling_factor"])

    @property
    def shift_factor(self) -> float:
        return float(self.metadata.get("shift_factor", 0.0))

    def to(self, device: torch.device | str) -> "LatentDiffusionGenerator":
        self.vae.to(device)
        self.denoiser.to(device)
        return self

    # ------------------------------------------------------------------------------- save/load
    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``vae/``, ``denoiser/``, ``scheduler/`` (safetensors + JSON) and ``generator.json``."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self.vae.save_pretrained(os.path.join(path, "vae"))
        self.denoiser.save_pretrained(os.path.join(path, "denoiser"))
        self.noise_scheduler.save_pretrained(os.path.join(path, "scheduler"))
        metadata = {**self.metadata, "class_names": self.class_names}
        tmp = os.path.join(path, METADATA_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(path, METADATA_FILE))  # written last: marks the folder complete

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str | os.PathLike, device: torch.device | str | None = None
    ) -> "LatentDiffusionGenerator":
        """Load a saved generator from a local folder or a Hub id.

        Raises:
            ValueError: The folder lacks a component (each missing one is named).
        """
        folder = os.fspath(path_or_hub_id)
        if not os.path.isdir(folder):
            from huggingface_hub import snapshot_download

            folder = snapshot_download(folder)
        missing = missing_components(folder)
        if missing:
            raise ValueError(
                f"generator.path={os.fspath(path_or_hub_id)!r} is missing {missing}; a saved "
                f"generator has {[f'{c}/' for c in COMPONENTS] + [METADATA_FILE]}"
            )
        metadata = read_metadata(folder)
        vae = ae.load_autoencoder(folder, "vae")
        denoiser = dn.load_denoiser(os.path.join(folder, "denoiser"))
        scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
        class_names = metadata.pop("class_names")
        generator = cls(vae, denoiser, scheduler, class_names, metadata)
        return generator.to(device) if device is not None else generator

    # ------------------------------------------------------------------------ latent <-> image
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> normalised latents (zero mean, unit variance on the training set)."""
        raw = ae.encode(self.vae, images.to(self.device, self.vae.dtype))
        return (raw.float() - self.shift_factor) * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> images in [0, 1]."""
        raw = latents / self.scaling_factor + self.shift_factor
        return (ae.decode(self.vae, raw.to(self.vae.dtype)).float() + 1) / 2

    # -------------------------------------------------------------------------------- sampling
    def guidance_scales(self, class_ids: Sequence[int], sampler: SamplerConfig) -> torch.Tensor:
        """Classifier-free guidance scale per item: ``guidance_per_class`` or the global scale."""
        per_class = sampler.guidance_per_class or {}
        scales = [
            float(per_class.get(self.class_names[c], sampler.guidance_scale)) for c in class_ids
        ]
        return torch.tensor(scales, device=self.device)

    def sample(
        self,
        class_ids: Sequence[int],
        seeds: Sequence[int],
        sampler: SamplerConfig,
        *,
        init_images: Optional[torch.Tensor] = None,
        variation: Optional[Sequence[bool]] = None,
        classifier: Optional[Classifier] = None,
    ) -> torch.Tensor:
        """Generate one image per (class id, seed).

        Item ``i`` draws all its randomness (initial noise, SDEdit noise, stochastic sampler noise)
        from ``torch.Generator().manual_seed(seeds[i])``, so it is the same image whatever the batch
        size or the other items. Items with ``variation[i]`` start from ``init_images[i]`` encoded
        and noised to ``sampler.variation_strength`` (SDEdit, Meng et al. 2022).

        Args:
            class_ids: Class id per item.
            seeds: Seed per item.
            sampler: Sampler name, steps, guidance and variation strength.
            init_images: (N, C, H, W) in [-1, 1]; needed where ``variation`` is true.
            variation: Per item, whether to start from ``init_images[i]``.
            classifier: Images in [0, 1] -> logits; used when
                ``sampler.classifier_guidance_scale > 0`` (Dhariwal & Nichol 2021).

        Returns:
            (N, C, H, W) float images in [0, 1], on the CPU.

        Raises:
            ValueError: Mismatched lengths, unknown class ids, or variation without init images.
        """
        n = len(class_ids)
        variation = [False] * n if variation is None else [bool(v) for v in variation]
        self._check_sample_args(class_ids, seeds, variation, init_images, sampler, classifier)
        out = torch.empty((n, *self.image_shape))
        dtype = resolve_precision(sampler.precision, self.device)
        # Variation items start mid-schedule: they run as their own group (multistep samplers keep a
        # history per run); per-item seeds make the grouping invisible in the output.
        for flag in (False, True):
            idx = [i for i in range(n) if variation[i] == flag]
            if not idx:
                continue
            init = init_images[idx] if flag else None
            with autocast(dtype, self.device):
                images = self._sample_group(
                    [class_ids[i] for i in idx], [seeds[i] for i in idx], sampler, init, classifier
                )
            out[idx] = images.cpu()
        return out

    def _check_sample_args(self, class_ids, seeds, variation, init_images, sampler, classifier):
        n = len(class_ids)
        if len(seeds) != n or len(variation) != n:
            raise ValueError(
                f"sample() got {n} class_ids, {len(seeds)} seeds and {len(variation)} variation "
                "flags; they must have the same length"
            )
        bad = sorted({int(c) for c in class_ids if not 0 <= int(c) < len(self.class_names)})
        if bad:
            raise ValueError(
                f"class_ids {bad} are not in range(0, {len(self.class_names)}) "
                f"(classes {self.class_names})"
            )
        if any(variation) and (init_images is None or len(init_images) != n):
            raise ValueError(
                f"variation items need init_images with one image per item ({n}); got "
                f"{None if init_images is None else len(init_images)}"
            )
        if sampler.classifier_guidance_scale > 0 and classifier is None:
            raise ValueError(
                f"sampler.classifier_guidance_scale={sampler.classifier_guidance_scale} needs a "
                "classifier (images in [0, 1] -> logits)"
            )

    def _sample_group(self, class_ids, seeds, sampler_cfg, init_images, classifier) -> torch.Tensor:
        sampler = schedule.build_sampler(self.noise_scheduler, sampler_cfg.name)
        sampler.set_timesteps(sampler_cfg.num_inference_steps, device=self.device)
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        labels = torch.tensor(list(class_ids), device=self.device, dtype=torch.long)
        scales = self.guidance_scales(class_ids, sampler_cfg)
        noise = randn_tensor((len(seeds), *self.latent_shape), generator=generators, device=self.device)
        timesteps = sampler.timesteps
        if init_images is None:
            x = noise * sampler.init_noise_sigma
        else:  # SDEdit: skip the first (1 - strength) of the steps
            steps = len(timesteps)
            start = steps - max(1, round(steps * sampler_cfg.variation_strength))
            timesteps = timesteps[start:]
            if hasattr(sampler, "set_begin_index"):
                sampler.set_begin_index(start)
            with torch.no_grad():
                z0 = self.encode(init_images)
            x = sampler.add_noise(z0, noise, timesteps[:1].repeat(len(seeds)))
        cg_scale = sampler_cfg.classifier_guidance_scale if classifier is not None else 0.0
        # Stochastic samplers draw their step noise from the items' own generators too.
        step_kwargs = {"generator": generators} if _accepts_generator(sampler) else {}
        ones = torch.ones_like(scales)
        for t in timesteps:
            step_scales = scales if self._guided_step(t, sampler_cfg) else ones
            model_out = self._guided_output(sampler, x, t, labels, step_scales, classifier, cg_scale)
            x = sampler.step(model_out, t, x, **step_kwargs).prev_sample
        with torch.no_grad():
            return self.decode(x).clamp(0, 1)

    def _guided_step(self, t: torch.Tensor, sampler_cfg: SamplerConfig) -> bool:
        """Whether classifier-free guidance applies at timestep ``t`` (``sampler.guidance_interval``)."""
        if sampler_cfg.guidance_interval is None:
            return True
        lo, hi = sampler_cfg.guidance_interval
        level = float(t) / self.noise_scheduler.config.num_train_timesteps
        return lo < level <= hi

    def _guided_output(self, sampler, x, t, labels, scales, classifier, cg_scale) -> torch.Tensor:
        """Model output at step ``t`` with classifier-free and (optionally) classifier guidance."""
        x_in = sampler.scale_model_input(x, t)
        t_batch = t.reshape(1).expand(len(x)).to(self.device)
        with torch.enable_grad() if cg_scale > 0 else torch.no_grad():
            if cg_scale > 0:
                x_in = x_in.detach().requires_grad_(True)
            model_out = self._cfg_output(x_in, t_batch, labels, scales)
            if cg_scale == 0:
                return model_out
            prediction_type = self.noise_scheduler.config.prediction_type
            alpha_bar = schedule.alpha_bar_at(self.noise_scheduler, t_batch)
            x0 = schedule.predicted_x0(model_out, x_in, alpha_bar, prediction_type)
            grad = schedule.class_log_prob_grad(classifier, self.decode, x_in, x0, labels)
        shift = schedule.classifier_guidance_shift(grad, alpha_bar, prediction_type, cg_scale)
        return model_out.detach() + shift

    def _cfg_output(self, x, t, labels, scales) -> torch.Tensor:
        """Conditional and null-class passes in ONE batched forward, combined per item."""
        if bool((scales == 1).all()):  # conditional only: the null pass would cancel out
            return dn.predict(self.denoiser, x, t, labels).float()  # fp32 for the sampler's update
        null = torch.full_like(labels, self.null_class_id)
        both = dn.predict(
            self.denoiser, torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])
        ).float()  # combined and stepped in fp32 whatever the autocast dtype
        cond, uncond = both.chunk(2)
        return schedule.guided_output(cond, uncond, scales)
