"""Long-tail benchmark: does the toolkit's synthetic data help a classifier on a long-tailed source?

One fixed classifier recipe (architecture, steps, augmentation, optimiser) is trained on each arm's
data and evaluated on the balanced test split, every arm over the same (>= 3) seeds:

1. ``ce``: the real long-tailed train split, cross-entropy;
2. ``resample``: the same data drawn class-balanced (sample weights 1 / n_c);
3. ``logit_adjust``: the same data with the logit-adjusted loss (Menon et al. 2021);
4. ``synthetic_filtered``: real + the toolkit's filtered synthetic images;
5. ``synthetic_unfiltered``: real + synthetic images kept without the filter (ablation);
6. ``oracle``: balanced real data (the imbalance-ratio-1 source), where the dataset has it.

Diagnostic arm, off unless listed in ``arms_enabled``: ``oracle_autoencoded``, the oracle's extra
images sent through a generator's autoencoder (``arms.oracle_autoencoded.generator``): the most any
generator in that latent space can give arm 4.

Writes ``results.csv`` (one row per arm and seed; finished rows are not recomputed on a rerun),
``summary.csv``, ``summary.md`` (with the command line and machine) and ``summary.png``.

Usage::

    python pipelines/long_tail_benchmark.py [overrides]      # e.g. seeds=[0,1,2,3,4] device=cpu
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import datasets
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score
from torch import nn

from augment.config import DatasetConfig
from augment.data import SourceData, load_source
from augment.export import DATASET_DIR
from augment.filter.classifier import ARCHITECTURES as FILTER_ARCHITECTURES
from augment.filter.classifier import build_network, init_weights
from augment.images import MODE_CHANNELS, check_choice, dataset_to_tensors, tensor_to_pil, to_tensor
from augment.sources import LONG_TAILED_KINDS

logger = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent / "conf"
CONFIG_NAME = "benchmark"
MIN_SEEDS = 3  # fewer give no spread worth reporting
RARE_CLASSES = 3  # "rare-3 recall": mean recall of the three classes with the fewest train images
SHIFT_PIXELS = 2  # augmentation: random translation of up to this many pixels each way
LOG_EVERY = 250  # training steps between loss lines
METRICS = ("balanced_accuracy", "macro_f1", "rare3_recall")
METRIC_LABELS = {"balanced_accuracy": "bal. acc", "macro_f1": "macro-F1", "rare3_recall": "rare-3 recall"}
RESULT_COLUMNS = ("arm", "seed", *METRICS, "n_train", "n_synthetic", "seconds", "device", "fingerprint")
FINGERPRINT_CHARS = 12


# ----------------------------------------------------------------------------- config


@dataclass
class ClassifierRecipe:
    """The one classifier recipe every arm shares."""

    arch: str = "tiny_cnn"
    widths: List[int] = field(default_factory=lambda: [16, 32, 64])
    resolution: Optional[int] = None  # null = the source image size (must be square)
    steps: int = 1000
    batch_size: int = 128
    lr: float = 2.0e-3
    warmup_steps: int = 50
    weight_decay: float = 5.0e-4
    augment: str = "shift"
    logit_adjust_tau: float = 1.0
    eval_batch_size: int = 512


@dataclass
class SyntheticArmConfig:
    dataset: Optional[str] = None  # <output.dir>/dataset of a finished toolkit run; null = run it here
    overrides: List[str] = field(default_factory=list)


@dataclass
class AutoencodedArmConfig:
    generator: Optional[str] = None  # a saved generator folder (<output.dir>/generator of a toolkit run)


@dataclass
class ArmsConfig:
    synthetic_filtered: SyntheticArmConfig = field(default_factory=SyntheticArmConfig)
    synthetic_unfiltered: SyntheticArmConfig = field(
        default_factory=lambda: SyntheticArmConfig(overrides=["filter=none"])
    )
    oracle_autoencoded: AutoencodedArmConfig = field(default_factory=AutoencodedArmConfig)


@dataclass
class BenchmarkConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    data_seed: int = 0
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    allow_few_seeds: bool = False
    arms_enabled: List[str] = field(default_factory=lambda: list(DEFAULT_ARMS))
    classifier: ClassifierRecipe = field(default_factory=ClassifierRecipe)
    arms: ArmsConfig = field(default_factory=ArmsConfig)
    device: str = "auto"
    num_threads: Optional[int] = None
    output_dir: str = "outputs/benchmark"


def register_configs() -> None:
    ConfigStore.instance().store(name="benchmark_schema", node=BenchmarkConfig)


def compose_benchmark(overrides: Sequence[str] = ()) -> BenchmarkConfig:
    """Compose ``pipelines/conf/benchmark.yaml`` with Hydra overrides, as the command line does."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="benchmark"):
        cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides))
    return OmegaConf.to_object(cfg)


# ----------------------------------------------------------------------------- classifier recipe


def _tiny_cnn(in_chans: int, num_classes: int, widths: Sequence[int]) -> nn.Module:
    """Conv-BN-ReLU-pool stages and a linear head: ~1 min of training on mnist_lt on 2 CPU cores."""
    layers, c_in = [], in_chans
    for c_out in widths:
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                   nn.MaxPool2d(2)]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))


# classifier.arch -> (recipe, mode, num_classes) -> network; the filter's networks are offered too.
ARCHITECTURES: Dict[str, Callable[[ClassifierRecipe, str, int], nn.Module]] = {
    "tiny_cnn": lambda recipe, mode, n: _tiny_cnn(MODE_CHANNELS[mode], n, recipe.widths),
    **{name: (lambda recipe, mode, n, name=name: build_network(name, mode, n)[0])
       for name in FILTER_ARCHITECTURES},
}


def build_classifier(recipe: ClassifierRecipe, mode: str, num_classes: int, seed: int) -> nn.Module:
    """The recipe's network for ``mode`` ("L" or "RGB") images, initialised from ``seed``."""
    check_choice("classifier.arch", recipe.arch, ARCHITECTURES)
    net = ARCHITECTURES[recipe.arch](recipe, mode, num_classes)
    init_weights(net, _generator(seed, stream=0))
    return net


def _generator(seed: int, stream: int) -> torch.Generator:
    """An independent CPU generator per (seed, use): init and data order never share a stream."""
    state = np.random.SeedSequence((seed, stream)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Translate each image by up to SHIFT_PIXELS in x and y, edges replicated."""
    n, _, h, w = x.shape
    padded = F.pad(x, (SHIFT_PIXELS,) * 4, mode="replicate")  # (N, C, H + 2p, W + 2p)
    dy, dx = torch.randint(0, 2 * SHIFT_PIXELS + 1, (2, n), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
    return padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # (N, C, H, W)


def _shift_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=g) < 0.5  # (N,)
    x = _shift(x, g)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


AUGMENTATIONS: Dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "none": lambda x, g: x,
    "shift": _shift,
    "shift_flip": _shift_flip,
}


def _uniform_batches(labels: torch.Tensor, batch_size: int, g: torch.Generator) -> Iterator[torch.Tensor]:
    """Epochs of random permutations, cut into batches (every image once per epoch)."""
    buffer = torch.empty(0, dtype=torch.long)
    while True:
        while len(buffer) < batch_size:
            buffer = torch.cat([buffer, torch.randperm(len(labels), generator=g)])
        yield buffer[:batch_size]
        buffer = buffer[batch_size:]


def _class_balanced_batches(labels: torch.Tensor, batch_size: int, g: torch.Generator) -> Iterator[torch.Tensor]:
    """Each image drawn with weight 1 / n_c, so every class is drawn equally often."""
    counts = torch.bincount(labels).double()
    weights = 1.0 / counts[labels]  # (N,)
    while True:
        yield torch.multinomial(weights, batch_size, replacement=True, generator=g)


SAMPLERS: Dict[str, Callable[[torch.Tensor, int, torch.Generator], Iterator[torch.Tensor]]] = {
    "uniform": _uniform_batches,
    "class_balanced": _class_balanced_batches,
}


def batch_indices(
    labels: torch.Tensor, sampler: str, batch_size: int, g: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless batches of row indices, drawn by ``sampler`` (a key of :data:`SAMPLERS`)."""
    check_choice("sampler", sampler, SAMPLERS)
    return SAMPLERS[sampler](labels, batch_size, g)


def logit_adjusted_loss(
    logits: torch.Tensor, targets: torch.Tensor, log_prior: torch.Tensor, tau: float
) -> torch.Tensor:
    """Logit-adjusted softmax cross-entropy, Menon et al. 2021 ("Long-tail learning via logit
    adjustment", eq. 10): CE on ``logits + tau * log(prior)``; predictions use the raw logits."""
    return F.cross_entropy(logits + tau * log_prior, targets)


LOSSES: Dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "ce": lambda logits, targets, log_prior, tau: F.cross_entropy(logits, targets),
    "logit_adjust": logit_adjusted_loss,
}


def log_prior_of(labels: torch.Tensor, num_classes: int, class_names: Sequence[str]) -> torch.Tensor:
    """log of the class frequencies; every class needs an image (log 0 has no adjustment)."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    if (counts == 0).any():
        missing = [class_names[c] for c in torch.nonzero(counts == 0).flatten().tolist()]
        raise ValueError(f"loss 'logit_adjust' needs images of every class; classes without any: {missing}")
    return torch.log(counts / counts.sum()).float()


def _schedule(recipe: ClassifierRecipe) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 0."""
    def factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = (step - recipe.warmup_steps) / max(recipe.steps - recipe.warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def fit_classifier(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
                   recipe: ClassifierRecipe, *, mode: str, seed: int, sampler: str = "uniform",
                   loss: str = "ce", device: str | torch.device = "cpu") -> nn.Module:
    """Train the recipe's classifier.

    Args:
        images: ``(N, C, R, R)`` in [-1, 1], kept on the CPU (batches move to ``device``).
        labels: ``(N,)`` class ids.
        class_names: Class names, indexed by class id.
        recipe: The classifier recipe.
        mode: "L" or "RGB", matching ``C``.
        seed: Seeds the initial weights, the batch order and the augmentation (separate streams).
        sampler: A key of :data:`SAMPLERS`.
        loss: A key of :data:`LOSSES`.
        device: Where to train.

    Returns:
        The trained network, in eval mode, on ``device``.
    """
    check_choice("loss", loss, LOSSES)
    check_choice("classifier.augment", recipe.augment, AUGMENTATIONS)
    n_classes = len(class_names)
    log_prior = log_prior_of(labels, n_classes, class_names) if loss == "logit_adjust" else torch.zeros(n_classes)
    net = build_classifier(recipe, mode, n_classes, seed).to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(recipe))
    data_gen = _generator(seed, stream=1)
    batches = batch_indices(labels, sampler, recipe.batch_size, data_gen)
    log_prior = log_prior.to(device)
    for step in range(recipe.steps):
        idx = next(batches)  # (B,)
        x = AUGMENTATIONS[recipe.augment](images[idx], data_gen).to(device)
        value = LOSSES[loss](net(x), labels[idx].to(device), log_prior, recipe.logit_adjust_tau)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        scheduler.step()
        if (step + 1) % LOG_EVERY == 0:
            logger.info("step %d/%d loss %.4f", step + 1, recipe.steps, value.item())
    return net.eval()


@torch.no_grad()
def predict(net: nn.Module, images: torch.Tensor, batch_size: int, device: str | torch.device) -> np.ndarray:
    """Predicted class ids ``(N,)`` of ``images`` ``(N, C, R, R)``."""
    starts = range(0, len(images), batch_size)
    return torch.cat([net(images[i : i + batch_size].to(device)).argmax(-1).cpu() for i in starts]).numpy()


# ----------------------------------------------------------------------------- metrics


def rarest_classes(train_counts: Sequence[int], n: int = RARE_CLASSES) -> list[int]:
    """The ``n`` class ids with the fewest train images (ties: the lower id first)."""
    return sorted(range(len(train_counts)), key=lambda c: (train_counts[c], c))[:n]


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, train_counts: Sequence[int]) -> dict[str, float]:
    """Balanced accuracy, macro-F1 and the mean recall of the three rarest classes (by train count)."""
    labels = list(range(len(train_counts)))
    recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "rare3_recall": float(np.mean(recalls[rarest_classes(train_counts)])),
    }


def gap_closed(means: dict[str, float]) -> tuple[dict[str, float], str | None]:
    """(arm - ce) / (oracle - ce) of each arm's mean balanced accuracy.

    Returns:
        ``{arm: gap closed}`` (NaN for every arm when it is undefined) and a note saying why it is
        undefined, or None.
    """
    if "ce" not in means or "oracle" not in means:
        return {arm: math.nan for arm in means}, "gap closed needs both the ce and the oracle arms"
    gap = means["oracle"] - means["ce"]
    if gap == 0:
        note = (f"oracle and ce have the same mean balanced accuracy ({means['ce']:.4f}): "
                "there is no gap to close, so gap closed is undefined")
        return {arm: math.nan for arm in means}, note
    return {arm: (mean - means["ce"]) / gap for arm, mean in means.items()}, None


# ----------------------------------------------------------------------------- arms and their data


@dataclass(frozen=True)
class Arm:
    data: str  # a key of ARM_DATA: which images the classifier trains on
    sampler: str  # a key of SAMPLERS
    loss: str  # a key of LOSSES


ARMS: Dict[str, Arm] = {
    "ce": Arm("real", "uniform", "ce"),
    "resample": Arm("real", "class_balanced", "ce"),
    "logit_adjust": Arm("real", "uniform", "logit_adjust"),
    "synthetic_filtered": Arm("synthetic", "uniform", "ce"),
    "synthetic_unfiltered": Arm("synthetic", "uniform", "ce"),
    "oracle": Arm("oracle", "uniform", "ce"),
    # Diagnostic, not one of the six: the ceiling of any generator in this latent space.
    "oracle_autoencoded": Arm("oracle_autoencoded", "uniform", "ce"),
}
DEFAULT_ARMS = ("ce", "resample", "logit_adjust", "synthetic_filtered", "synthetic_unfiltered", "oracle")
BALANCED_SOURCE_ARMS = ("oracle", "oracle_autoencoded")  # need the dataset's imbalance-ratio-1 source


@dataclass
class Images:
    images: torch.Tensor  # (N, C, R, R) in [-1, 1]
    labels: torch.Tensor  # (N,)
    n_synthetic: int = 0


@dataclass
class BenchmarkData:
    """The long-tailed source, decoded once at the classifier's resolution."""

    source: SourceData
    resolution: int
    train: Images
    test: Images

    @property
    def train_counts(self) -> list[int]:
        return [self.source.counts[c] for c in range(len(self.source.class_names))]

    def decode(self, ds: datasets.Dataset, resize: str) -> Images:
        return Images(*dataset_to_tensors(ds, self.source.mode, self.resolution, resize))


def load_benchmark_data(cfg: BenchmarkConfig) -> BenchmarkData:
    """Load ``cfg.dataset`` (rows picked by ``data_seed``) and decode both splits."""
    source = load_source(cfg.dataset, cfg.data_seed)
    if source.test is None:
        raise ValueError(
            f"dataset.test_split={cfg.dataset.test_split!r}: {source.origin} has no test split; "
            "allowed: a dataset with a (balanced) test split, which the benchmark evaluates on"
        )
    resolution = cfg.classifier.resolution
    if resolution is None:
        width, height = source.source_size
        if width != height:
            raise ValueError(f"classifier.resolution=None: the source images are {width}x{height}, not "
                             "square; allowed: an integer >= 1")
        resolution = width
    empty = Images(torch.empty(0), torch.empty(0, dtype=torch.long))
    data = BenchmarkData(source, resolution, empty, empty)
    data.train = data.decode(source.train, cfg.dataset.resize)
    data.test = data.decode(source.test, cfg.dataset.resize)
    return data


def _real_data(arm: str, cfg: BenchmarkConfig, data: BenchmarkData) -> Images:
    return data.train


def _balanced_source(cfg: BenchmarkConfig) -> SourceData:
    """The imbalance-ratio-1 source: every class as large as the head class, same test split."""
    return load_source(replace(cfg.dataset, imbalance_ratio=1.0), cfg.data_seed)


def _oracle_data(arm: str, cfg: BenchmarkConfig, data: BenchmarkData) -> Images:
    return data.decode(_balanced_source(cfg).train, cfg.dataset.resize)


def _oracle_autoencoded_data(arm: str, cfg: BenchmarkConfig, data: BenchmarkData) -> Images:
    """The real train split plus the oracle's other images, each sent through the generator's
    autoencoder (encode, decode, exported as the toolkit exports a synthetic image).

    What a perfect denoiser would add: real variety, at the fidelity of the latent space. Its
    score is the ceiling of arm 4 with that autoencoder; the oracle minus it is what the
    autoencoder costs, it minus arm 4 what the denoiser and the filter cost.
    """
    from augment.generator import LatentDiffusionGenerator

    balanced = _balanced_source(cfg)
    real_rows = {row.numpy().tobytes() for row in data.train.images}
    oracle = data.decode(balanced.train, cfg.dataset.resize)
    surplus = [i for i, row in enumerate(oracle.images) if row.numpy().tobytes() not in real_rows]
    gen = LatentDiffusionGenerator.from_pretrained(cfg.arms.oracle_autoencoded.generator)
    channels, resolution, _ = gen.image_shape
    if channels != MODE_CHANNELS[balanced.mode]:
        raise ValueError(f"arms.oracle_autoencoded.generator={cfg.arms.oracle_autoencoded.generator!r} makes "
                         f"{channels}-channel images; the source is {balanced.mode} "
                         f"({MODE_CHANNELS[balanced.mode]} channel(s))")
    images, labels = dataset_to_tensors(balanced.train.select(surplus), balanced.mode, resolution, cfg.dataset.resize)
    rebuilt = []
    with torch.inference_mode():
        for start in range(0, len(images), cfg.classifier.eval_batch_size):
            batch = images[start:start + cfg.classifier.eval_batch_size]
            rebuilt += tensor_to_pil(gen.decode(gen.encode(batch)), balanced.mode, balanced.source_size,
                                     cfg.dataset.resize)
    extra = to_tensor(rebuilt, balanced.mode, data.resolution, cfg.dataset.resize)
    psnr = 10 * math.log10(4 / float(((extra - oracle.images[surplus]) ** 2).mean()))
    logger.info("%s: %d real + %d autoencoded oracle images (PSNR %.2f dB at %dx%d)", arm, len(data.train.labels),
                len(extra), psnr, data.resolution, data.resolution)
    return Images(torch.cat([data.train.images, extra]), torch.cat([data.train.labels, labels]),
                  n_synthetic=len(extra))


def _synthetic_data(arm: str, cfg: BenchmarkConfig, data: BenchmarkData) -> Images:
    """The real train split plus the synthetic rows of a toolkit output (the real part is always
    the benchmark's own, so every arm shares it exactly)."""
    arm_cfg: SyntheticArmConfig = getattr(cfg.arms, arm)
    path = arm_cfg.dataset or run_toolkit(arm, cfg)
    rows = synthetic_rows(path, data.source.class_names, f"arms.{arm}.dataset")
    synthetic = data.decode(rows, cfg.dataset.resize)
    real = data.train
    logger.info("%s: %d real + %d synthetic images from %s", arm, len(real.labels), len(synthetic.labels), path)
    return Images(torch.cat([real.images, synthetic.images]), torch.cat([real.labels, synthetic.labels]),
                  n_synthetic=len(synthetic.labels))


ARM_DATA: Dict[str, Callable[[str, BenchmarkConfig, BenchmarkData], Images]] = {
    "real": _real_data,
    "oracle": _oracle_data,
    "oracle_autoencoded": _oracle_autoencoded_data,
    "synthetic": _synthetic_data,
}


def synthetic_rows(path: str, class_names: Sequence[str], field_name: str) -> datasets.Dataset:
    """The ``is_synthetic`` rows of the train split of a toolkit output (``<output.dir>/dataset``)."""
    if not os.path.isdir(path):
        raise ValueError(f"{field_name}={path!r} is not a folder; allowed: <output.dir>/dataset of a toolkit run")
    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise ValueError(f"{field_name}={path!r} has splits {list(ds)}; allowed: a dataset with a train split")
        ds = ds["train"]
    missing = sorted({"image", "label", "is_synthetic"} - set(ds.column_names))
    if missing:
        raise ValueError(f"{field_name}={path!r} lacks the column(s) {missing}; allowed: a toolkit output")
    names = getattr(ds.features["label"], "names", None)
    if names != list(class_names):
        raise ValueError(
            f"{field_name}={path!r} has classes {names}; the benchmark's source has {list(class_names)}"
        )
    flags = ds.with_format("arrow")[:].column("is_synthetic").to_pylist()
    return ds.select([i for i, flag in enumerate(flags) if flag])


def _override_value(value) -> str:
    """A value written as a Hydra override accepts it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def toolkit_overrides(dataset: DatasetConfig, seed: int, out_dir: Path) -> list[str]:
    """Toolkit overrides that make it balance exactly the benchmark's source into ``out_dir``."""
    fields = (f"dataset.{key}={_override_value(value)}" for key, value in asdict(dataset).items())
    return [f"dataset={dataset.kind}", *fields, f"seed={seed}", f"output.dir={_override_value(str(out_dir))}"]


def run_toolkit(arm: str, cfg: BenchmarkConfig) -> str:
    """Run ``augment.balance`` for a synthetic arm (once: a finished output is reused)."""
    out_dir = Path(cfg.output_dir) / "toolkit" / arm
    finished = out_dir / DATASET_DIR
    if finished.is_dir():
        logger.info("%s: reusing the toolkit output %s", arm, finished)
        return str(finished)
    from augment.api import balance

    overrides = toolkit_overrides(cfg.dataset, cfg.data_seed, out_dir) + list(getattr(cfg.arms, arm).overrides)
    logger.info("%s: running the toolkit with %s", arm, " ".join(overrides))
    # balance() composes the toolkit's config with Hydra, which refuses to start inside this Hydra
    # job: step out of the job's Hydra for the call, then step back in.
    global_hydra = GlobalHydra.instance()
    job_hydra = global_hydra.hydra
    global_hydra.clear()
    try:
        balance(overrides=overrides)
    finally:
        global_hydra.clear()
        global_hydra.hydra = job_hydra
    return str(finished)


# ----------------------------------------------------------------------------- the job


def _resolve_auto() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


DEVICES: Dict[str, Callable[[], str]] = {"auto": _resolve_auto, "cpu": lambda: "cpu", "cuda": lambda: "cuda"}


def validate(cfg: BenchmarkConfig) -> None:
    """Config errors that need no data: fail before anything is loaded or trained."""
    if not cfg.arms_enabled or len(set(cfg.arms_enabled)) != len(cfg.arms_enabled):
        raise ValueError(f"arms_enabled={cfg.arms_enabled} must list distinct arms; allowed: {', '.join(ARMS)}")
    for arm in cfg.arms_enabled:
        check_choice("arms_enabled", arm, ARMS)
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"seeds={cfg.seeds} repeats a seed; allowed: distinct seeds")
    if len(cfg.seeds) < MIN_SEEDS and not cfg.allow_few_seeds:
        raise ValueError(f"seeds={cfg.seeds} has {len(cfg.seeds)} seed(s); allowed: at least {MIN_SEEDS} "
                         "distinct seeds (allow_few_seeds=true lets fewer through, for tests)")
    for arm in BALANCED_SOURCE_ARMS:
        if arm in cfg.arms_enabled and cfg.dataset.kind not in LONG_TAILED_KINDS:
            raise ValueError(f"arms_enabled includes {arm!r} but dataset.kind={cfg.dataset.kind!r} has no balanced "
                             f"source; allowed kinds for the {arm} arm: {', '.join(LONG_TAILED_KINDS)}")
    if "oracle_autoencoded" in cfg.arms_enabled and not cfg.arms.oracle_autoencoded.generator:
        raise ValueError("arms_enabled includes 'oracle_autoencoded' but arms.oracle_autoencoded.generator is "
                         "null; allowed: a saved generator folder, e.g. <output.dir>/generator of a toolkit run")
    check_choice("device", cfg.device, DEVICES)
    if DEVICES[cfg.device]() == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device!r} but no CUDA device is available; allowed: auto, cpu")
    check_choice("classifier.arch", cfg.classifier.arch, ARCHITECTURES)
    check_choice("classifier.augment", cfg.classifier.augment, AUGMENTATIONS)
    for name in ("steps", "batch_size", "eval_batch_size"):
        if getattr(cfg.classifier, name) < 1:
            raise ValueError(f"classifier.{name}={getattr(cfg.classifier, name)!r}; allowed: an integer >= 1")


def arm_fingerprint(cfg: BenchmarkConfig, arm: str) -> str:
    """What a result depends on besides the seed; a row with another fingerprint is recomputed."""
    parts = {"dataset": asdict(cfg.dataset), "data_seed": cfg.data_seed, "classifier": asdict(cfg.classifier),
             "arm": arm, "arm_config": asdict(getattr(cfg.arms, arm)) if hasattr(cfg.arms, arm) else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:FINGERPRINT_CHARS]


def load_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return pd.read_csv(path, dtype={"arm": str, "device": str, "fingerprint": str}).to_dict("records")


def save_results(rows: list[dict], path: Path) -> None:
    """Written to a temporary file, then renamed: an interrupted run never leaves half a CSV."""
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(rows, columns=list(RESULT_COLUMNS)).to_csv(tmp, index=False)
    os.replace(tmp, path)


def run_one(arm: str, seed: int, train: Images, data: BenchmarkData, cfg: BenchmarkConfig, device: str) -> dict:
    """Train the recipe on one arm's data with one seed; its metrics on the test split."""
    spec, started = ARMS[arm], time.perf_counter()
    net = fit_classifier(train.images, train.labels, data.source.class_names, cfg.classifier,
                         mode=data.source.mode, seed=seed, sampler=spec.sampler, loss=spec.loss, device=device)
    pred = predict(net, data.test.images, cfg.classifier.eval_batch_size, device)
    metrics = evaluate(data.test.labels.numpy(), pred, data.train_counts)
    seconds = time.perf_counter() - started
    shown = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
    logger.info("%s seed %d: %s (%.0f s)", arm, seed, shown, seconds)
    return {"arm": arm, "seed": seed, **metrics, "n_train": len(train.labels), "n_synthetic": train.n_synthetic,
            "seconds": round(seconds, 1), "device": device}


def run_benchmark(cfg: BenchmarkConfig, command: str = "") -> pd.DataFrame:
    """Run every enabled arm over every seed (skipping finished rows), then write the summary.

    Args:
        cfg: The composed benchmark config.
        command: The command line, recorded in summary.md.

    Returns:
        The summary table (one row per arm, see :func:`summarize`).
    """
    validate(cfg)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    device = DEVICES[cfg.device]()
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.csv"
    rows = load_results(results_path)
    data = load_benchmark_data(cfg)
    for arm in cfg.arms_enabled:
        fingerprint = arm_fingerprint(cfg, arm)
        stale = [r for r in rows if r["arm"] == arm and r["fingerprint"] != fingerprint]
        if stale:
            logger.warning("%s: %d row(s) of results.csv come from another config; recomputing them",
                           arm, len(stale))
            rows = [r for r in rows if not (r["arm"] == arm and r["fingerprint"] != fingerprint)]
        done = {int(r["seed"]) for r in rows if r["arm"] == arm}
        todo = [seed for seed in cfg.seeds if seed not in done]
        if not todo:
            logger.info("%s: every seed is in results.csv; skipped", arm)
            continue
        train = ARM_DATA[ARMS[arm].data](arm, cfg, data)
        for seed in todo:
            rows.append({**run_one(arm, seed, train, data, cfg, device), "fingerprint": fingerprint})
            save_results(rows, results_path)
    summary, notes = summarize(pd.DataFrame(rows, columns=list(RESULT_COLUMNS)), cfg.arms_enabled, cfg.seeds)
    notes.append(_rare_note(data))
    write_summary(summary, notes, out_dir, command, _describe(cfg, data, device))
    return summary


# ----------------------------------------------------------------------------- summary


def summarize(results: pd.DataFrame, arms: Sequence[str], seeds: Sequence[int]) -> tuple[pd.DataFrame, list[str]]:
    """Mean and std (over seeds, ddof=1) of each metric per arm, and the gap closed.

    Returns:
        The table (arm, n_seeds, <metric>_mean, <metric>_std, gap_closed; arms in ``arms`` order)
        and notes for summary.md.
    """
    picked = results[results["arm"].isin(arms) & results["seed"].isin(seeds)]
    stats = picked.groupby("arm")[list(METRICS)].agg(["mean", "std"])
    table = pd.DataFrame({"arm": [arm for arm in arms if arm in stats.index]})
    table["n_seeds"] = [int((picked["arm"] == arm).sum()) for arm in table["arm"]]
    for metric in METRICS:
        for stat in ("mean", "std"):
            table[f"{metric}_{stat}"] = [float(stats.loc[arm, (metric, stat)]) for arm in table["arm"]]
    gaps, note = gap_closed(dict(zip(table["arm"], table["balanced_accuracy_mean"])))
    table["gap_closed"] = [gaps[arm] for arm in table["arm"]]
    return table, [note] if note else []


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}" if math.isfinite(std) else f"{mean:.4f} ± n/a"


def markdown_table(summary: pd.DataFrame) -> str:
    """arm | seeds | bal. acc | macro-F1 | rare-3 recall (mean ± std) | gap closed."""
    header = ["arm", "seeds", *(f"{METRIC_LABELS[m]} (mean ± std)" for m in METRICS), "gap closed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.to_dict("records"):
        cells = [row["arm"], str(row["n_seeds"])]
        cells += [_mean_std(row[f"{m}_mean"], row[f"{m}_std"]) for m in METRICS]
        cells.append(f"{row['gap_closed']:.3f}" if math.isfinite(row["gap_closed"]) else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rare_note(data: BenchmarkData) -> str:
    counts, names = data.train_counts, data.source.class_names
    rare = ", ".join(f"{names[c]} ({counts[c]} train images)" for c in rarest_classes(counts))
    return f"rare-3 recall: mean test recall of the three classes with the fewest train images: {rare}"


def _describe(cfg: BenchmarkConfig, data: BenchmarkData, device: str) -> list[str]:
    gpu = f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""
    recipe = cfg.classifier
    return [
        f"Machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"device {device}{gpu}, Python {platform.python_version()} on {platform.platform()}",
        f"Data: {data.source.describe()}; test {len(data.test.labels)} images; data seed {cfg.data_seed}",
        f"Recipe: {recipe.arch} at {data.resolution}x{data.resolution}, "
        f"{recipe.steps} steps of {recipe.batch_size}, "
        f"AdamW lr {recipe.lr:g} (warm-up {recipe.warmup_steps}, cosine), weight decay {recipe.weight_decay:g}, "
        f"augment {recipe.augment}, logit-adjust tau {recipe.logit_adjust_tau:g}; seeds {list(cfg.seeds)}",
    ]


def write_summary(summary: pd.DataFrame, notes: list[str], out_dir: Path, command: str, about: list[str]) -> None:
    """summary.csv, summary.md (command, machine, table, notes) and summary.png."""
    summary.to_csv(out_dir / "summary.csv", index=False)
    lines = ["# Long-tail benchmark", "", f"Command: `{command}`", "", *(f"- {line}" for line in about), "",
             markdown_table(summary), "", "Gap closed = (arm - ce) / (oracle - ce) on mean balanced accuracy.", ""]
    lines += [f"- {note}" for note in notes]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    plot_summary(summary, out_dir / "summary.png")


def plot_summary(summary: pd.DataFrame, path: Path) -> None:
    """Grouped bars: one group per metric, one bar per arm, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(summary), 1)
    for i, row in enumerate(summary.to_dict("records")):
        x = np.arange(len(METRICS)) + (i - (len(summary) - 1) / 2) * width
        ax.bar(x, [row[f"{m}_mean"] for m in METRICS], width, label=row["arm"],
               yerr=[np.nan_to_num(row[f"{m}_std"]) for m in METRICS], capsize=3)
    ax.set_xticks(np.arange(len(METRICS)), [METRIC_LABELS[m] for m in METRICS])
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean over seeds (± std)")
    ax.legend(fontsize="small", ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _main(cfg) -> None:
    summary = run_benchmark(OmegaConf.to_object(cfg), command="python " + shlex.join(sys.argv))
    print(markdown_table(summary))


if __name__ == "__main__":
    import hydra

    register_configs()
    hydra.main(config_path=str(CONF_DIR), config_name=CONFIG_NAME, version_base="1.3")(_main)()
