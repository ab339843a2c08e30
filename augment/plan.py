"""The generation plan: one row per class saying how many images it has, gets and ends with.

The plan is the table form of :class:`augment.targets.Targets` joined with the real counts and the
class names. It is logged before any work starts (:func:`format_plan`) and saved beside the
dataset for provenance (:func:`write_plan` / :func:`read_plan`, a CSV that round-trips with the
same column types).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from augment.targets import Targets

logger = logging.getLogger(__name__)

# Column -> dtype, in column order; make_plan, read_plan and the checks all read this table.
PLAN_DTYPES: dict[str, str] = {
    "class_id": "int64",
    "class_name": "str",
    "real_count": "int64",
    "target": "int64",  # real_count + to_generate: the total aimed at after the cap
    "to_generate": "int64",
    "capped": "bool",
}
PLAN_COLUMNS: tuple[str, ...] = tuple(PLAN_DTYPES)
_SUMMED = ("real_count", "target", "to_generate")  # columns the total row adds up
_TEXT_COLUMNS = ("class_name",)  # left-aligned in format_plan; the others are right-aligned
_TOTAL_LABEL = "total"
_YES_NO = {True: "yes", False: "no"}  # how format_plan shows `capped`


def make_plan(
    counts: Mapping[int, int], class_names: Sequence[str], targets: Targets
) -> pd.DataFrame:
    """Build the plan table.

    Args:
        counts: Real images per class id 0..C-1.
        class_names: Class names by id.
        targets: Resolved targets for the same classes (from
            :func:`augment.targets.resolve_targets`).

    Returns:
        One row per class sorted by ``class_id``, with the columns of :data:`PLAN_COLUMNS`.

    Raises:
        ValueError: ``counts``, ``class_names`` and ``targets`` do not cover the same class ids.
    """
    ids = list(range(len(class_names)))
    for field, keys in (("counts", counts), ("targets.to_generate", targets.to_generate)):
        if sorted(keys) != ids:
            raise ValueError(
                f"{field}: class ids must be exactly 0..{len(ids) - 1} (one per class name); "
                f"got {sorted(keys)!r}."
            )
    rows = {
        "class_id": ids,
        "class_name": [str(class_names[c]) for c in ids],
        "real_count": [counts[c] for c in ids],
        "target": [counts[c] + targets.to_generate[c] for c in ids],
        "to_generate": [targets.to_generate[c] for c in ids],
        "capped": [targets.capped[c] for c in ids],
    }
    return pd.DataFrame(rows, columns=list(PLAN_COLUMNS)).astype(PLAN_DTYPES)


def _check_columns(df: pd.DataFrame, source: str) -> None:
    if tuple(df.columns) != PLAN_COLUMNS:
        raise ValueError(
            f"{source}: a plan needs exactly the columns {list(PLAN_COLUMNS)!r}; "
            f"got {list(df.columns)!r}."
        )


def _cells(df: pd.DataFrame) -> list[list[str]]:
    """The plan as text cells: a header, one row per class and a total row."""
    rows = [list(PLAN_COLUMNS)]
    for record in df.to_dict("records"):
        record["capped"] = _YES_NO[bool(record["capped"])]
        rows.append([str(record[column]) for column in PLAN_COLUMNS])
    total = {column: str(int(df[column].sum())) for column in _SUMMED}
    total.update(class_id=_TOTAL_LABEL, class_name=f"{len(df)} classes")
    total["capped"] = str(int(df["capped"].sum()))  # number of capped classes
    rows.append([total[column] for column in PLAN_COLUMNS])
    return rows


def format_plan(df: pd.DataFrame) -> str:
    """Render the plan as an aligned text table with a total row, for logs.

    Args:
        df: A plan from :func:`make_plan` or :func:`read_plan`.

    Returns:
        The table, one line per class between a header and a total row (whose ``capped`` cell
        counts the capped classes); no trailing newline.
    """
    _check_columns(df, "format_plan")
    rows = _cells(df)
    widths = [max(len(row[i]) for row in rows) for i in range(len(PLAN_COLUMNS))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if column in _TEXT_COLUMNS else cell.rjust(width)
            for column, cell, width in zip(PLAN_COLUMNS, row, widths)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def write_plan(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the plan as CSV atomically (a temp file in the same folder, then ``os.replace``).

    Args:
        df: A plan from :func:`make_plan`.
        path: Destination file; its folder is created if missing.

    Returns:
        The destination path.
    """
    _check_columns(df, "write_plan")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            df.to_csv(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.debug("Wrote plan with %d classes to %s", len(df), path)
    return path


def read_plan(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a plan written by :func:`write_plan`, with the same column types.

    Args:
        path: The CSV file.

    Returns:
        The plan, equal to the one written (class names such as ``"NA"`` or ``"007"`` stay text).

    Raises:
        ValueError: The file does not have exactly the plan's columns.
    """
    # No NA parsing: a class may be named "NA", "nan" or "" and must come back as that text.
    df = pd.read_csv(path, dtype=PLAN_DTYPES, keep_default_na=False, na_filter=False)
    _check_columns(df, str(path))
    return df
