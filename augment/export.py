"""Export: assemble the output splits and write them where people and the Hub can use them.

Layout of an output folder (``output.dir``)::

    .augment            marker: this folder belongs to augment (see check_output_dir)
    dataset/            DatasetDict.save_to_disk -> datasets.load_from_disk
    hub/README.md       dataset card (augment.card)
    hub/data/<split>-00000-of-0000N.parquet   size-bounded shards -> datasets.load_dataset("hub")
    generator/ work/ report/ ...   written by other stages, never touched here

Every row carries its provenance: ``is_synthetic``, and for synthetic rows the ``seed`` of its
noise, the filter's ``confidence`` and the ``generator`` id (null for real rows).

Nothing here holds a whole split in memory: splits are assembled into a memory-mapped Arrow file
batch by batch, and the parquet shards are written batch by batch with ``pyarrow``.
Finished outputs are never half-written: ``dataset/`` and ``hub/`` are built in temporary sibling
folders and renamed into place at the end, and an old output is only removed at that moment.
"""

from __future__ import annotations

import logging
import numbers
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from datasets.fingerprint import get_temporary_cache_files_directory
from huggingface_hub import HfApi

from augment.card import CardInfo, SplitStats, check_card_info, render_card
from augment.config import OutputConfig, PushToHubConfig

__all__ = [
    "CardInfo", "build_split", "check_output_dir", "export", "features", "parse_size", "push_to_hub",
    "write_parquet_shards",
]

logger = logging.getLogger(__name__)

MARKER_FILE = ".augment"
DATASET_DIR = "dataset"
HUB_DIR = "hub"
HUB_DATA_DIR = "data"
CARD_FILE = "README.md"
FINISHED_OUTPUTS = (DATASET_DIR, HUB_DIR)
TMP_PREFIX = ".tmp-"  # .tmp-dataset-<random>: being written
OLD_PREFIX = ".old-"  # .old-dataset-<random>: the previous output, for the instant of the swap
IMAGE_COLUMN, LABEL_COLUMN = "image", "label"
PROVENANCE_COLUMNS = ("is_synthetic", "seed", "confidence", "generator")
SYNTHETIC_REQUIRED_KEYS = ("image", "label", "seed", "generator")

# Rows per Arrow batch while a split is assembled: bounds memory whatever the split size.
WRITE_BATCH_ROWS = 256
# Rows per parquet row group, at most: the Hub's dataset viewer reads a whole row group for one
# row, and datasets 2.x used 100 for image datasets (config.PARQUET_ROW_GROUP_SIZE_FOR_IMAGE_DATASETS).
MAX_ROWS_PER_ROW_GROUP = 100
INT64 = np.iinfo(np.int64)

# Units of output.max_shard_size, matched case-insensitively; also the allowed set in its error.
SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
              "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def features(class_names: Sequence[str]) -> Features:
    """Features of every exported split.

    Args:
        class_names: Class names, indexed by class id.

    Returns:
        ``image`` (Image), ``label`` (ClassLabel), ``is_synthetic`` (bool), ``seed`` (int64),
        ``confidence`` (float32) and ``generator`` (string); the last three are null for real rows.

    Raises:
        ValueError: If a class name is not a string or appears twice.
    """
    names = list(class_names)
    if not names or not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
        raise ValueError(f"class_names={names!r} must be a non-empty list of distinct strings")
    return Features({
        IMAGE_COLUMN: Image(),
        LABEL_COLUMN: ClassLabel(names=names),
        "is_synthetic": Value("bool"),
        "seed": Value("int64"),
        "confidence": Value("float32"),
        "generator": Value("string"),
    })


def parse_size(value: str | int, field: str = "output.max_shard_size") -> int:
    """Bytes in a size such as ``"100MB"``, ``"500KB"``, ``"1.5GiB"`` or ``"4096"`` (bytes).

    Raises:
        ValueError: Naming ``field``, the value and the allowed units, if it is not a positive size.
    """
    match = _SIZE_PATTERN.match(str(value))
    units = {unit.lower(): factor for unit, factor in SIZE_UNITS.items()}
    unit = match.group(2).lower() if match else None
    if match is None or (unit and unit not in units) or float(match.group(1)) * units.get(unit, 1) < 1:
        raise ValueError(
            f"{field}={value!r} is not a size: expected a positive number of bytes, optionally followed "
            f"by a unit, one of {', '.join(SIZE_UNITS)} (e.g. '100MB')"
        )
    return int(float(match.group(1)) * units.get(unit, 1))


def build_split(
    real: Dataset | None,
    synthetic: Iterable[dict] | None,
    class_names: Sequence[str],
    *,
    work_dir: str | Path | None = None,
) -> Dataset:
    """One output split: the real rows first, unchanged, then the synthetic rows.

    Rows go to a memory-mapped Arrow file batch by batch, so memory does not grow with the split.

    Args:
        real: Real rows with an ``image`` column (Image, the original bytes) and a ``label``
            column (ClassLabel with ``class_names``, or int ids), or None for no real rows.
        synthetic: Synthetic rows, each ``{"image": PNG bytes, "label": int, "seed": int,
            "confidence": float | None, "generator": str}``, or None for none.
        class_names: Class names, indexed by class id.
        work_dir: Folder for the split's Arrow file; by default a temporary folder that
            ``datasets`` removes when the process exits.

    Returns:
        A dataset with :func:`features`; real image bytes byte-identical to the input (an image
        given only by a local path is read from it, and its path reduced to the file name).

    Raises:
        ValueError: If a real column is missing or its labels disagree with ``class_names``, or a
            synthetic row lacks a key or has a value of the wrong type or range.
    """
    feats = features(class_names)
    folder = Path(work_dir) if work_dir is not None else Path(get_temporary_cache_files_directory())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"split-{uuid.uuid4().hex}.arrow"
    try:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, feats.arrow_schema) as writer:
            for table in _real_tables(real, feats):
                writer.write_table(table)
            for table in _synthetic_tables(synthetic, feats):
                writer.write_table(table)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Dataset.from_file(str(path))


def _real_tables(real: Dataset | None, feats: Features) -> Iterator[pa.Table]:
    if real is None:
        return
    _check_real(real, feats[LABEL_COLUMN].names)
    image_feature, n_classes = feats[IMAGE_COLUMN], feats[LABEL_COLUMN].num_classes
    batches = real.select_columns([IMAGE_COLUMN, LABEL_COLUMN]).with_format("arrow")
    for batch in batches.iter(batch_size=WRITE_BATCH_ROWS):
        labels = batch[LABEL_COLUMN].combine_chunks().cast(pa.int64())
        low, high = (value.as_py() for value in pc.min_max(labels).values())
        if labels.null_count or low < 0 or high >= n_classes:
            raise ValueError(f"real split: label ids must lie in range(0, {n_classes}) (class_names); "
                             f"found {low}..{high} and {labels.null_count} null(s)")
        n = batch.num_rows
        columns = {
            IMAGE_COLUMN: image_feature.embed_storage(batch[IMAGE_COLUMN].combine_chunks()),
            LABEL_COLUMN: labels,
            "is_synthetic": pa.array([False] * n, pa.bool_()),
            **{name: pa.nulls(n, feats[name].pa_type) for name in PROVENANCE_COLUMNS[1:]},
        }
        yield pa.Table.from_pydict(columns, schema=feats.arrow_schema)


def _check_real(real: Dataset, class_names: list[str]) -> None:
    missing = [name for name in (IMAGE_COLUMN, LABEL_COLUMN) if name not in real.column_names]
    if missing:
        raise ValueError(f"real split: missing column(s) {missing}; it has {real.column_names}")
    if not isinstance(real.features[IMAGE_COLUMN], Image):
        raise ValueError(f"real split: column {IMAGE_COLUMN!r} must be an Image feature, "
                         f"not {real.features[IMAGE_COLUMN]}")
    label = real.features[LABEL_COLUMN]
    if isinstance(label, ClassLabel) and label.names != class_names:
        raise ValueError(f"real split: label names {label.names} differ from class_names {class_names}")
    extra = sorted(set(real.column_names) - {IMAGE_COLUMN, LABEL_COLUMN})
    if extra:
        logger.warning("real split: dropping column(s) %s, which the export does not carry", extra)


def _synthetic_tables(rows: Iterable[dict] | None, feats: Features) -> Iterator[pa.Table]:
    if rows is None:
        return
    n_classes, batch = feats[LABEL_COLUMN].num_classes, []
    for index, row in enumerate(rows):
        batch.append(_synthetic_row(index, row, n_classes))
        if len(batch) == WRITE_BATCH_ROWS:
            yield _synthetic_table(batch, feats)
            batch = []
    if batch:
        yield _synthetic_table(batch, feats)


def _synthetic_row(index: int, row: Mapping[str, Any], n_classes: int) -> tuple:
    """Check one synthetic row; returns (image, label, seed, confidence, generator)."""
    missing = [key for key in SYNTHETIC_REQUIRED_KEYS if key not in row]
    if missing:
        raise ValueError(f"synthetic row {index}: missing key(s) {missing}; "
                         f"required: {', '.join(SYNTHETIC_REQUIRED_KEYS)}")
    image, label, seed = row["image"], row["label"], row["seed"]
    confidence, generator = row.get("confidence"), row["generator"]

    def is_int(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    problems = {
        "image": not isinstance(image, bytes) and "encoded image bytes (PNG)",
        "label": not (is_int(label) and 0 <= label < n_classes) and f"a class id in range(0, {n_classes})",
        "seed": not (is_int(seed) and INT64.min <= seed <= INT64.max) and "an int64 integer",
        "confidence": not (confidence is None or isinstance(confidence, numbers.Real)) and "a number or None",
        "generator": not (isinstance(generator, str) and generator) and "a non-empty string",
    }
    for key, expected in problems.items():
        if expected:
            shown = f"<{type(image).__name__}>" if key == "image" else repr(row.get(key))
            raise ValueError(f"synthetic row {index}: {key}={shown} must be {expected}")
    return image, int(label), int(seed), None if confidence is None else float(confidence), generator


def _synthetic_table(batch: list[tuple], feats: Features) -> pa.Table:
    images, labels, seeds, confidences, generators = zip(*batch)
    return pa.Table.from_pydict({
        IMAGE_COLUMN: [{"bytes": image, "path": None} for image in images],
        LABEL_COLUMN: list(labels),
        "is_synthetic": [True] * len(batch),
        "seed": list(seeds),
        "confidence": list(confidences),
        "generator": list(generators),
    }, schema=feats.arrow_schema)


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to clobber an output, then create ``out_dir`` and mark it as augment's.

    Call it before any stage writes into ``out_dir``. With ``overwrite=True`` nothing is removed
    here: :func:`export` replaces ``dataset/`` and ``hub/`` only once the new ones are complete,
    and leaves every other file (``generator/`` and ``work/`` hold resumable state).

    Args:
        out_dir: The output folder (``output.dir``).
        overwrite: ``output.overwrite``.

    Raises:
        ValueError: If ``out_dir`` is a file, or is non-empty without the :data:`MARKER_FILE`
            marker (not an augment output folder), or holds ``dataset/`` or ``hub/`` and
            ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output.dir={str(out_dir)!r} is a file, not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER_FILE).is_file():
        raise ValueError(
            f"output.dir={str(out_dir)!r} is not empty and is not an augment output folder (no "
            f"{MARKER_FILE} marker file); choose a new or empty folder (output.overwrite=true only "
            f"replaces the {', '.join(f'{name}/' for name in FINISHED_OUTPUTS)} of an earlier augment run)"
        )
    finished = [f"{name}/" for name in FINISHED_OUTPUTS if (out_dir / name).exists()]
    if finished and not overwrite:
        raise ValueError(
            f"output.dir={str(out_dir)!r} already holds a finished output ({', '.join(finished)}); "
            f"set output.overwrite=true to replace it, or choose another output.dir"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / MARKER_FILE
    if not marker.is_file():
        marker.write_text("This folder is an augment output folder.\n", encoding="utf-8")


def write_parquet_shards(dataset: Dataset, data_dir: Path, split: str, max_shard_bytes: int) -> tuple[list[Path], int]:
    """Stream a split into ``data_dir/<split>-0000i-of-0000N.parquet`` shards of bounded size.

    A new shard starts before a row group would take the current one (footer included) past
    ``max_shard_bytes``, so a shard exceeds the bound only when it holds one row group that alone
    (with the footer) does. Row groups hold at most :data:`MAX_ROWS_PER_ROW_GROUP` rows and are
    sized from the average row so that one fits a shard.
    The ``datasets`` features ride in the arrow schema metadata, so ``load_dataset`` restores them.

    Args:
        dataset: The split (features of :func:`features`).
        data_dir: Folder for the shards (created if missing).
        split: Split name, the prefix of the file names.
        max_shard_bytes: Size bound of each shard.

    Returns:
        The shard paths in order (none for an empty split), and the Arrow size of the rows.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    schema = dataset.features.arrow_schema
    options = _parquet_options(dataset.features)
    shards: list[_ShardWriter] = []
    arrow_bytes = 0
    if len(dataset) == 0:
        return [], arrow_bytes
    footer = _footer_bytes(dataset.with_format("arrow")[:1], schema, options)
    rows_per_group = _rows_per_row_group(dataset, max_shard_bytes - sum(footer))
    try:
        for table in dataset.with_format("arrow").iter(batch_size=rows_per_group):
            if shards and shards[-1].size_after(table.nbytes) > max_shard_bytes:
                shards[-1].close()
            if not shards or shards[-1].closed:
                path = data_dir / f".{split}-{len(shards):05d}.partial"
                shards.append(_ShardWriter(path, schema, options, footer))
            shards[-1].write(table.replace_schema_metadata(schema.metadata))
            arrow_bytes += table.nbytes
    finally:
        for shard in shards:
            shard.close()
    paths = [data_dir / f"{split}-{i:05d}-of-{len(shards):05d}.parquet" for i in range(len(shards))]
    for shard, path in zip(shards, paths):
        shard.path.rename(path)
    return paths, arrow_bytes


class _ShardWriter:
    """One parquet file being written, which knows what size it would reach with one more row group."""

    def __init__(self, path: Path, schema: pa.Schema, options: Mapping[str, Any], footer: tuple[int, int]):
        self.path = path
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pq.ParquetWriter(self._sink, schema, **options)
        self._footer_fixed, self._footer_per_group = footer
        self._row_groups = 0
        self.closed = False

    def size_after(self, group_bytes: int) -> int:
        """File size, footer included, if a row group of ``group_bytes`` (Arrow size) were added."""
        footer = self._footer_fixed + self._footer_per_group * (self._row_groups + 1)
        return self._sink.tell() + group_bytes + footer

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)  # one row group: batches are smaller than its default size
        self._row_groups += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()  # writes the footer; the sink stays open
            self._sink.close()


def _rows_per_row_group(dataset: Dataset, room: int) -> int:
    """Rows per row group so that an average row group fits in ``room`` bytes."""
    table = dataset.data
    row_bytes = max(1, table.nbytes // max(1, table.num_rows))
    return max(1, min(MAX_ROWS_PER_ROW_GROUP, room // row_bytes))


def _footer_bytes(sample: pa.Table, schema: pa.Schema, options: Mapping[str, Any]) -> tuple[int, int]:
    """What a shard spends besides its rows: a fixed part (magic bytes, schema and features
    metadata) and a part per row group (its column-chunk metadata), measured on tiny files."""
    def write(row_groups: int) -> pa.Buffer:
        buffer = pa.BufferOutputStream()
        with pq.ParquetWriter(buffer, schema, **options) as writer:
            for _ in range(row_groups):
                writer.write_table(sample.replace_schema_metadata(schema.metadata))
        return buffer.getvalue()

    one, two = (pq.read_metadata(pa.BufferReader(write(n))).serialized_size for n in (1, 2))
    return write(0).size, two - one


def _parquet_options(feats: Features) -> dict[str, Any]:
    """Image bytes are already compressed (PNG/JPEG): store them plain, without statistics."""
    leaves = []  # (parquet column path, is image bytes)
    for field in feats.arrow_schema:
        if pa.types.is_struct(field.type):
            leaves += [(f"{field.name}.{child.name}", isinstance(feats[field.name], Image) and child.name == "bytes")
                       for child in field.type]
        else:
            leaves.append((field.name, False))
    return {
        "compression": {path: "none" if raw else "snappy" for path, raw in leaves},
        "use_dictionary": [path for path, raw in leaves if not raw],
        "write_statistics": [path for path, raw in leaves if not raw],
    }


def export(splits: Mapping[str, Dataset], out_dir: Path, cfg: OutputConfig, card: CardInfo) -> dict[str, Path]:
    """Write ``out_dir/dataset`` and ``out_dir/hub``, then push ``hub`` when a repo is set.

    Each folder is written to a temporary sibling (``out_dir/.tmp-dataset-<random>``) and renamed
    into place at the end, so a crash leaves no half-written output; an earlier output is
    replaced (``output.overwrite=true``) only at that moment. The push comes last, so a failed
    push loses nothing.

    Args:
        splits: Split name -> dataset, each made by :func:`build_split`; ``"train"`` (or else
            the first split) is the one whose class counts the card shows.
        out_dir: The output folder (``output.dir``, resolved by the caller).
        cfg: Output options (overwrite, max_shard_size, push_to_hub).
        card: What the dataset card says about the run.

    Returns:
        ``{"dataset": out_dir/dataset, "hub": out_dir/hub}``.

    Raises:
        ValueError: On a bad ``output.max_shard_size``, an output that may not be replaced, no
            splits, an empty split, or a split whose features differ from :func:`features`.
        RuntimeError: If the push fails (the local copies are complete; the message says where).
    """
    out_dir = Path(out_dir)
    max_shard_bytes = parse_size(cfg.max_shard_size)
    _check_splits(splits, features(card.class_names))
    check_card_info(card)
    check_output_dir(out_dir, cfg.overwrite)
    _remove_leftovers(out_dir)
    staged: dict[str, Path] = {}
    try:
        staged[DATASET_DIR] = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{DATASET_DIR}-", dir=out_dir))
        DatasetDict(dict(splits)).save_to_disk(str(staged[DATASET_DIR]), max_shard_size=max_shard_bytes)
        staged[HUB_DIR] = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{HUB_DIR}-", dir=out_dir))
        write_hub_folder(splits, staged[HUB_DIR], max_shard_bytes, card)
        for name in FINISHED_OUTPUTS:
            _move_into_place(staged[name], out_dir / name, cfg.overwrite)
            del staged[name]
    finally:
        for folder in staged.values():  # only left on failure
            shutil.rmtree(folder, ignore_errors=True)
    paths = {name: out_dir / name for name in FINISHED_OUTPUTS}
    logger.info("export: wrote %s and %s", paths[DATASET_DIR], paths[HUB_DIR])
    if cfg.push_to_hub.repo_id is not None:
        _push_or_explain(paths, cfg.push_to_hub)
    return paths


def _check_splits(splits: Mapping[str, Dataset], expected: Features) -> None:
    if not splits:
        raise ValueError("export: no splits to export")
    for name, dataset in splits.items():
        if len(dataset) == 0:  # load_dataset fails on a split without rows ("corresponds to no data")
            raise ValueError(f"export: split {name!r} has no rows; leave it out of the export")
        if dataset.features != expected:
            raise ValueError(f"export: split {name!r} has features {dataset.features}, expected {expected} "
                             "(build every split with augment.export.build_split)")


def write_hub_folder(splits: Mapping[str, Dataset], hub_dir: Path, max_shard_bytes: int, card: CardInfo) -> None:
    """Write the parquet shards of every split under ``hub_dir/data`` and the card ``README.md``."""
    stats, data_files = {}, {}
    for name, dataset in splits.items():
        shards, arrow_bytes = write_parquet_shards(dataset, hub_dir / HUB_DATA_DIR, name, max_shard_bytes)
        stats[name] = SplitStats(len(dataset), arrow_bytes, sum(shard.stat().st_size for shard in shards))
        data_files[name] = f"{HUB_DATA_DIR}/{name}-*"
        logger.info("export: split %s, %d rows in %d parquet shard(s)", name, len(dataset), len(shards))
    counted = "train" if "train" in splits else next(iter(splits))
    real_counts, synthetic_counts = class_counts(splits[counted])
    text = render_card(card, features(card.class_names), stats, data_files, real_counts, synthetic_counts)
    (hub_dir / CARD_FILE).write_text(text, encoding="utf-8")


def class_counts(dataset: Dataset) -> tuple[dict[int, int], dict[int, int]]:
    """Real and synthetic rows per class id of an exported split (reads two small columns only)."""
    table = dataset.select_columns([LABEL_COLUMN, "is_synthetic"]).with_format("arrow")[:]
    grouped = table.group_by([LABEL_COLUMN, "is_synthetic"]).aggregate([([], "count_all")])
    counts: tuple[dict[int, int], dict[int, int]] = ({}, {})
    for row in grouped.to_pylist():
        counts[int(row["is_synthetic"])][row[LABEL_COLUMN]] = row["count_all"]
    return counts


def _move_into_place(staged: Path, final: Path, overwrite: bool) -> None:
    """Rename a finished folder into place, replacing the old one only now."""
    if not final.exists():
        staged.rename(final)
        return
    if not overwrite:  # appeared while this export ran
        raise ValueError(f"output.dir={str(final.parent)!r} already holds a finished output "
                         f"({final.name}/); set output.overwrite=true to replace it")
    old = final.with_name(f"{OLD_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
    final.rename(old)
    staged.rename(final)
    shutil.rmtree(old)
    logger.info("export: replaced %s", final)


def _remove_leftovers(out_dir: Path) -> None:
    """Remove temporary folders of an export that crashed, and old outputs already replaced."""
    for name in FINISHED_OUTPUTS:
        for leftover in out_dir.glob(f"{TMP_PREFIX}{name}-*"):
            logger.warning("export: removing %s, left by an interrupted export", leftover)
            shutil.rmtree(leftover)
        for old in out_dir.glob(f"{OLD_PREFIX}{name}-*"):
            if (out_dir / name).exists():
                shutil.rmtree(old)
            else:  # interrupted between the two renames: this is the only copy
                logger.warning("export: %s is the previous %s/, kept (rename it back to restore it)", old, name)


def _push_or_explain(paths: Mapping[str, Path], cfg: PushToHubConfig) -> None:
    try:
        push_to_hub(paths[HUB_DIR], cfg)
    except Exception as err:
        raise RuntimeError(
            f"output.push_to_hub: pushing to the dataset repo {cfg.repo_id!r} failed "
            f"({type(err).__name__}: {err}). Nothing was lost: the complete dataset is in "
            f"{paths[DATASET_DIR]} and the Hub-ready copy in {paths[HUB_DIR]}; push it again with "
            f"`hf upload {cfg.repo_id} {paths[HUB_DIR]} . --repo-type dataset"
            f"{'' if cfg.revision is None else ' --revision ' + cfg.revision}`"
        ) from err


def push_to_hub(hub_dir: Path, cfg: PushToHubConfig) -> str:
    """Upload a Hub-ready folder to a dataset repo, creating the repo (and branch) if needed.

    The token is resolved by ``huggingface_hub`` (``HF_TOKEN`` or the saved login); it is never
    read, logged or written here. Parquet files under ``data/`` that the folder no longer has are
    deleted from the repo, so a re-push with fewer shards cannot duplicate rows.

    Args:
        hub_dir: Folder written by :func:`export` (``README.md`` and ``data/``).
        cfg: ``output.push_to_hub``.

    Returns:
        The URL of the repo.

    Raises:
        ValueError: If ``cfg.repo_id`` is not set.
    """
    if cfg.repo_id is None:
        raise ValueError("output.push_to_hub.repo_id=None: set it to a dataset repo id to push")
    api = HfApi()
    url = api.create_repo(cfg.repo_id, repo_type="dataset", private=cfg.private, exist_ok=True)
    if cfg.revision is not None:
        api.create_branch(cfg.repo_id, branch=cfg.revision, repo_type="dataset", exist_ok=True)
    api.upload_folder(
        folder_path=hub_dir,
        repo_id=cfg.repo_id,
        repo_type="dataset",
        revision=cfg.revision,
        commit_message="Upload dataset made with augment",
        delete_patterns=[f"{HUB_DATA_DIR}/*"],
    )
    logger.info("export: pushed %s to %s", hub_dir, url)
    return str(url)
