"""The filter's classifier: architectures, training on the real data, saving, loading a user's one.

A :class:`FilterClassifier` takes images in [0, 1] of any size and either image mode, brings them to
its own mode, resolution and normalisation, and returns calibrated logits (divided by the
temperature fitted on a held-out split, see :mod:`augment.filter.calibration`) and the L2-normalised
penultimate features used to find near-duplicates.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from augment.precision import autocast


logger = logging.getLogger(__name__)

MODES = {"L": 1, "RGB": 3}  # image mode -> channels
# ITU-R BT.601 luma weights, what PIL's convert("L") uses to turn RGB into grey.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Classifiers trained here see [-1, 1] (the generator's range): (x - 0.5) / 0.5.
TRAINED_MEAN, TRAINED_STD = 0.5, 0.5
# torchvision's own models expect ImageNet normalisation.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
WEIGHTS_FILE, META_FILE = "classifier.safetensors", "classifier.json"
PREDICT_BATCH_SIZE = 256
# small_cnn's base width (its stages have width, 2 x width and 4 x width channels). On mnist_lt 16
# filters as well as 32 did (long-tail benchmark arm 4: 0.928 vs 0.929), 3x faster (BENCHMARKS.md).
SMALL_CNN_WIDTH = 16
RESNET_STEM_WIDTH = 64  # torchvision resnet18's first conv width


def _resnet18(in_chans: int, num_classes: int) -> nn.Module:
    """torchvision resnet18 for small inputs: 3x3 stride-1 stem, no max-pool (as for CIFAR)."""
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_chans, RESNET_STEM_WIDTH, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def _small_cnn(in_chans: int, num_classes: int, width: int = SMALL_CNN_WIDTH) -> nn.Module:
    """Five 3x3 conv-BN-ReLU layers with two 2x pools: fast on 28-32 px digits, even on a CPU."""
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    w1, w2, w3 = width, 2 * width, 4 * width
    return nn.Sequential(
        *block(in_chans, w1), *block(w1, w1), nn.MaxPool2d(2),
        *block(w1, w2), *block(w2, w2), nn.MaxPool2d(2),
        *block(w2, w3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(w3, num_classes),
    )


# Architectures built for the data's mode: (in_chans, num_classes) -> network.
ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet18": _resnet18,
    "small_cnn": _small_cnn,
}


def build_network(arch: str, mode: str, num_classes: int, *, width: int | None = None) -> tuple[nn.Module, str]:
    """Build an untrained network by name.

    Args:
        arch: A key of :data:`ARCHITECTURES`, or any torchvision classification model name
            (those take RGB images).
        mode: Image mode the network should take ("L" or "RGB"); honoured by ``ARCHITECTURES``.
        num_classes: Number of outputs.
        width: small_cnn's base width (default :data:`SMALL_CNN_WIDTH`); other architectures ignore it.

    Returns:
        The network and the image mode it takes.

    Raises:
        ValueError: For an unknown mode or architecture.
    """
    if mode not in MODES:
        raise ValueError(f"mode: unknown image mode {mode!r}; allowed: {sorted(MODES)}")
    if arch == "small_cnn":
        return _small_cnn(MODES[mode], num_classes, width or SMALL_CNN_WIDTH), mode
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch](MODES[mode], num_classes), mode
    if arch in torchvision.models.list_models(module=torchvision.models):
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes), "RGB"
    raise ValueError(
        f"filter.arch: unknown architecture {arch!r}; allowed: {sorted(ARCHITECTURES)} or a "
        "name from torchvision.models.list_models(module=torchvision.models)"
    )


def init_weights(net: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise ``net`` from ``generator`` (torchvision's resnet scheme), not the global RNG."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):  # PyTorch's default Linear init
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _Classifier(nn.Module):
    """Network + input preparation; returns (logits, penultimate features) in one pass."""

    def __init__(
        self, net: nn.Module, mode: str, resolution: int, mean: Sequence[float], std: Sequence[float]
    ):
        super().__init__()
        self.net, self.mode, self.resolution = net, mode, resolution
        channels = MODES[mode]
        self.register_buffer("mean", _per_channel(mean, channels), persistent=False)
        self.register_buffer("std", _per_channel(std, channels), persistent=False)
        self.register_buffer("luma", torch.tensor(LUMA_WEIGHTS).view(1, -1, 1, 1), persistent=False)
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        self._features: torch.Tensor | None = None
        if linears:  # the head's input is the penultimate layer
            linears[-1].register_forward_pre_hook(self._keep_features)

    def _keep_features(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._features = inputs[0]

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1 or 3, H, W) in [0, 1] -> (N, C, R, R) normalised for the network."""
        channels = MODES[self.mode]
        if images.shape[1] != channels and channels == MODES["L"]:
            images = (images * self.luma).sum(1, keepdim=True)  # RGB -> luma
        elif images.shape[1] != channels:
            images = images.expand(-1, channels, -1, -1)  # grey -> RGB
        if images.shape[-2:] != (self.resolution, self.resolution):
            size = (self.resolution, self.resolution)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._features = None
        logits = self.net(self.prepare(images))  # (N, K)
        features = logits if self._features is None else self._features
        self._features = None  # do not keep the graph alive between calls
        return logits, features.flatten(1)  # (N, K), (N, D)


def _per_channel(values: list[float], channels: int) -> torch.Tensor:
    if len(values) not in (1, channels):
        raise ValueError(f"mean/std must have 1 or {channels} values, got {values}")
    return torch.tensor(values * (channels // len(values))).view(1, -1, 1, 1)


class FilterClassifier:
    """A calibrated image classifier over the dataset's classes.

    Attributes:
        class_names: Class names; position = class id.
        mode: Image mode the network takes ("L" or "RGB"); inputs of the other mode are converted.
        resolution: Side the network takes; inputs of another size are resized.
        temperature: Logits are divided by it (temperature scaling).
        metrics: Validation metrics of training (empty for a user classifier without them).
        arch: Architecture name.
        fingerprint: Hash of what it was trained from (data, config, seed); None for user ones.
        feature_mean: Mean raw penultimate feature of the real images, (D,), or None. Subtracted
            before the features are normalised: penultimate features (after a ReLU) share a large
            common component, so uncentred cosines of unrelated images of a class are close to 1.
    """

    def __init__(
        self,
        net: nn.Module,
        class_names: Sequence[str],
        *,
        arch: str,
        mode: str,
        resolution: int,
        temperature: float = 1.0,
        mean: float | Sequence[float] = TRAINED_MEAN,
        std: float | Sequence[float] = TRAINED_STD,
        metrics: dict[str, Any] | None = None,
        fingerprint: str | None = None,
        feature_mean: Sequence[float] | torch.Tensor | None = None,
    ):
        # channels_last: the layout oneDNN and cuDNN convolutions run fastest in (1.4x on a CPU).
        self.module = _Classifier(net, mode, resolution, _as_list(mean), _as_list(std)).eval()
        self.module.to(memory_format=torch.channels_last)
        self.class_names = list(class_names)
        self.arch, self.mode, self.resolution = arch, mode, int(resolution)
        self.temperature = float(temperature)
        self.mean, self.std = _as_list(mean), _as_list(std)
        self.metrics = dict(metrics or {})
        self.fingerprint = fingerprint
        if feature_mean is not None:
            feature_mean = torch.as_tensor(feature_mean, dtype=torch.float32)
        self.feature_mean = feature_mean

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: torch.device | str | None) -> FilterClassifier:
        """Move the network to ``device`` (None: leave it) and return self."""
        if device is not None:
            self.module.to(device)
        return self

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Calibrated logits (divided by the temperature), differentiable, on the network's device.

        Args:
            images: (N, 1 or 3, H, W) floats in [0, 1] on any device.

        Returns:
            (N, K) logits.
        """
        logits, _ = self.module(images.to(self.device, torch.float32))
        return logits / self.temperature

    @torch.no_grad()
    def predict(
        self, images: torch.Tensor, *, batch_size: int = PREDICT_BATCH_SIZE, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Calibrated probabilities, top class and features, batched, without gradients, on the CPU.

        The features are the penultimate layer's (the head's input), minus :attr:`feature_mean`
        when set, L2-normalised: their dot products are cosine similarities.

        Args:
            images: (N, 1 or 3, H, W) floats in [0, 1] on any device.
            batch_size: Images per forward pass.
            dtype: Autocast dtype of the forward passes (:func:`augment.precision.resolve_precision`);
                ``None`` = fp32. Probabilities and features are fp32 either way.

        Returns:
            ``(probs (N, K), top class (N,), features (N, D))``.
        """
        probs, feats = [], []
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(self.device, torch.float32)
            with autocast(dtype, self.device):
                logits, features = self.module(batch.contiguous(memory_format=torch.channels_last))
            probs.append(torch.softmax(logits.float() / self.temperature, dim=1).cpu())
            if self.feature_mean is not None:
                features = features.float() - self.feature_mean.to(features.device)
            feats.append(F.normalize(features.float(), dim=1).cpu())
        if not probs:
            return torch.zeros(0, len(self.class_names)), torch.zeros(0, dtype=torch.long), torch.zeros(0, 0)
        probs_all = torch.cat(probs)
        return probs_all, probs_all.argmax(dim=1), torch.cat(feats)

    def meta(self) -> dict[str, Any]:
        """Everything but the weights, as saved in ``classifier.json``."""
        keys = ("arch", "class_names", "mode", "resolution", "temperature", "mean", "std", "metrics")
        keys += ("fingerprint",)
        meta = {key: getattr(self, key) for key in keys}
        meta["feature_mean"] = None if self.feature_mean is None else self.feature_mean.tolist()
        return meta

    @torch.no_grad()
    def fit_feature_mean(self, images: torch.Tensor, *, batch_size: int = PREDICT_BATCH_SIZE) -> None:
        """Set :attr:`feature_mean` to the mean raw penultimate feature of ``images``.

        Args:
            images: Real images, (N, 1 or 3, H, W) floats in [0, 1] on any device, N >= 1.
        """
        total, count = None, 0
        for start in range(0, images.shape[0], batch_size):
            _, features = self.module(images[start : start + batch_size].to(self.device, torch.float32))
            batch_sum = features.double().sum(0).cpu()
            total = batch_sum if total is None else total + batch_sum
            count += features.shape[0]
        if total is None:
            raise ValueError("fit_feature_mean needs at least one image")
        self.feature_mean = (total / count).float()

    def save(self, path: Path | str) -> None:
        """Write ``path/classifier.safetensors`` (weights) and ``path/classifier.json`` (the rest)."""
        if isinstance(self.module.net, _TransformersLogits):
            raise ValueError(
                "FilterClassifier.save writes ARCHITECTURES and torchvision networks; a transformers "
                "classifier is already a folder: pass that folder as filter.path"
            )
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.net.state_dict().items()}
        # Each file is written under a temporary name and renamed, so a reader (another rank
        # loading the cache) never sees half a file; the json, written last, marks a complete save.
        save_file(state, path / f"{WEIGHTS_FILE}.tmp")
        os.replace(path / f"{WEIGHTS_FILE}.tmp", path / WEIGHTS_FILE)
        (path / f"{META_FILE}.tmp").write_text(json.dumps(self.meta(), indent=2))
        os.replace(path / f"{META_FILE}.tmp", path / META_FILE)

    @classmethod
    def load(cls, path: Path | str) -> FilterClassifier:
        """Load what :meth:`save` wrote to ``path``.

        Raises:
            ValueError: If ``path`` holds no saved classifier or its weights do not fit its arch.
        """
        path = Path(path)
        if not (path / META_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise ValueError(f"no saved classifier in {path}: expected {WEIGHTS_FILE} and {META_FILE}")
        meta = json.loads((path / META_FILE).read_text())
        state = _read_weights(path / WEIGHTS_FILE)
        net, mode = build_network(meta["arch"], meta["mode"], len(meta["class_names"]),
                                  width=_small_cnn_width(meta["arch"], state))
        _load_weights(net, state, path / WEIGHTS_FILE, meta["arch"])
        options = {k: v for k, v in meta.items() if k not in ("class_names", "mode")}
        return cls(net, meta["class_names"], mode=mode, **options)


def _as_list(values: float | Sequence[float]) -> list[float]:
    return [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except SafetensorError as err:
        raise ValueError(f"cannot read classifier weights {file}: {err}") from err


def _small_cnn_width(arch: str, state: dict[str, torch.Tensor]) -> int | None:
    """small_cnn's base width, read from its first convolution's weights (saves of any width load)."""
    first = state.get("0.weight")
    return int(first.shape[0]) if arch == "small_cnn" and first is not None else None


def _load_weights(net: nn.Module, state: dict[str, torch.Tensor], file: Path, arch: str) -> None:
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"weights {file} do not fit filter.arch={arch!r}: {err}") from err


def load_user_classifier(
    path: str | Path, class_names: Sequence[str], *, arch: str, mode: str, resolution: int
) -> FilterClassifier:
    """Load a classifier the user trained elsewhere.

    Accepted forms of ``path``:

    * a ``.safetensors`` state dict of ``arch`` (a key of :data:`ARCHITECTURES` or a torchvision
      model name). A JSON file beside it with the same stem (``model.json`` for
      ``model.safetensors``) may give ``class_names``, ``temperature``, ``mean``, ``std``,
      ``arch``, ``mode`` and ``resolution``, which then win over the arguments. Without it the
      classes are assumed to be the dataset's and the normalisation is [-1, 1] for
      ``ARCHITECTURES`` and ImageNet's for torchvision models;
    * a folder saved by :meth:`FilterClassifier.save`;
    * a ``transformers`` image-classification folder (``AutoModelForImageClassification`` and its
      image processor; ``id2label`` gives the class names). Needs ``transformers`` installed.

    Args:
        path: File or folder, see above.
        class_names: The dataset's class names; the classifier's must be the same, in order.
        arch: Architecture of a state dict (``filter.arch``).
        mode: Image mode of a state dict's network ("L" or "RGB").
        resolution: Input side of a state dict's network.

    Returns:
        The classifier, on the CPU.

    Raises:
        ValueError: If ``path`` is missing or of no known form, the architecture is unknown, the
            weights do not fit it, or its class names differ from the dataset's.
        ImportError: For a transformers folder when ``transformers`` is not installed.
    """
    file = Path(path)
    if file.is_dir() and (file / META_FILE).is_file():
        classifier = FilterClassifier.load(file)
    elif file.is_dir() and (file / "config.json").is_file():
        classifier = _load_transformers(file)
    elif file.is_file() and file.suffix == ".safetensors":
        classifier = _load_state_dict(file, class_names, arch=arch, mode=mode, resolution=resolution)
    else:
        raise ValueError(
            f"filter.path: {str(path)!r} is neither a .safetensors file, a saved classifier folder "
            f"({META_FILE}) nor a transformers folder (config.json)"
        )
    if classifier.class_names != list(class_names):
        raise ValueError(
            f"filter.path: classifier {str(path)!r} has classes {classifier.class_names} but the "
            f"dataset has {list(class_names)}; they must be the same, in the same order"
        )
    logger.info(
        "loaded user classifier %s (%s, %s, %d px)", path, classifier.arch, classifier.mode, classifier.resolution
    )
    return classifier


def _load_state_dict(
    file: Path, class_names: Sequence[str], *, arch: str, mode: str, resolution: int
) -> FilterClassifier:
    side = file.with_suffix(".json")
    meta = json.loads(side.read_text()) if side.is_file() else {}
    arch = meta.get("arch", arch)
    names = meta.get("class_names", list(class_names))
    state = _read_weights(file)
    net, net_mode = build_network(arch, meta.get("mode", mode), len(names), width=_small_cnn_width(arch, state))
    _load_weights(net, state, file, arch)
    trained_here = arch in ARCHITECTURES
    default_mean, default_std = (TRAINED_MEAN, TRAINED_STD) if trained_here else (IMAGENET_MEAN, IMAGENET_STD)
    return FilterClassifier(
        net,
        names,
        arch=arch,
        mode=net_mode,
        resolution=meta.get("resolution", resolution),
        temperature=meta.get("temperature", 1.0),
        mean=meta.get("mean", default_mean),
        std=meta.get("std", default_std),
        metrics=meta.get("metrics"),
        feature_mean=meta.get("feature_mean"),
    )


class _TransformersLogits(nn.Module):
    """A transformers image classifier as a plain ``pixel_values -> logits`` module."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def _load_transformers(folder: Path) -> FilterClassifier:
    try:
        import transformers  # optional dependency, only for this form of filter.path
    except ImportError as err:
        raise ImportError(
            f"filter.path {str(folder)!r} is a transformers folder; loading it needs the "
            "`transformers` package (pip install transformers)"
        ) from err
    model = transformers.AutoModelForImageClassification.from_pretrained(folder)
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    names = [id2label[i] for i in range(model.config.num_labels)]
    size = dict(getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {})
    resolution = size.get("height") or size.get("shortest_edge")
    if resolution is None:
        raise ValueError(f"filter.path: cannot read an input size from the image processor of {folder}")
    channels = getattr(model.config, "num_channels", MODES["RGB"])
    return FilterClassifier(
        _TransformersLogits(model),
        names,
        arch=type(model).__name__,
        mode="L" if channels == MODES["L"] else "RGB",
        resolution=resolution,
        mean=getattr(processor, "image_mean", None) or TRAINED_MEAN,
        std=getattr(processor, "image_std", None) or TRAINED_STD,
    )
