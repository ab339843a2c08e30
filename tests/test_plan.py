"""The plan table: contents, text rendering and the CSV round trip (pure, milliseconds)."""

import os
import re
import sys

import pandas as pd
import pytest

from augment.plan import PLAN_COLUMNS, format_plan, make_plan, read_plan, write_plan
from augment.targets import Targets, resolve_targets

COUNTS = {0: 10, 1: 3, 2: 6, 3: 0}
NAMES = ["cat", "dog", "bird", "fish"]


@pytest.fixture
def plan():
    targets = resolve_targets(COUNTS, NAMES, "all", max_synthetic_per_real=1, exclude=["fish"])
    return make_plan(COUNTS, NAMES, targets)


def test_make_plan_rows_and_types(plan):
    expected = pd.DataFrame(
        {
            "class_id": [0, 1, 2, 3],
            "class_name": NAMES,
            "real_count": [10, 3, 6, 0],
            "target": [10, 6, 10, 0],  # after the cap: real + to_generate
            "to_generate": [0, 3, 4, 0],
            "capped": [False, True, False, False],
        }
    ).astype({"class_id": "int64", "real_count": "int64", "target": "int64",
              "to_generate": "int64", "capped": "bool", "class_name": "str"})
    pd.testing.assert_frame_equal(plan, expected)
    assert tuple(plan.columns) == PLAN_COLUMNS == (
        "class_id", "class_name", "real_count", "target", "to_generate", "capped")


def test_format_plan_exact_text(plan):
    assert format_plan(plan) == "\n".join(
        [
            "class_id  class_name  real_count  target  to_generate  capped",
            "       0  cat                 10      10            0      no",
            "       1  dog                  3       6            3     yes",
            "       2  bird                 6      10            4      no",
            "       3  fish                 0       0            0      no",
            "   total  4 classes           19      26            7       1",
        ]
    )


@pytest.mark.parametrize(
    "names",
    [
        ["cat", "dog", "bird", "fish"],
        ["NA", "nan", "", "None"],  # would turn into missing values under pandas' defaults
        ["007", "3", "1e5", "True"],  # would turn into numbers or booleans
        ['a, "quoted"', "new\nline", " padded ", "ünïcödé"],
    ],
)
def test_write_read_round_trip(tmp_path, names):
    targets = resolve_targets(COUNTS, names, "not majority", exclude=[3])
    plan = make_plan(COUNTS, names, targets)
    path = write_plan(plan, tmp_path / "sub" / "plan.csv")
    assert path == tmp_path / "sub" / "plan.csv"
    back = read_plan(path)
    pd.testing.assert_frame_equal(back, plan)
    assert back["class_name"].tolist() == names
    assert os.listdir(tmp_path / "sub") == ["plan.csv"]  # no temp file left behind


def test_write_plan_replaces_existing_file(tmp_path, plan):
    path = tmp_path / "plan.csv"
    path.write_text("old contents\n")
    write_plan(plan, path)
    pd.testing.assert_frame_equal(read_plan(path), plan)


def test_write_plan_failure_leaves_no_temp_and_keeps_old_file(tmp_path, plan, monkeypatch):
    path = tmp_path / "plan.csv"
    path.write_text("old contents\n")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="^disk full$"):
        write_plan(plan, path)
    assert os.listdir(tmp_path) == ["plan.csv"]
    assert path.read_text() == "old contents\n"


def test_make_plan_rejects_mismatched_ids():
    targets = Targets(to_generate={0: 1}, target={0: 2}, capped={0: False})
    message = "targets.to_generate: class ids must be exactly 0..1 (one per class name); got [0]."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_plan({0: 1, 1: 2}, ["a", "b"], targets)
    message = "counts: class ids must be exactly 0..1 (one per class name); got [0, 5]."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_plan({0: 1, 5: 2}, ["a", "b"], targets)


def test_read_plan_rejects_other_columns(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("class_id,class_name\n0,a\n")
    message = (
        f"{path}: a plan needs exactly the columns ['class_id', 'class_name', 'real_count', "
        "'target', 'to_generate', 'capped']; got ['class_id', 'class_name']."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        read_plan(path)


def test_module_is_pure():
    """plan.py imports the stdlib, pandas and augment.targets only: no torch, no hydra."""
    import augment.plan as plan_module

    source = open(plan_module.__file__, encoding="utf-8").read()
    imported = set(re.findall(r"^(?:from|import) ([\w.]+)", source, flags=re.MULTILINE))
    non_stdlib = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    assert non_stdlib == {"pandas", "augment.targets"}
