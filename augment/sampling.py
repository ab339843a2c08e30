"""Sampling work: items with one seed each, split across processes, written as shard files, merged.

A *work item* is (class id, index within the class). Its seed derives from (run seed, class id,
index) only, so an image depends on the model, the sampler config and its seed, never on the batch
size, the number of processes or the other classes' targets.

The items of a round are cut, in global order, into batches of ``batch_size``; batch ``k`` belongs
to rank ``k % world_size`` and is written to ``batch-{k}.pt`` (temp file, then rename). Because the
batches are the same whatever the number of processes, a 1-process and an N-process run compute the
very same batches and give byte-identical results. A killed run started again finds the finished
batch files, checks that they hold the same items, and makes only what is missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from . import distributed
from .distributed import ProcessInfo

log = logging.getLogger(__name__)

_SEED_BITS = 63  # seeds fit a signed int64 column and torch.Generator.manual_seed


def _hash_to_int(*parts: object) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << _SEED_BITS) - 1)


def item_seed(run_seed: int, class_id: int, index: int) -> int:
    """The seed of item (class_id, index) of a run: a hash of the three, stable across versions."""
    return _hash_to_int("seed", run_seed, class_id, index)


@dataclass(frozen=True)
class WorkItem:
    class_id: int
    index: int  # index within the class, unique over all rounds of a run
    seed: int
    variation: bool = False  # start from a real image of the class (SDEdit) instead of pure noise


def make_items(
    ranges: Mapping[int, range],
    run_seed: int,
    *,
    mode: str = "noise",
    mix_fraction: float = 0.5,
) -> list[WorkItem]:
    """Work items for ``ranges`` (class id -> indices), sorted by (class id, index).

    Args:
        ranges: the indices to make per class; later rounds continue where earlier ones stopped.
        run_seed: the run's ``seed``.
        mode: "noise" (all from noise), "variation" (all SDEdit) or "mix" (each item is a
            variation with probability ``mix_fraction``, decided by a hash of its seed).
        mix_fraction: share of variation items in mode "mix".
    """
    items = []
    for class_id in sorted(ranges):
        for index in ranges[class_id]:
            seed = item_seed(run_seed, class_id, index)
            if mode == "mix":
                variation = _hash_to_int("mix", seed) / float(1 << _SEED_BITS) < mix_fraction
            else:
                variation = mode == "variation"
            items.append(WorkItem(class_id, index, seed, variation))
    return items


def batches(items: Sequence[WorkItem], batch_size: int) -> list[list[WorkItem]]:
    """Cut the items, in order, into batches of ``batch_size`` (the last may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"generator.sampler.batch_size must be >= 1, got {batch_size}")
    return [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def _keys(batch: Sequence[WorkItem]) -> torch.Tensor:
    return torch.tensor([[it.class_id, it.index, it.seed, int(it.variation)] for it in batch], dtype=torch.int64)


def _shard_path(shard_dir: Path, k: int) -> Path:
    return shard_dir / f"batch-{k:06d}.pt"


def _load_valid(path: Path, batch: Sequence[WorkItem]) -> dict | None:
    """The shard at ``path`` if it exists and holds exactly ``batch``'s items, else None."""
    if not path.is_file():
        return None
    try:
        shard = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a torn file cannot exist (atomic rename), but a foreign one might
        log.warning("ignoring unreadable shard %s (%s)", path, err)
        return None
    if not torch.equal(shard.get("keys", torch.empty(0)), _keys(batch)):
        return None
    return shard


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def run_sharded(
    items: Sequence[WorkItem],
    batch_size: int,
    shard_dir: Path,
    proc: ProcessInfo,
    make_batch: Callable[[list[WorkItem]], dict[str, torch.Tensor]],
    *,
    desc: str = "sampling",
) -> None:
    """Make this rank's batches (those not already on disk), then wait for every rank.

    Args:
        items: all items of the round, in global order (every rank passes the same list).
        batch_size: items per batch; fixes the batches, whatever the number of processes.
        shard_dir: one folder shared by all ranks.
        proc: this process's rank and the world size.
        make_batch: turns a batch of items into CPU tensors whose first dimension is the batch
            (e.g. ``{"images": uint8 (B,C,H,W), "confidence": (B,)}``).
    """
    shard_dir.mkdir(parents=True, exist_ok=True)
    all_batches = batches(items, batch_size)
    mine = [k for k in range(len(all_batches)) if k % proc.world_size == proc.rank]
    todo = [k for k in mine if _load_valid(_shard_path(shard_dir, k), all_batches[k]) is None]
    if len(todo) < len(mine):
        log.info("rank %d: %d of its %d batches already on disk", proc.rank, len(mine) - len(todo), len(mine))
    bar = tqdm(total=sum(len(all_batches[k]) for k in todo), desc=desc, unit="img", disable=not proc.is_main)
    for k in todo:
        batch = all_batches[k]
        out = make_batch(batch)
        for name, tensor in out.items():
            if tensor.shape[0] != len(batch):
                raise RuntimeError(f"make_batch returned {name} with {tensor.shape[0]} rows for {len(batch)} items")
        _save_atomic({"keys": _keys(batch), **{n: t.detach().cpu() for n, t in out.items()}}, _shard_path(shard_dir, k))
        bar.update(len(batch))
    bar.close()
    distributed.barrier()


def read_sharded(items: Sequence[WorkItem], batch_size: int, shard_dir: Path) -> Iterator[tuple[list[WorkItem], dict]]:
    """Yield (batch items, shard tensors) for every batch of the round, in global order."""
    for k, batch in enumerate(batches(items, batch_size)):
        shard = _load_valid(_shard_path(shard_dir, k), batch)
        if shard is None:
            raise RuntimeError(f"shard {_shard_path(shard_dir, k)} is missing or holds other items")
        yield batch, shard
