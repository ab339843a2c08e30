"""Tests of augment.report: the Markdown run report and its figures."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import PIL.Image
import pytest

from augment.report import (
    DPI,
    LABEL_INCHES,
    TILE_INCHES,
    ReportInputs,
    image_grid,
    write_report,
)

NAMES = ["cat", "dog", "bird"]
# Per class, in the order of REASON_COLUMNS.
REASONS = {
    0: (0, 0, 0, 0, 0, 0, 0, 0),  # majority class: nothing to generate
    1: (108, 5, 10, 2, 1, 90, 90, 0),  # acceptance 90 / 108 = 83.3%
    2: (120, 30, 20, 1, 0, 69, 69, 29),  # 98 planned, 69 kept: 29 short
}
REASON_COLUMNS = (
    "generated",
    "wrong_class",
    "low_confidence",
    "near_real",
    "near_synthetic",
    "accepted",
    "kept",
    "short",
)
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def reasons_table(class_id_as_index: bool = True) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(REASONS, orient="index", columns=list(REASON_COLUMNS))
    frame.index.name = "class_id"
    return frame if class_id_as_index else frame.reset_index()


def make_inputs(filter_name: str = "classifier", **changes) -> ReportInputs:
    rng = np.random.default_rng(0)
    plan = pd.DataFrame(
        {
            "class_id": [0, 1, 2],
            "class_name": NAMES,
            "real_count": [100, 10, 2],
            "target": [100, 100, 100],
            "to_generate": [0, 90, 98],
            "capped": [False, False, False],
        }
    )
    inputs = ReportInputs(
        class_names=list(NAMES),
        plan=plan,
        counts_after={0: 100, 1: 100, 2: 71},
        reasons=reasons_table(),
        filter_name=filter_name,
        classifier_metrics={
            "val_balanced_accuracy": 0.87312,
            "temperature": 1.5,
            "arch": "small_cnn",
        },
        accepted_images={
            1: rng.integers(0, 256, (20, 8, 8), dtype=np.uint8),
            2: rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8),
        },
        rejected_images={2: rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)},
        confidences=pd.DataFrame(
            {
                "class_id": [1, 1, 2, 2, 2],
                "confidence": [0.95, 0.5, 0.99, 0.2, 0.91],
                "kept": [True, False, True, False, True],
            }
        ),
        frechet=pd.DataFrame(
            {
                "class_id": [0, 1, 2],
                "class_name": NAMES,
                "n_real": [100, 10, 2],
                "n_synthetic": [0, 90, 69],
                "frechet": [np.nan, 12.3456, 40.5],
            }
        ),
        generator_info={"id": "gen-abc123", "reconstruction_psnr": 31.25},
        timings={"train_generator": 120.5, "sample": 30.25},
        min_confidence=0.9,
    )
    for key, value in changes.items():
        setattr(inputs, key, value)
    return inputs


def linked_images(readme: Path) -> list[str]:
    return IMAGE_LINK.findall(readme.read_text(encoding="utf-8"))


def test_classifier_report_files_and_numbers(tmp_path):
    readme = write_report(make_inputs(), tmp_path / "report")
    assert readme == tmp_path / "report" / "README.md"
    links = linked_images(readme)
    assert links == ["counts.png", "accepted.png", "rejected.png", "confidence.png"]
    for name in links:
        with PIL.Image.open(readme.parent / name) as image:
            assert image.format == "PNG"
    assert sorted(p.name for p in readme.parent.iterdir()) == sorted(links + ["README.md"])
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temp folder left behind
    text = readme.read_text(encoding="utf-8")
    for name in NAMES:
        assert f"| {name} |" in text
    assert "| dog | 108 | 5 | 10 | 2 | 1 | 90 | 90 | 0 | 83.3% |" in text
    assert "| **total** | 228 | 35 | 30 | 3 | 1 | 159 | 159 | 29 | 69.7% |" in text  # 159/228
    assert "- **bird**: 29 short (69 of 98 synthetic kept; 71 of the target 100)" in text
    assert "| `val_balanced_accuracy` | 0.8731 |" in text
    assert "| dog | 10 | 90 | 12.346 |" in text and "| cat | 100 | 0 | n/a |" in text
    assert "| `id` | gen-abc123 |" in text
    assert "| **total** | 150.75 | 100.0% |" in text
    assert "| bird | 2 | 100 | 71 | 69 | no |" in text
    assert "Dashed line: min_confidence = 0.9." in text
    assert text.startswith(
        "# Augmentation report\n\n3 classes: 112 real train images, 188 synthetic planned, "
        "228 generated, 159 accepted by the filter (69.7%), 159 kept; 271 train images after "
        "augmentation; classes still short: 1."
    )


def test_no_filter_report(tmp_path):
    inputs = make_inputs(
        "none", classifier_metrics=None, rejected_images={}, confidences=None, min_confidence=None
    )
    readme = write_report(inputs, tmp_path / "report")
    text = readme.read_text(encoding="utf-8")
    assert "**Nothing was filtered** (`filter.name=none`)" in text
    assert linked_images(readme) == ["counts.png", "accepted.png"]
    files = sorted(p.name for p in readme.parent.iterdir())
    assert files == ["README.md", "accepted.png", "counts.png"]
    assert "| dog | 108 | 90 | 0 |" in text
    assert "## Generated samples" in text
    for absent in ("Rejected samples", "Classifier confidence", "wrong_class", "Filter classifier"):
        assert absent not in text
    assert "no filter (every generated image kept)" in text


def test_class_id_as_column_or_index_give_the_same_report(tmp_path):
    # No confidences here and below: their figure is the slow part and is checked above.
    by_index = write_report(make_inputs(confidences=None), tmp_path / "a").read_text("utf-8")
    by_column = make_inputs(
        confidences=None, reasons=reasons_table(class_id_as_index=False).iloc[::-1]
    )
    assert write_report(by_column, tmp_path / "b").read_text(encoding="utf-8") == by_index


def test_rewrite_replaces_old_report(tmp_path):
    report_dir = tmp_path / "report"
    write_report(make_inputs(confidences=None), report_dir)
    (report_dir / "stale.png").write_bytes(b"old")
    write_report(make_inputs("none", rejected_images={}, confidences=None), report_dir)
    files = sorted(p.name for p in report_dir.iterdir())
    assert files == ["README.md", "accepted.png", "counts.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_failure_keeps_old_report(tmp_path):
    report_dir = tmp_path / "report"
    old_text = write_report(make_inputs(confidences=None), report_dir).read_text("utf-8")
    broken = make_inputs(confidences=pd.DataFrame({"class_id": [1], "score": [0.5]}))
    with pytest.raises(ValueError) as info:
        write_report(broken, report_dir)
    assert str(info.value) == (
        "confidences lacks the columns ['confidence', 'kept']; it has ['class_id', 'score']"
    )
    assert (report_dir / "README.md").read_text(encoding="utf-8") == old_text
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_report_errors(tmp_path):
    with pytest.raises(ValueError) as info:
        write_report(make_inputs("knn"), tmp_path / "r")
    assert str(info.value) == "filter_name='knn' is not supported; allowed: classifier, none"
    with pytest.raises(ValueError) as info:
        write_report(make_inputs(plan=make_inputs().plan.drop(columns="target")), tmp_path / "r")
    assert str(info.value) == (
        "plan lacks the columns ['target']; it has "
        "['class_id', 'class_name', 'real_count', 'to_generate', 'capped']"
    )
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError) as info:
        write_report(make_inputs(), tmp_path / "file")
    assert str(info.value) == f"report_dir={str(tmp_path / 'file')!r} is a file, not a folder"


@pytest.mark.parametrize(
    ("counts_after", "log_scale", "expected"),
    [
        ({0: 100, 1: 100, 2: 71}, None, True),  # real counts 100 vs 2: imbalanced
        ({0: 100, 1: 100, 2: 71}, False, False),
    ],
)
def test_log_scale(tmp_path, counts_after, log_scale, expected):
    inputs = make_inputs(counts_after=counts_after, confidences=None)
    text = write_report(inputs, tmp_path / "r", log_scale=log_scale).read_text(encoding="utf-8")
    assert ("y axis is on a log scale" in text) is expected


def test_balanced_counts_use_linear_scale(tmp_path):
    plan = make_inputs().plan.assign(real_count=[100, 60, 50], to_generate=[0, 40, 50])
    inputs = make_inputs(plan=plan, counts_after={0: 100, 1: 100, 2: 100}, confidences=None)
    text = write_report(inputs, tmp_path / "r").read_text(encoding="utf-8")
    assert "log scale" not in text


def test_image_grid_size_and_empty_class(tmp_path):
    images = {
        0: np.zeros((3, 8, 6), dtype=np.uint8),  # grey, smaller: centred on the 10 x 8 tile
        2: np.full((40, 10, 8, 4), 200, dtype=np.uint8),  # RGBA, more than max_per_class
    }
    path = tmp_path / "grid.png"
    image_grid(images, ["a", "b", "c"], path, max_per_class=4)
    with PIL.Image.open(path) as png:
        # 4 columns (the cap) and 3 rows, class "b" with no images included.
        assert png.size == (
            round((LABEL_INCHES + 4 * TILE_INCHES) * DPI),
            round(3 * TILE_INCHES * DPI),
        )


@pytest.mark.parametrize(
    ("images", "max_per_class", "message"),
    [
        (
            {0: np.zeros((2, 4, 4), dtype=np.float32)},
            16,
            "images of class 0 must be uint8, got float32",
        ),
        (
            {1: np.zeros((2, 4, 4, 2), dtype=np.uint8)},
            16,
            "images of class 1 must be (N, H, W) or (N, H, W, C) with C in 1, 3, 4; "
            "got (2, 4, 4, 2)",
        ),
        ({0: np.zeros((2, 4, 4), dtype=np.uint8)}, 0, "max_per_class must be >= 1, got 0"),
    ],
)
def test_image_grid_errors(tmp_path, images, max_per_class, message):
    with pytest.raises(ValueError) as info:
        image_grid(images, ["a", "b"], tmp_path / "g.png", max_per_class=max_per_class)
    assert str(info.value) == message
    assert not (tmp_path / "g.png").exists()
