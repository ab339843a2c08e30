"""Training: the autoencoder, then the class-conditional denoiser on cached latents, with
``accelerate`` for every device decision (one CPU process, one GPU, or DDP on several GPUs).

Every random draw (data order, noise, timesteps, label dropout) comes from an explicit
``torch.Generator`` seeded from the run seed, whose state is checkpointed: a run is reproducible
from ``seed``, and a killed run resumes to the same weights as one that was never interrupted.
Each process draws the *global* batch and keeps its own rows, so the data seen does not depend on
the number of processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDPMScheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from tqdm.auto import tqdm

from augment.config import AutoencoderConfig, DenoiserConfig, GeneratorConfig
from augment.generator import autoencoder as ae
from augment.generator import checkpoint as ckpt
from augment.generator import denoiser as dn
from augment.generator import schedule
from augment.generator.model import LatentDiffusionGenerator, missing_components, read_metadata
from augment.generator.validation import (
    CLASS_BALANCE,
    check_training_data,
    resolve_mixed_precision,
    validate_generator_config,
)

logger = logging.getLogger(__name__)

AE_HOLDOUT_FRACTION = 0.1  # share of real images held out of autoencoder training for its PSNR
PSNR_MAX_IMAGES = 1024  # a loaded autoencoder's PSNR is measured on at most this many images
MAX_GRAD_NORM = 1.0
# EMA warmup (diffusers EMAModel): decay(step) = 1 - (1 + step) ** -power, capped at ema_decay.
# A plain 0.999 EMA over a few thousand steps still averages in early, bad weights.
EMA_WARMUP_POWER = 2 / 3
GENERATOR_DIR = "generator"
ENCODE_BATCH_SIZE = 256
AE_METRICS_FILE = "metrics.json"


def stage_seed(seed: int, stage: str) -> int:
    """A 63-bit seed for one stage (autoencoder, denoiser), derived from the run seed."""
    digest = hashlib.sha256(f"{seed}/{stage}".encode()).hexdigest()
    return int(digest[:15], 16)


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Deterministic weight initialisation without touching the caller's global RNG.

    diffusers models initialise from the global torch RNG; forking it (and restoring it on exit)
    makes the initial weights a function of the run seed only, whatever ran before.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def make_accelerator(cfg: DenoiserConfig) -> Accelerator:
    """An ``Accelerator`` with the configured mixed precision ("auto" resolved for this device)."""
    return Accelerator(mixed_precision=resolve_mixed_precision(cfg.mixed_precision))


def run_fingerprint(data_fp: str, class_names: Sequence[str], mode: str, seed: int,
                    cfg: GeneratorConfig) -> str:
    """Fingerprint of everything that changes the trained weights (not the sampler, not logging)."""
    training = dataclasses.asdict(cfg)
    training.pop("sampler")
    training.pop("path")
    for key in ("checkpoint_every", "log_every"):
        training["denoiser"].pop(key)
    return ckpt.fingerprint("generator", data_fp, list(class_names), mode, seed, training)


# --------------------------------------------------------------------------------- the loop
def _training_step(model, optimizer, loss_fn, grad_accum: int, accelerator: Accelerator) -> float:
    """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss."""
    total = 0.0
    for micro in range(grad_accum):
        last = micro == grad_accum - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            loss = loss_fn(model) / grad_accum
            accelerator.backward(loss)
        total += loss.item()
    accelerator.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


@dataclasses.dataclass
class LoopSpec:
    """What one training loop needs besides the model and its loss."""

    name: str
    steps: int
    lr: float
    weight_decay: float
    warmup_steps: int
    grad_accum: int
    checkpoint_every: int
    log_every: int
    checkpoint_dir: Path
    lr_schedule: str = "constant"  # constant | cosine: after the linear warm-up


def lr_factor(step: int, spec: LoopSpec) -> float:
    """Multiplier of ``spec.lr`` at optimizer step ``step`` (0-based): linear warm-up, then
    constant or a cosine decay that reaches 0 at the last step."""
    warmup = max(spec.warmup_steps, 1)
    if step < warmup:
        return (step + 1) / warmup
    if spec.lr_schedule == "constant":
        return 1.0
    progress = (step - warmup + 1) / max(spec.steps - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def run_loop(
    spec: LoopSpec,
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module], torch.Tensor],
    generator: torch.Generator,
    accelerator: Accelerator,
    ema: Optional[EMAModel] = None,
) -> List[float]:
    """Train ``model`` for ``spec.steps`` optimizer steps, resuming from the last checkpoint.

    Returns:
        The loss of every step (resumed runs include the steps before the interruption).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, spec))
    parts = {"model": model, "optimizer": optimizer, "lr_schedule": lr_schedule, "ema": ema}
    start, losses = _resume(spec.checkpoint_dir, parts, generator)
    if ema is not None:
        ema.to(accelerator.device)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    bar = tqdm(range(start, spec.steps), initial=start, total=spec.steps, desc=spec.name,
               disable=not accelerator.is_local_main_process)
    for step in bar:
        losses.append(_training_step(wrapped, optimizer, loss_fn, spec.grad_accum, accelerator))
        lr_schedule.step()
        if ema is not None:
            ema.step(model.parameters())
        done = step + 1
        if done % spec.log_every == 0 or done == spec.steps:
            recent = sum(losses[-spec.log_every:]) / len(losses[-spec.log_every:])
            bar.set_postfix(loss=f"{recent:.4f}")
            if accelerator.is_main_process:
                logger.info("%s step %d/%d loss %.5f", spec.name, done, spec.steps, recent)
        if done % spec.checkpoint_every == 0 and done < spec.steps:
            if accelerator.is_main_process:
                state = {name: part.state_dict() for name, part in parts.items() if part is not None}
                state.update(generator=generator.get_state(), losses=losses)
                ckpt.save_checkpoint(spec.checkpoint_dir, done, state)
            accelerator.wait_for_everyone()
    bar.close()
    return losses


def _resume(folder: Path, parts: Dict[str, Any], generator: torch.Generator) -> Tuple[int, List[float]]:
    """Load the latest checkpoint into ``parts`` and ``generator``; returns (step, losses so far)."""
    state = ckpt.load_latest_checkpoint(folder)
    if state is None:
        return 0, []
    for name, part in parts.items():
        if part is not None:
            part.load_state_dict(state[name])
    generator.set_state(state["generator"])
    return state["step"], list(state["losses"])


def loss_summary(losses: Sequence[float], window: int) -> Dict[str, Optional[float]]:
    """Mean loss of the first and of the last ``window`` steps."""
    head, tail = losses[:window], losses[-window:]
    return {"initial_loss": sum(head) / len(head) if head else None,
            "final_loss": sum(tail) / len(tail) if tail else None}


def _rank_rows(batch: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """This process's rows of a globally drawn batch."""
    return batch[accelerator.process_index :: accelerator.num_processes]


# ------------------------------------------------------------------------------ autoencoder
def train_autoencoder(
    images: torch.Tensor, cfg: AutoencoderConfig, *, checkpoint_dir: Path, seed: int,
    accelerator: Accelerator,
) -> Tuple[AutoencoderKL, Dict[str, Any]]:
    """Train an ``AutoencoderKL`` on images in [-1, 1], holding a share out for its PSNR.

    Returns:
        The autoencoder (eval mode) and its metrics (held-out PSNR, final loss, seconds).
    """
    generator = torch.Generator().manual_seed(stage_seed(seed, "autoencoder"))
    order = torch.randperm(len(images), generator=generator)
    n_holdout = max(1, round(len(images) * AE_HOLDOUT_FRACTION)) if len(images) > 1 else 0
    holdout, train = images[order[:n_holdout]], images[order[n_holdout:]]
    with seeded_init(stage_seed(seed, "autoencoder-init")):
        vae = ae.build_autoencoder(cfg, images.shape[1], images.shape[-1])
    objective = ae.AutoencoderKLLoss(vae, cfg.kl_weight)
    latent_shape = (cfg.latent_channels, *(s // ae.downsampling_factor(vae) for s in images.shape[2:]))
    device = accelerator.device

    def loss_fn(model: torch.nn.Module) -> torch.Tensor:
        idx = torch.randint(0, len(train), (cfg.batch_size,), generator=generator)
        noise = torch.randn((cfg.batch_size, *latent_shape), generator=generator)
        batch, noise = _rank_rows(train[idx], accelerator), _rank_rows(noise, accelerator)
        with accelerator.autocast():
            return model(batch.to(device), noise.to(device))

    spec = LoopSpec("autoencoder", cfg.steps, cfg.lr, 0.0, 0, 1, _checkpoint_every(cfg.steps),
                    _log_every(cfg.steps), checkpoint_dir, cfg.lr_schedule)
    started = time.perf_counter()
    losses = run_loop(spec, objective, loss_fn, generator, accelerator)
    vae.eval()
    psnr = ae.reconstruction_psnr(vae, holdout.to(device), ENCODE_BATCH_SIZE) if n_holdout else None
    metrics = {"psnr_holdout_db": psnr, **loss_summary(losses, spec.log_every),
               "seconds": time.perf_counter() - started, "holdout_images": n_holdout,
               "parameters": dn.parameter_count(vae)}
    logger.info("autoencoder: held-out PSNR %s dB", None if psnr is None else f"{psnr:.2f}")
    return vae, metrics


# Autoencoder checkpoints: its config has no checkpoint_every; checkpoint ~10 times per run.
AE_CHECKPOINTS_PER_RUN = 10
AE_LOGS_PER_RUN = 20


def _checkpoint_every(steps: int) -> int:
    return max(1, steps // AE_CHECKPOINTS_PER_RUN)


def _log_every(steps: int) -> int:
    return max(1, steps // AE_LOGS_PER_RUN)


# --------------------------------------------------------------------------------- denoiser
def example_weights(labels: torch.Tensor, class_balance: str) -> torch.Tensor:
    """Sampling weight per training example: ``n_class ** -power`` (power from CLASS_BALANCE).

    none: every example equally likely; sqrt: a class is drawn in proportion to sqrt(n_class);
    balanced: every class equally often.
    """
    counts = torch.bincount(labels)
    return counts[labels].double() ** -CLASS_BALANCE[class_balance]


def _per_example_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(a.float(), b.float(), reduction="none").mean(dim=tuple(range(1, a.ndim)))


def train_denoiser(
    latents: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: GeneratorConfig, *,
    noise_scheduler: DDPMScheduler, checkpoint_dir: Path, seed: int, accelerator: Accelerator,
) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Train the class-conditional denoiser on normalised latents (N, c, h, w).

    Returns:
        The denoiser holding its EMA weights (eval mode) and its metrics.
    """
    dcfg, scfg = cfg.denoiser, cfg.schedule
    with seeded_init(stage_seed(seed, "denoiser-init")):
        model = dn.build_denoiser(dcfg, latents.shape[1], latents.shape[-1], num_classes)
    ema = EMAModel(model.parameters(), decay=dcfg.ema_decay, use_ema_warmup=True,
                   power=EMA_WARMUP_POWER)
    null_id = dn.null_class_id(model)
    weights = example_weights(labels, dcfg.class_balance)
    generator = torch.Generator().manual_seed(stage_seed(seed, "denoiser"))
    steps_t = noise_scheduler.config.num_train_timesteps
    device = accelerator.device

    def loss_fn(wrapped: torch.nn.Module) -> torch.Tensor:
        size = dcfg.batch_size
        idx = torch.multinomial(weights, size, replacement=True, generator=generator)
        drop = torch.rand(size, generator=generator) < dcfg.label_dropout
        y = torch.where(drop, null_id, labels[idx])  # label dropout for classifier-free guidance
        t = torch.randint(0, steps_t, (size,), generator=generator)
        noise = torch.randn((size, *latents.shape[1:]), generator=generator)
        x0, y, t, noise = (_rank_rows(v, accelerator).to(device) for v in (latents[idx], y, t, noise))
        noisy = noise_scheduler.add_noise(x0, noise, t)
        target = schedule.training_target(noise_scheduler, x0, noise, t)
        weight = schedule.loss_weights(noise_scheduler, t, scfg.min_snr_gamma)
        if dcfg.cbdm_weight == 0:
            with accelerator.autocast():
                pred = dn.predict(wrapped, noisy, t, y)
            return (_per_example_mse(pred, target) * weight).mean()
        other = torch.randint(0, num_classes, (size,), generator=generator)  # CBDM's y' (uniform)
        other = _rank_rows(other, accelerator).to(device)
        with accelerator.autocast():  # one forward pass for both labels (DDP sees one call)
            pred, pred_other = dn.predict(wrapped, torch.cat([noisy, noisy]), torch.cat([t, t]),
                                          torch.cat([y, other])).chunk(2)
        conditional = (y != null_id).float()  # the regulariser ties class predictions, not the null one
        reg = (_per_example_mse(pred, pred_other.detach())
               + dcfg.cbdm_gamma * _per_example_mse(pred.detach(), pred_other)) * conditional
        return ((_per_example_mse(pred, target) + dcfg.cbdm_weight * reg) * weight).mean()

    spec = LoopSpec("denoiser", dcfg.steps, dcfg.lr, dcfg.weight_decay, dcfg.warmup_steps,
                    dcfg.grad_accum, dcfg.checkpoint_every, dcfg.log_every, checkpoint_dir, dcfg.lr_schedule)
    started = time.perf_counter()
    losses = run_loop(spec, model, loss_fn, generator, accelerator, ema=ema)
    ema.copy_to(model.parameters())
    metrics = {**loss_summary(losses, dcfg.log_every), "seconds": time.perf_counter() - started,
               "parameters": dn.parameter_count(model)}
    return model.eval(), metrics


# ----------------------------------------------------------------------------- orchestrator
def _autoencoder_stage(images, cfg: AutoencoderConfig, data_fp: str, seed: int, work_dir: Path,
                       accelerator: Accelerator):
    """The autoencoder: loaded from ``cfg.path``, reused from an earlier run, or trained."""
    if cfg.path:
        vae = ae.load_autoencoder(cfg.path, cfg.subfolder).to(accelerator.device).eval()
        sample = images[:PSNR_MAX_IMAGES].to(accelerator.device, vae.dtype)
        return vae, {"path": cfg.path, "psnr_db": ae.reconstruction_psnr(vae, sample, ENCODE_BATCH_SIZE)}
    recipe = dataclasses.replace(cfg, scaling_factor=None)  # normalisation is applied after training
    fp = ckpt.short(ckpt.fingerprint("autoencoder", data_fp, recipe, seed))
    folder = work_dir / f"autoencoder-{fp}"
    if not (folder / SAFETENSORS_WEIGHTS_NAME).is_file():
        vae, metrics = train_autoencoder(images, cfg, checkpoint_dir=work_dir / "checkpoints" /
                                         f"autoencoder-{fp}", seed=seed, accelerator=accelerator)
        if accelerator.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / AE_METRICS_FILE).write_text(json.dumps(metrics, indent=2))
            vae.save_pretrained(folder)  # the weights file, written last, marks the folder complete
        accelerator.wait_for_everyone()
    vae = AutoencoderKL.from_pretrained(folder).to(accelerator.device).eval()
    return vae, json.loads((folder / AE_METRICS_FILE).read_text())


@torch.no_grad()
def _encoded_latents(vae, images: torch.Tensor, data_fp: str, work_dir: Path,
                     accelerator: Accelerator) -> torch.Tensor:
    """Raw latents of the dataset, encoded once and cached by (data, autoencoder weights)."""
    path = work_dir / f"latents-{ckpt.short(ckpt.fingerprint(data_fp, ckpt.module_digest(vae)))}.safetensors"
    cached = ckpt.load_cached_latents(path)
    if cached is not None:
        return cached
    parts = [ae.encode(vae, images[i : i + ENCODE_BATCH_SIZE].to(accelerator.device, vae.dtype)).float().cpu()
             for i in range(0, len(images), ENCODE_BATCH_SIZE)]
    latents = torch.cat(parts)
    if accelerator.is_main_process:
        ckpt.save_cached_latents(path, latents)
    accelerator.wait_for_everyone()
    return latents


def _reuse_saved(folder: Path, fp: str, device) -> Optional[LatentDiffusionGenerator]:
    if not folder.is_dir() or missing_components(str(folder)):
        return None
    if read_metadata(str(folder)).get("fingerprint") != fp:
        logger.info("%s was trained with another config or data; training again", folder)
        return None
    logger.info("reusing the generator in %s (same fingerprint)", folder)
    return LatentDiffusionGenerator.from_pretrained(folder, device=device)


def train_generator(
    images: torch.Tensor, labels: torch.Tensor, class_names: List[str], cfg: GeneratorConfig, *,
    work_dir: Path, seed: int, mode: str, accelerator: Optional[Accelerator] = None,
    save_dir: Optional[Path] = None,
) -> LatentDiffusionGenerator:
    """Train (or reuse) the generator of a dataset.

    Args:
        images: (N, C, R, R) float in [-1, 1], the real training images.
        labels: (N,) class ids.
        class_names: Class names, indexed by class id.
        cfg: The generator config; ``cfg.path`` set = load that generator instead of training.
        work_dir: Holds checkpoints, the latent cache and the finished ``generator/`` folder.
        seed: Run seed: the same data, config and seed give the same weights.
        mode: Image mode of ``images`` (a key of IMAGE_MODES).
        accelerator: Device placement; default: one built from ``cfg.denoiser.mixed_precision``.
        save_dir: Where the finished generator goes; default ``work_dir/generator``.

    Returns:
        The trained generator (also saved to ``work_dir/generator``).
    """
    validate_generator_config(cfg, class_names)
    check_training_data(images, labels, class_names, mode)
    if cfg.path:
        device = accelerator.device if accelerator is not None else None
        return LatentDiffusionGenerator.from_pretrained(cfg.path, device=device)
    work_dir = Path(work_dir)
    accelerator = accelerator or make_accelerator(cfg.denoiser)
    data_fp = ckpt.tensor_digest(images, labels)
    fp = run_fingerprint(data_fp, class_names, mode, seed, cfg)
    out_dir = Path(save_dir) if save_dir is not None else work_dir / GENERATOR_DIR
    saved = _reuse_saved(out_dir, fp, accelerator.device)
    if saved is not None:
        return saved
    vae, ae_metrics = _autoencoder_stage(images, cfg.autoencoder, data_fp, seed, work_dir, accelerator)
    raw = _encoded_latents(vae, images, data_fp, work_dir, accelerator)
    shift, scale = ae.latent_normalisation(raw)
    if cfg.autoencoder.scaling_factor is not None:
        shift, scale = 0.0, float(cfg.autoencoder.scaling_factor)
    noise_scheduler = schedule.build_noise_scheduler(cfg.schedule)
    denoiser, dn_metrics = train_denoiser(
        (raw - shift) * scale, labels.long(), len(class_names), cfg, noise_scheduler=noise_scheduler,
        checkpoint_dir=work_dir / "checkpoints" / f"denoiser-{ckpt.short(fp)}", seed=seed,
        accelerator=accelerator,
    )
    metadata = {"fingerprint": fp, "mode": mode, "scaling_factor": scale, "shift_factor": shift,
                "seed": seed, "config": dataclasses.asdict(cfg),
                "metrics": {"autoencoder": ae_metrics, "denoiser": dn_metrics}}
    generator = LatentDiffusionGenerator(vae, denoiser, noise_scheduler, class_names, metadata)
    if accelerator.is_main_process:
        _save_atomically(generator, out_dir)
    accelerator.wait_for_everyone()
    return generator


def _save_atomically(generator: LatentDiffusionGenerator, out_dir: Path) -> None:
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    generator.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
