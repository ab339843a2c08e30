"""Generator performance figures, all measured in one run on one machine.

    python pipelines/bench_generator.py [--generator outputs/demo/generator] [--images 256] [--repeats 3]
        [--train-steps 20] [--skip-processes] [job overrides...]

Prints:
  1. sampling images/s of the project's sampler (``LatentDiffusionGenerator.sample``) against a plain
     diffusers loop over the very same components (same denoiser, autoencoder, scheduler config,
     steps, guidance scale and batch): the textbook loop with a conditional and an unconditional
     forward pass per step (the conditional one only at guidance <= 1, as diffusers pipelines
     do), fp32, under ``torch.no_grad``; the project's sampler both at its configured precision
     (``sampler.precision``, auto = bf16 where native) and at fp32;
  2. training steps/s of the autoencoder and the denoiser with the default config;
  3. with ``--generator``: the whole job on that saved generator (the configured filter included) on
     1 process against 2 processes (``torchrun --nproc_per_node=2``) with the same total number of
     threads, and each run's "filter + write" time as a share of its sampling time.

Without ``--generator`` the components are built untrained from the default config (throughput does
not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from diffusers.utils.torch_utils import randn_tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from augment.api import compose_config  # noqa: E402
from augment.generator import LatentDiffusionGenerator, build_sampler  # noqa: E402
from augment.generator import autoencoder as ae  # noqa: E402
from augment.generator import denoiser as dn  # noqa: E402
from augment.generator import schedule  # noqa: E402
from augment.generator.training import make_accelerator, train_autoencoder, train_denoiser  # noqa: E402
from augment.precision import resolve_precision  # noqa: E402


def untrained_generator(cfg, channels: int, resolution: int, n_classes: int) -> LatentDiffusionGenerator:
    vae = ae.build_autoencoder(cfg.autoencoder, channels, resolution).eval()
    factor = ae.downsampling_factor(vae)
    denoiser = dn.build_denoiser(cfg.denoiser, cfg.autoencoder.latent_channels, resolution // factor, n_classes).eval()
    meta = {"scaling_factor": 1.0, "shift_factor": 0.0, "mode": "L" if channels == 1 else "RGB"}
    return LatentDiffusionGenerator(vae, denoiser, schedule.build_noise_scheduler(cfg.schedule),
                                    [str(c) for c in range(n_classes)], meta)


@torch.no_grad()
def stock_loop(gen: LatentDiffusionGenerator, class_ids, seeds, steps: int, guidance: float) -> torch.Tensor:
    """What a diffusers user writes: fp32, a conditional and an unconditional forward pass per step
    (only the conditional one at guidance <= 1, as diffusers pipelines do), then decode."""
    sched = build_sampler(gen.noise_scheduler, "dpmsolver++")
    sched.set_timesteps(steps)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    latents = randn_tensor((len(seeds), *gen.latent_shape), generator=generators) * sched.init_noise_sigma
    labels = torch.tensor(class_ids)
    null = torch.full_like(labels, gen.null_class_id)
    for t in sched.timesteps:
        x = sched.scale_model_input(latents, t)
        tt = t.reshape(1).expand(len(x))
        cond = dn.predict(gen.denoiser, x, tt, labels)
        if guidance > 1:
            uncond = dn.predict(gen.denoiser, x, tt, null)
            cond = uncond + guidance * (cond - uncond)
        latents = sched.step(cond, t, latents).prev_sample
    return gen.decode(latents).clamp(0, 1)


def timed(fns: dict, repeats: int) -> dict:
    """Median seconds of ``repeats`` calls of each function, after one warm-up call each.

    The calls are interleaved (a, b, c, a, b, c, ...), so a slow phase of a shared machine falls on
    every function alike instead of on whichever ran then.
    """
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def bench_sampling(gen, sampler, n_images: int, repeats: int) -> dict:
    class_ids = [i % len(gen.class_names) for i in range(n_images)]
    seeds = list(range(n_images))
    exact = replace(sampler, precision="fp32")
    t = timed({
        "ours": lambda: gen.sample(class_ids, seeds, sampler),
        "ours_fp32": lambda: gen.sample(class_ids, seeds, exact),
        "stock": lambda: stock_loop(gen, class_ids, seeds, sampler.num_inference_steps, sampler.guidance_scale),
    }, repeats)
    ours, ours_fp32, stock = t["ours"], t["ours_fp32"], t["stock"]
    a = gen.sample(class_ids[:8], seeds[:8], exact)
    b = stock_loop(gen, class_ids[:8], seeds[:8], sampler.num_inference_steps, sampler.guidance_scale)
    c = gen.sample(class_ids[:8], seeds[:8], sampler)
    return {"project img/s": n_images / ours, "project img/s (fp32)": n_images / ours_fp32,
            "stock img/s": n_images / stock, "speed-up": stock / ours, "speed-up (fp32)": stock / ours_fp32,
            "max |project fp32 - stock|": float((a - b).abs().max()),
            "mean |project - project fp32|": float((c - a).abs().mean())}


def bench_training(cfg, channels: int, resolution: int, steps: int) -> dict:
    accelerator = make_accelerator(cfg.denoiser)
    images = torch.rand(512, channels, resolution, resolution) * 2 - 1
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        ae_cfg = replace(cfg.autoencoder, steps=steps)
        _, m = train_autoencoder(images, ae_cfg, checkpoint_dir=Path(tmp) / "ae", seed=0, accelerator=accelerator)
        out["autoencoder steps/s"] = steps / m["seconds"]
        factor = 2 ** (len(cfg.autoencoder.block_out_channels) - 1)
        latents = torch.randn(512, cfg.autoencoder.latent_channels, resolution // factor, resolution // factor)
        labels = torch.arange(512) % 10
        gcfg = replace(cfg, denoiser=replace(cfg.denoiser, steps=steps, checkpoint_every=10**9))
        _, m = train_denoiser(latents, labels, 10, gcfg, noise_scheduler=schedule.build_noise_scheduler(cfg.schedule),
                              checkpoint_dir=Path(tmp) / "dn", seed=0, accelerator=accelerator)
        out["denoiser steps/s"] = steps / m["seconds"]
    return out


FILTER_SHARE = re.compile(r"filter \+ write: ([0-9.]+) s = ([0-9.]+)% of the generation time \(([0-9.]+) s\)")


def bench_processes(generator_dir: Path, threads: int, overrides: list[str]) -> dict:
    """Wall time of the whole job (a saved generator, the configured filter) on 1 vs 2 processes, and
    the job's own "filter + write" share of the generation time (scoring, keep rules, PNG encoding
    and writing the dataset, against sampling; the filter classifier's training is not in it)."""
    out = {}
    common = ["-m", "augment", f"generator.path={generator_dir}", "output.include_test=false", *overrides]
    for nproc in (1, 2):
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // nproc)), "HF_HUB_OFFLINE": "1"}
        with tempfile.TemporaryDirectory() as tmp:
            launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                                              "--master_port=29555"]
            cmd = [sys.executable, *launcher, *common, f"output.dir={tmp}/out"]
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            out[f"job wall s, {nproc} process(es)"] = time.perf_counter() - start
            share = FILTER_SHARE.search(proc.stdout + proc.stderr)
            if share:  # absent with filter=none
                out[f"filter + write s, {nproc} process(es)"] = float(share.group(1))
                out[f"sampling s, {nproc} process(es)"] = float(share.group(3))
                out[f"filter + write share %, {nproc} process(es)"] = float(share.group(2))
    out["2-process speed-up"] = out["job wall s, 1 process(es)"] / out["job wall s, 2 process(es)"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", type=Path, help="a saved generator folder (default: untrained, default config)")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--skip-processes", action="store_true")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the job config")
    args = parser.parse_args()

    cfg, _ = compose_config(args.overrides)
    gcfg = cfg.generator
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.generator:
        gen = LatentDiffusionGenerator.from_pretrained(str(args.generator), device=device)
    else:
        gen = untrained_generator(gcfg, 1, cfg.dataset.resolution or 32, 10).to(device)
    sampler = replace(gcfg.sampler, batch_size=args.images)
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"device {device}, threads {torch.get_num_threads()}")
    precision = resolve_precision(sampler.precision, torch.device(device))
    print(f"# sampler: {sampler.name}, {sampler.num_inference_steps} steps, guidance {sampler.guidance_scale}, "
          f"interval {sampler.guidance_interval}, precision {sampler.precision} -> {precision or 'fp32'}, "
          f"batch {args.images}, denoiser {sum(p.numel() for p in gen.denoiser.parameters()) / 1e6:.2f}M parameters, "
          f"latents {tuple(gen.latent_shape)}")
    figures = bench_sampling(gen, sampler, args.images, args.repeats)
    figures.update(bench_training(gcfg, 1, cfg.dataset.resolution or 32, args.train_steps))
    if args.generator and not args.skip_processes:
        figures.update(bench_processes(args.generator, torch.get_num_threads(), args.overrides))
    print("| figure | value |\n| --- | ---: |")
    for key, value in figures.items():
        print(f"| {key} | {value:.4g} |")


if __name__ == "__main__":
    main()
