"""Work items, seeds and sharded batches (the generator is replaced by a function of the seed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from augment.distributed import ProcessInfo
from augment.sampling import WorkItem, batches, item_seed, make_items, read_sharded, run_sharded


def fake_images(batch):
    """Pixels that depend on each item's seed only (as the real generator's do)."""
    out = []
    for it in batch:
        g = torch.Generator().manual_seed(it.seed)
        out.append(torch.randint(0, 256, (1, 4, 4), generator=g, dtype=torch.uint8))
    return {"images": torch.stack(out)}


def test_seed_depends_on_run_class_index_only():
    assert item_seed(0, 3, 7) == item_seed(0, 3, 7)
    seeds = {item_seed(s, c, i) for s in (0, 1) for c in range(3) for i in range(50)}
    assert len(seeds) == 2 * 3 * 50  # no collisions
    assert all(0 <= s < 2**63 for s in seeds)


def test_items_do_not_depend_on_other_classes():
    alone = make_items({2: range(5)}, run_seed=0)
    with_others = make_items({0: range(9), 2: range(5), 7: range(3)}, run_seed=0)
    assert [it for it in with_others if it.class_id == 2] == alone
    assert [(it.class_id, it.index) for it in with_others] == sorted((it.class_id, it.index) for it in with_others)


def test_later_rounds_continue_indices():
    first = make_items({1: range(0, 4)}, run_seed=5)
    second = make_items({1: range(4, 6)}, run_seed=5)
    assert [it.index for it in second] == [4, 5]
    assert not {it.seed for it in first} & {it.seed for it in second}


@pytest.mark.parametrize("mode,expected", [("noise", 0), ("variation", 200)])
def test_item_modes(mode, expected):
    items = make_items({0: range(200)}, run_seed=0, mode=mode)
    assert sum(it.variation for it in items) == expected


def test_mix_mode_is_a_seeded_share():
    items = make_items({0: range(2000)}, run_seed=0, mode="mix", mix_fraction=0.25)
    share = sum(it.variation for it in items) / len(items)
    assert 0.2 < share < 0.3
    assert items == make_items({0: range(2000)}, run_seed=0, mode="mix", mix_fraction=0.25)


def test_batches_reject_bad_size():
    with pytest.raises(ValueError, match=r"generator.sampler.batch_size must be >= 1, got 0"):
        batches([WorkItem(0, 0, 1)], 0)


def _collect(items, batch_size, shard_dir):
    return torch.cat([s["images"] for _, s in read_sharded(items, batch_size, shard_dir)])


def test_ranks_split_batches_and_merge_equals_one_process(tmp_path: Path):
    items = make_items({0: range(7), 1: range(4)}, run_seed=0)
    one = tmp_path / "one"
    run_sharded(items, 3, one, ProcessInfo(0, 1, 0), fake_images)
    two = tmp_path / "two"
    made = {}
    for rank in (0, 1):  # the two ranks of a 2-process run, one after the other
        def record(batch, rank=rank):
            made.setdefault(rank, []).extend((it.class_id, it.index) for it in batch)
            return fake_images(batch)
        run_sharded(items, 3, two, ProcessInfo(rank, 2, rank), record)
    assert set(made[0]).isdisjoint(made[1])  # disjoint work
    assert sorted(made[0] + made[1]) == [(it.class_id, it.index) for it in items]  # exactly the plan
    assert torch.equal(_collect(items, 3, one), _collect(items, 3, two))
    assert len(list(two.glob("batch-*.pt"))) == 4


def test_resume_makes_only_missing_batches(tmp_path: Path):
    items = make_items({0: range(10)}, run_seed=1)
    run_sharded(items, 4, tmp_path, ProcessInfo(0, 1, 0), fake_images)
    full = _collect(items, 4, tmp_path)
    (tmp_path / "batch-000001.pt").unlink()  # as if killed before that batch was written
    calls = []
    run_sharded(items, 4, tmp_path, ProcessInfo(0, 1, 0), lambda b: calls.append(len(b)) or fake_images(b))
    assert calls == [4]
    assert torch.equal(_collect(items, 4, tmp_path), full)


def test_shards_of_other_items_are_remade(tmp_path: Path):
    run_sharded(make_items({0: range(4)}, run_seed=1), 4, tmp_path, ProcessInfo(0, 1, 0), fake_images)
    other = make_items({0: range(4)}, run_seed=2)
    calls = []
    run_sharded(other, 4, tmp_path, ProcessInfo(0, 1, 0), lambda b: calls.append(len(b)) or fake_images(b))
    assert calls == [4]
    assert torch.equal(_collect(other, 4, tmp_path), fake_images(other)["images"])


def test_missing_shard_is_an_error(tmp_path: Path):
    items = make_items({0: range(2)}, run_seed=1)
    with pytest.raises(RuntimeError, match="missing or holds other items"):
        list(read_sharded(items, 2, tmp_path))


def test_make_batch_row_count_is_checked(tmp_path: Path):
    items = make_items({0: range(3)}, run_seed=1)
    with pytest.raises(RuntimeError, match="returned images with 1 rows for 3 items"):
        run_sharded(items, 3, tmp_path, ProcessInfo(0, 1, 0), lambda b: {"images": torch.zeros(1, 1)})
