"""Tests of the export stage (augment.export) and the dataset card (augment.card)."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from huggingface_hub import HfApi
from PIL import Image as PILImage

from augment import card as card_module
from augment import export as export_module
from augment.card import CardInfo, size_category
from augment.config import OutputConfig, PushToHubConfig
from augment.export import (
    build_split,
    check_output_dir,
    export,
    features,
    parse_size,
    push_to_hub,
    write_parquet_shards,
)

NAMES = ["cat", "dog", "owl"]
REAL_LABELS = [0, 0, 0, 1, 1, 2]
CONFIG_YAML = "seed: 0\nfilter:\n  name: classifier\n"
SECRET = "hf_SECRET_token_never_written"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    datasets.disable_progress_bars()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def png(index: int, size: int = 8) -> bytes:
    """A small PNG of random pixels, different for each index."""
    pixels = np.random.default_rng(index).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def real_dataset(labels=REAL_LABELS, names=NAMES, size: int = 8) -> Dataset:
    """Real rows as the data stage hands them over: original bytes, some with a path."""
    images = [{"bytes": png(i, size), "path": f"/data/src/real-{i}.png" if i % 2 else None}
              for i in range(len(labels))]
    feats = Features({"image": Image(decode=False), "label": ClassLabel(names=names)})
    return Dataset.from_dict({"image": images, "label": list(labels)}, features=feats)


def synthetic_rows(labels=(2, 2, 1), size: int = 8) -> list[dict]:
    confidences = [0.5, 0.75, None, 0.25]
    return [{"image": png(100 + i, size), "label": label, "seed": 1000 + i,
             "confidence": confidences[i % len(confidences)], "generator": "ldm-test"}
            for i, label in enumerate(labels)]


def card_info(filter_name: str = "classifier", report_path: str | None = "report/README.md") -> CardInfo:
    return CardInfo(class_names=NAMES, counts_before={0: 3, 1: 2, 2: 1}, counts_after={0: 3, 1: 3, 2: 3},
                    config_yaml=CONFIG_YAML, filter_name=filter_name, generator_id="ldm-test",
                    report_path=report_path, source="toy source")


def raw(dataset: Dataset) -> list[dict]:
    """All rows, images as their stored {bytes, path}."""
    return dataset.cast_column("image", Image(decode=False)).to_list()


def make_splits() -> dict[str, Dataset]:
    return {"train": build_split(real_dataset(), synthetic_rows(), NAMES),
            "test": build_split(real_dataset([0, 1, 2]), None, NAMES)}


def load_hub(hub_dir: Path, tmp_path: Path) -> DatasetDict:
    return datasets.load_dataset(str(hub_dir), cache_dir=str(tmp_path / "load-cache"))


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# features, sizes
# ---------------------------------------------------------------------------------------------

def test_features_schema():
    assert features(NAMES) == Features({
        "image": Image(), "label": ClassLabel(names=NAMES), "is_synthetic": Value("bool"),
        "seed": Value("int64"), "confidence": Value("float32"), "generator": Value("string"),
    })


@pytest.mark.parametrize("names", [[], ["a", "a"], ["a", 1]])
def test_features_bad_class_names(names):
    with pytest.raises(ValueError) as err:
        features(names)
    assert str(err.value) == f"class_names={names!r} must be a non-empty list of distinct strings"


@pytest.mark.parametrize("value, expected", [
    ("100MB", 10**8), ("500KB", 5 * 10**5), ("1GB", 10**9), ("2TB", 2 * 10**12), ("1.5GiB", 3 * 2**29),
    ("64KiB", 2**16), ("10 mb", 10**7), ("4096", 4096), ("4096B", 4096), (4096, 4096),
])
def test_parse_size(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["abc", "10XB", "0MB", "-1MB", "", "MB", "0.1B"])
def test_parse_size_errors(value):
    with pytest.raises(ValueError) as err:
        parse_size(value)
    assert str(err.value) == (
        f"output.max_shard_size={value!r} is not a size: expected a positive number of bytes, optionally "
        "followed by a unit, one of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB (e.g. '100MB')"
    )


# ---------------------------------------------------------------------------------------------
# build_split
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_rows", [2, 256])  # several Arrow batches, and one
def test_build_split_order_and_provenance(monkeypatch, batch_rows):
    monkeypatch.setattr(export_module, "WRITE_BATCH_ROWS", batch_rows)
    real = real_dataset()
    split = build_split(real, iter(synthetic_rows()), NAMES)  # a one-shot iterator is enough
    assert split.features == features(NAMES)
    rows = raw(split)
    assert [r["label"] for r in rows] == REAL_LABELS + [2, 2, 1]
    assert [r["is_synthetic"] for r in rows] == [False] * 6 + [True] * 3
    assert [r["seed"] for r in rows] == [None] * 6 + [1000, 1001, 1002]
    assert [r["confidence"] for r in rows] == [None] * 6 + [0.5, 0.75, None]
    assert [r["generator"] for r in rows] == [None] * 6 + ["ldm-test"] * 3
    # Real bytes byte-identical; a real path keeps only its file name, as datasets does on embedding.
    assert [r["image"]["bytes"] for r in rows[:6]] == [img["bytes"] for img in real["image"]]
    assert [r["image"]["path"] for r in rows[:6]] == [None, "real-1.png", None, "real-3.png", None, "real-5.png"]
    assert [r["image"] for r in rows[6:]] == [{"bytes": s["image"], "path": None} for s in synthetic_rows()]
    assert np.asarray(split[8]["image"]).shape == (8, 8, 3)  # decodes as an image


def test_build_split_synthetic_only_real_only_and_empty():
    synthetic = build_split(None, synthetic_rows(), NAMES)  # output.include_real=false
    assert [r["is_synthetic"] for r in raw(synthetic)] == [True] * 3
    assert [r["seed"] for r in raw(synthetic)] == [1000, 1001, 1002]
    real = build_split(real_dataset(), None, NAMES)
    assert [r["label"] for r in raw(real)] == REAL_LABELS
    empty = build_split(None, None, NAMES)
    assert len(empty) == 0 and empty.features == features(NAMES)


def test_build_split_reads_real_image_given_by_path(tmp_path):
    (tmp_path / "pic.png").write_bytes(png(7))
    real = Dataset.from_dict({"image": [{"bytes": None, "path": str(tmp_path / "pic.png")}], "label": [1]},
                             features=Features({"image": Image(decode=False), "label": ClassLabel(names=NAMES)}))
    assert raw(build_split(real, None, NAMES))[0]["image"] == {"bytes": png(7), "path": "pic.png"}


def test_build_split_writes_to_work_dir(tmp_path):
    split = build_split(real_dataset(), None, NAMES, work_dir=tmp_path / "work")
    assert [Path(f["filename"]).parent for f in split.cache_files] == [tmp_path / "work"]


def _bad(**change):
    row = synthetic_rows()[0]
    row.update(change)
    return row


@pytest.mark.parametrize("row, message", [
    ({"image": b"x", "label": 0, "seed": 1}, "synthetic row 1: missing key(s) ['generator']; "
                                             "required: image, label, seed, generator"),
    (_bad(image="not bytes"), "synthetic row 1: image=<str> must be encoded image bytes (PNG)"),
    (_bad(label=3), "synthetic row 1: label=3 must be a class id in range(0, 3)"),
    (_bad(label=-1), "synthetic row 1: label=-1 must be a class id in range(0, 3)"),
    (_bad(label=True), "synthetic row 1: label=True must be a class id in range(0, 3)"),
    (_bad(seed=None), "synthetic row 1: seed=None must be an int64 integer"),
    (_bad(seed=2**63), f"synthetic row 1: seed={2**63} must be an int64 integer"),
    (_bad(confidence="high"), "synthetic row 1: confidence='high' must be a number or None"),
    (_bad(generator=""), "synthetic row 1: generator='' must be a non-empty string"),
])
def test_build_split_bad_synthetic_row(tmp_path, row, message):
    with pytest.raises(ValueError) as err:
        build_split(None, [synthetic_rows()[0], row], NAMES, work_dir=tmp_path)
    assert str(err.value) == message
    assert list(tmp_path.iterdir()) == []  # the partial Arrow file is removed


def test_build_split_accepts_numpy_scalars():
    row = _bad(label=np.int64(1), seed=np.int64(5), confidence=np.float32(0.5))
    assert raw(build_split(None, [row], NAMES))[0]["seed"] == 5


@pytest.mark.parametrize("make_real, message", [
    (lambda: real_dataset().remove_columns("label"), "real split: missing column(s) ['label']; it has ['image']"),
    (lambda: real_dataset(names=["cat", "dog", "emu"]),
     "real split: label names ['cat', 'dog', 'emu'] differ from class_names ['cat', 'dog', 'owl']"),
    (lambda: real_dataset().cast_column("label", Value("int64")).map(lambda r: {"label": r["label"] + 1}),
     "real split: label ids must lie in range(0, 3) (class_names); found 1..3 and 0 null(s)"),
    (lambda: Dataset.from_dict({"image": [b"x"], "label": [0]}),
     "real split: column 'image' must be an Image feature, not Value('binary')"),
])
def test_build_split_bad_real(make_real, message):
    with pytest.raises(ValueError) as err:
        build_split(make_real(), None, NAMES)
    assert str(err.value) == message


# ---------------------------------------------------------------------------------------------
# export: round trips, shards
# ---------------------------------------------------------------------------------------------

def test_export_round_trips(tmp_path):
    splits = make_splits()
    paths = export(splits, tmp_path / "out", OutputConfig(), card_info())
    assert paths == {"dataset": tmp_path / "out" / "dataset", "hub": tmp_path / "out" / "hub"}
    from_disk = datasets.load_from_disk(str(paths["dataset"]))
    from_hub = load_hub(paths["hub"], tmp_path)
    for loaded in (from_disk, from_hub):
        assert list(loaded) == ["train", "test"]
        for name, split in splits.items():
            assert loaded[name].features == features(NAMES)
            assert raw(loaded[name]) == raw(split)  # same rows
        real_bytes = [row["image"]["bytes"] for row in raw(loaded["train"]) if not row["is_synthetic"]]
        assert real_bytes == [png(i) for i in range(len(REAL_LABELS))]  # byte-identical to the source
    assert sorted(p.name for p in (paths["hub"] / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".augment", "dataset", "hub"]


@pytest.mark.parametrize("rows_per_group", [2, 100])  # several row groups per shard, and one
def test_parquet_shards_are_bounded(tmp_path, monkeypatch, rows_per_group):
    monkeypatch.setattr(export_module, "MAX_ROWS_PER_ROW_GROUP", rows_per_group)
    split = build_split(real_dataset(REAL_LABELS * 4, size=16), synthetic_rows([2] * 20, size=16), NAMES)
    bound = 8000
    shards, _ = write_parquet_shards(split, tmp_path / "data", "train", bound)
    assert len(shards) > 2
    assert [p.name for p in shards] == [f"train-{i:05d}-of-{len(shards):05d}.parquet" for i in range(len(shards))]
    for shard in shards:
        meta = pq.read_metadata(shard)
        largest_row_group = max(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        assert shard.stat().st_size <= bound + largest_row_group
        assert shard.stat().st_size <= bound or meta.num_row_groups == 1  # over only with one big row group
    groups = [pq.read_metadata(shard).num_row_groups for shard in shards]
    assert max(groups) > 1 if rows_per_group == 2 else max(groups) == 1
    assert sorted(tmp_path.joinpath("data").iterdir()) == shards  # no partial files left
    (tmp_path / "README.md").write_text("")  # no card: features come from the parquet metadata
    loaded = load_hub(tmp_path, tmp_path)["train"]
    assert loaded.features == features(NAMES)
    assert raw(loaded) == raw(split)


def test_export_shards_follow_max_shard_size(tmp_path):
    splits = {"train": build_split(real_dataset(REAL_LABELS * 3, size=16), synthetic_rows(size=16), NAMES)}
    paths = export(splits, tmp_path / "out", OutputConfig(max_shard_size="7KB"), card_info())
    assert len(list((paths["hub"] / "data").glob("train-*-of-*.parquet"))) > 1
    assert raw(load_hub(paths["hub"], tmp_path)["train"]) == raw(splits["train"])


@pytest.mark.parametrize("make_splits_, message", [
    (dict, "export: no splits to export"),
    (lambda: {"train": build_split(None, None, NAMES)}, "export: split 'train' has no rows; leave it out of the export"),
])
def test_export_rejects_splits(tmp_path, make_splits_, message):
    with pytest.raises(ValueError) as err:
        export(make_splits_(), tmp_path / "out", OutputConfig(), card_info())
    assert str(err.value) == message
    assert not (tmp_path / "out").exists()


def test_export_rejects_foreign_features(tmp_path):
    with pytest.raises(ValueError, match=r"^export: split 'train' has features .* \(build every split with "
                                         r"augment.export.build_split\)$"):
        export({"train": real_dataset()}, tmp_path / "out", OutputConfig(), card_info())


def test_export_rejects_bad_shard_size_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"^output.max_shard_size='lots' is not a size"):
        export(make_splits(), tmp_path / "out", OutputConfig(max_shard_size="lots"), card_info())
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# output folder rules
# ---------------------------------------------------------------------------------------------

def test_check_output_dir_creates_and_marks(tmp_path):
    out = tmp_path / "a" / "b"
    check_output_dir(out, overwrite=False)
    assert [p.name for p in out.iterdir()] == [".augment"]
    check_output_dir(out, overwrite=False)  # an augment folder without a finished output: fine
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", overwrite=False)
    assert (tmp_path / "empty" / ".augment").is_file()


@pytest.mark.parametrize("finished, listed", [(["dataset"], "dataset/"), (["hub"], "hub/"),
                                              (["dataset", "hub"], "dataset/, hub/")])
def test_check_output_dir_refuses_finished_output(tmp_path, finished, listed):
    out = tmp_path / "out"
    check_output_dir(out, overwrite=False)
    for name in finished:
        (out / name).mkdir()
    with pytest.raises(ValueError) as err:
        check_output_dir(out, overwrite=False)
    assert str(err.value) == (f"output.dir={str(out)!r} already holds a finished output ({listed}); "
                              "set output.overwrite=true to replace it, or choose another output.dir")
    check_output_dir(out, overwrite=True)  # allowed, and removes nothing yet
    assert sorted(p.name for p in out.iterdir()) == sorted([".augment", *finished])


@pytest.mark.parametrize("overwrite", [False, True])
def test_check_output_dir_refuses_foreign_folder(tmp_path, overwrite):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError) as err:
        check_output_dir(tmp_path, overwrite=overwrite)
    assert str(err.value) == (
        f"output.dir={str(tmp_path)!r} is not empty and is not an augment output folder (no .augment marker "
        "file); choose a new or empty folder (output.overwrite=true only replaces the dataset/, hub/ of an "
        "earlier augment run)"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_check_output_dir_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError) as err:
        check_output_dir(tmp_path / "f", overwrite=True)
    assert str(err.value) == f"output.dir={str(tmp_path / 'f')!r} is a file, not a folder"


def test_export_does_not_overwrite(tmp_path):
    out = tmp_path / "out"
    export(make_splits(), out, OutputConfig(), card_info())
    before = tree(out)
    with pytest.raises(ValueError) as err:
        export(make_splits(), out, OutputConfig(), card_info())
    assert str(err.value) == (f"output.dir={str(out)!r} already holds a finished output (dataset/, hub/); "
                              "set output.overwrite=true to replace it, or choose another output.dir")
    assert tree(out) == before


def test_export_overwrite_replaces_only_dataset_and_hub(tmp_path):
    out = tmp_path / "out"
    export(make_splits(), out, OutputConfig(), card_info())
    for name, text in [("generator/model.safetensors", "weights"), ("work/state.json", "{}"), ("plan.csv", "a")]:
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text(text)
    new = {"train": build_split(None, synthetic_rows([0, 1]), NAMES)}
    export(new, out, OutputConfig(overwrite=True), card_info())
    assert raw(datasets.load_from_disk(str(out / "dataset"))["train"]) == raw(new["train"])
    assert list(datasets.load_from_disk(str(out / "dataset"))) == ["train"]
    assert sorted(p.name for p in (out / "hub" / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert (out / "generator/model.safetensors").read_text() == "weights"
    assert (out / "work/state.json").read_text() == "{}" and (out / "plan.csv").read_text() == "a"
    assert sorted(p.name for p in out.iterdir()) == [".augment", "dataset", "generator", "hub", "plan.csv", "work"]


def _raise(*args, **kwargs):
    raise OSError("disk full (simulated)")


CRASH_POINTS = {  # where the export is made to fail: (object, attribute)
    "save_to_disk": (DatasetDict, "save_to_disk"),
    "parquet": (export_module, "write_parquet_shards"),
    "card": (export_module, "render_card"),
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
@pytest.mark.parametrize("earlier_output", [False, True])
def test_crash_leaves_no_half_written_output(tmp_path, monkeypatch, point, earlier_output):
    out = tmp_path / "out"
    if earlier_output:
        export(make_splits(), out, OutputConfig(), card_info())
    before = tree(out) if earlier_output else {}
    monkeypatch.setattr(*CRASH_POINTS[point], _raise)
    with pytest.raises(OSError, match="disk full"):
        export({"train": build_split(None, synthetic_rows(), NAMES)}, out, OutputConfig(overwrite=True), card_info())
    assert tree(out) == (before or {".augment": (out / ".augment").read_bytes()})  # no .tmp-* left either
    assert sorted(p.name for p in out.iterdir()) == ([".augment", "dataset", "hub"] if earlier_output else [".augment"])


def test_export_removes_leftovers_of_a_killed_export(tmp_path):
    out = tmp_path / "out"
    check_output_dir(out, overwrite=False)
    (out / ".tmp-dataset-abc123").mkdir()
    (out / ".tmp-hub-abc123" / "data").mkdir(parents=True)
    export(make_splits(), out, OutputConfig(), card_info())
    assert sorted(p.name for p in out.iterdir()) == [".augment", "dataset", "hub"]
    # Killed between the two renames of a replacement: the old hub/ is in .old-hub-*. While hub/
    # is missing it is the only copy and is kept; once a hub/ exists again it is removed.
    (out / "hub").rename(out / ".old-hub-1234")
    (out / "dataset").rename(out / ".old-dataset-5678")
    shutil.rmtree(out / ".old-dataset-5678")
    export(make_splits(), out, OutputConfig(overwrite=True), card_info())
    assert sorted(p.name for p in out.iterdir()) == [".augment", ".old-hub-1234", "dataset", "hub"]
    export(make_splits(), out, OutputConfig(overwrite=True), card_info())
    assert sorted(p.name for p in out.iterdir()) == [".augment", "dataset", "hub"]


# ---------------------------------------------------------------------------------------------
# push to the Hub (offline: HfApi is patched)
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """Patch HfApi; uploads are copied aside so the test can load exactly what was uploaded."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/datasets/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        shutil.copytree(kwargs["folder_path"], tmp_path / "uploaded")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return calls


@pytest.mark.parametrize("revision", [None, "v1"])
def test_export_pushes_the_hub_folder(tmp_path, fake_hub, caplog, revision):
    splits = make_splits()
    cfg = OutputConfig(push_to_hub=PushToHubConfig(repo_id="me/balanced", private=False, revision=revision))
    with caplog.at_level(logging.DEBUG):
        paths = export(splits, tmp_path / "out", cfg, card_info())
    expected = [("create_repo", "me/balanced", {"repo_type": "dataset", "private": False, "exist_ok": True})]
    if revision is not None:
        expected.append(("create_branch", "me/balanced", {"branch": "v1", "repo_type": "dataset", "exist_ok": True}))
    assert fake_hub[:-1] == expected
    name, repo_id, upload = fake_hub[-1]
    assert (name, repo_id, Path(upload["folder_path"])) == ("upload_folder", "me/balanced", paths["hub"])
    assert (upload["repo_type"], upload["revision"], upload["delete_patterns"]) == ("dataset", revision, ["data/*"])
    uploaded = load_hub(tmp_path / "uploaded", tmp_path)
    for split_name, split in splits.items():
        assert uploaded[split_name].features == features(NAMES)
        assert raw(uploaded[split_name]) == raw(split)
    assert "https://huggingface.co/datasets/me/balanced" in caplog.text
    assert SECRET not in caplog.text
    assert all(SECRET.encode() not in data for data in tree(tmp_path / "out").values())


def test_push_to_hub_returns_url(tmp_path, fake_hub):
    (tmp_path / "hub").mkdir()
    url = push_to_hub(tmp_path / "hub", PushToHubConfig(repo_id="me/x"))
    assert url == "https://huggingface.co/datasets/me/x"
    assert fake_hub[0] == ("create_repo", "me/x", {"repo_type": "dataset", "private": True, "exist_ok": True})


def test_push_to_hub_needs_repo_id(tmp_path):
    with pytest.raises(ValueError) as err:
        push_to_hub(tmp_path, PushToHubConfig())
    assert str(err.value) == "output.push_to_hub.repo_id=None: set it to a dataset repo id to push"


def test_failed_push_keeps_local_copies(tmp_path, fake_hub, monkeypatch):
    def upload_folder(self, **kwargs):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = tmp_path / "out"
    splits = make_splits()
    cfg = OutputConfig(push_to_hub=PushToHubConfig(repo_id="me/balanced"))
    with pytest.raises(RuntimeError) as err:
        export(splits, out, cfg, card_info())
    assert str(err.value) == (
        "output.push_to_hub: pushing to the dataset repo 'me/balanced' failed (ConnectionError: network "
        f"unreachable). Nothing was lost: the complete dataset is in {out / 'dataset'} and the Hub-ready copy "
        f"in {out / 'hub'}; push it again with `hf upload me/balanced {out / 'hub'} . --repo-type dataset`"
    )
    assert isinstance(err.value.__cause__, ConnectionError)
    assert raw(datasets.load_from_disk(str(out / "dataset"))["train"]) == raw(splits["train"])
    assert raw(load_hub(out / "hub", tmp_path)["train"]) == raw(splits["train"])


# ---------------------------------------------------------------------------------------------
# dataset card
# ---------------------------------------------------------------------------------------------

def _card(tmp_path, info: CardInfo, splits=None) -> tuple[dict, str]:
    paths = export(splits or make_splits(), tmp_path / "out", OutputConfig(), info)
    text = (paths["hub"] / "README.md").read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_card_front_matter(tmp_path):
    meta, _ = _card(tmp_path, card_info())
    assert meta["license"] == "other"
    assert meta["tags"] == ["synthetic", "image-classification", "class-imbalance"]
    assert meta["task_categories"] == ["image-classification"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}]}]
    info = meta["dataset_info"]
    assert info["features"][1] == {"name": "label", "dtype": {"class_label": {"names": {
        "0": "cat", "1": "dog", "2": "owl"}}}}
    assert [f["name"] for f in info["features"]] == ["image", "label", "is_synthetic", "seed", "confidence",
                                                     "generator"]
    assert [(s["name"], s["num_examples"]) for s in info["splits"]] == [("train", 9), ("test", 3)]
    assert info["download_size"] == sum(p.stat().st_size for p in (tmp_path / "out/hub/data").iterdir())


def test_card_body_classifier_filter(tmp_path):
    _, body = _card(tmp_path, card_info())
    assert "- **Source**: toy source" in body
    assert "\n".join([
        "| id | class | before | real | synthetic | total |",
        "|---:|:---|---:|---:|---:|---:|",
        "| 0 | cat | 3 | 3 | 0 | 3 |",
        "| 1 | dog | 2 | 2 | 1 | 3 |",
        "| 2 | owl | 1 | 1 | 2 | 3 |",
        "| | **all** | 6 | 6 | 3 | 9 |",
    ]) in body
    assert "Filter: `classifier`. Each synthetic image was kept only if a classifier" in body
    assert "NOT filtered" not in body
    for column in ("image", "label", "is_synthetic", "seed", "confidence", "generator"):
        assert f"| `{column}` |" in body
    assert "[report](report/README.md)" in body
    assert body.endswith(f"```yaml\n{CONFIG_YAML}```\n")


def test_card_unfiltered_without_report(tmp_path):
    _, body = _card(tmp_path, card_info(filter_name="none", report_path=None))
    assert "**The synthetic images were NOT filtered.**" in body
    assert "## Report" not in body


def test_card_unknown_filter(tmp_path):
    with pytest.raises(ValueError) as err:
        export(make_splits(), tmp_path / "out", OutputConfig(), card_info(filter_name="vibes"))
    assert str(err.value) == "filter.name='vibes' has no dataset-card description; allowed: classifier, none"
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_card_warns_when_counts_after_disagree(tmp_path, caplog):
    info = card_info()
    info.counts_after = {0: 3, 1: 3, 2: 4}
    with caplog.at_level(logging.WARNING, logger="augment.card"):
        _card(tmp_path, info)
    assert "counts_after {0: 3, 1: 3, 2: 4} differ from the exported training split {0: 3, 1: 3, 2: 3}" in caplog.text


def test_card_escapes_names_and_fences(tmp_path):
    names = ["a|b", "c"]
    info = CardInfo(names, {0: 1, 1: 1}, {0: 1, 1: 1}, "note: '```'\n", "none", "g", None, "s")
    splits = {"train": build_split(real_dataset([0, 1], names=names), None, names)}
    meta, body = _card(tmp_path, info, splits)
    assert "| 0 | a\\|b | 1 | 1 | 0 | 1 |" in body
    assert body.endswith("````yaml\nnote: '```'\n````\n")
    assert meta["dataset_info"]["features"][1]["dtype"]["class_label"]["names"] == {"0": "a|b", "1": "c"}


@pytest.mark.parametrize("rows, label", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (99_999, "10K<n<100K"),
                                         (100_000, "100K<n<1M"), (10**12, card_module.LARGEST_SIZE_CATEGORY)])
def test_size_category(rows, label):
    assert size_category(rows) == label
