"""The run report: one Markdown page with tables and PNG figures, written beside the dataset.

:func:`write_report` takes every number it shows from a :class:`ReportInputs` (nothing is recomputed
from images) and writes ``README.md`` plus its figures into a temporary folder that is then renamed
into place, so a reader never sees half a report. Figures are drawn on matplotlib ``Figure``
objects with the Agg canvas, never through ``pyplot``: no screen is needed, no global figure state.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from augment.filter.keep import REJECTION_REASONS
from augment.metrics import MIN_SAMPLES

logger = logging.getLogger(__name__)

README = "README.md"
COUNTS_PNG, ACCEPTED_PNG, REJECTED_PNG, CONFIDENCE_PNG = (
    "counts.png", "accepted.png", "rejected.png", "confidence.png"
)
PLAN_COLUMNS = ("class_id", "class_name", "real_count", "target", "to_generate", "capped")
REASONS_REQUIRED = ("class_id", "generated", "accepted", "kept", "short")
CONFIDENCE_COLUMNS = ("class_id", "confidence", "kept")
# Counts chart: a log y axis once the largest class is this many times the smallest.
LOG_SCALE_RATIO = 10.0
# Confidence histograms: a small panel per class up to this many classes, one plot of all beyond.
MAX_SMALL_MULTIPLES = 20
SMALL_MULTIPLE_COLUMNS = 5
CONFIDENCE_BINS = 20  # equal-width bins on [0, 1]
# Figure geometry (inches) and resolution.
DPI = 100
TILE_INCHES = 0.5  # one image of a sample grid
LABEL_INCHES = 1.5  # room for the class names left of a grid
PANEL_INCHES = (2.4, 1.8)  # one confidence small multiple
COUNTS_INCHES = (4.0, 3.5)  # smallest counts chart; it widens with the classes
COUNTS_INCHES_PER_CLASS = 0.7
BAR_WIDTH = 0.4  # of each of the two bars of a class, in class spacings
LOG_AXIS_BOTTOM = 1.0  # one image: bars on a log axis need a positive base
MAX_HORIZONTAL_LABELS = 8  # more class names under the counts chart are written vertically
TILE_PADDING = 2  # pixels between grid images
MIN_GRID_COLUMNS = 4  # room for "no images" when few samples are shown
NAN_TEXT = "n/a"
FRECHET_DIGITS = 3  # decimals shown
SECONDS_DIGITS = 2
REPORT_DIR_MODE = 0o755  # rwxr-xr-x, like a folder made with the usual umask


@dataclass
class ReportInputs:
    """Everything the report shows; built by the pipeline at the end of a run.

    Attributes:
        class_names: Class names; position = class id.
        plan: The generation plan (:func:`augment.plan.make_plan`), columns :data:`PLAN_COLUMNS`.
        counts_after: Train images per class id after augmentation (real + kept synthetic).
        reasons: Filter outcome per class (:class:`augment.filter.keep.KeepResult.reasons`, with
            ``class_id`` as a column or as the index): generated, each rejection reason, accepted,
            kept, short.
        filter_name: ``classifier`` or ``none``.
        classifier_metrics: Metrics of the filter classifier (name -> value), or None.
        accepted_images: Per class id, up to 64 kept samples, uint8 (N, H, W, C) or (N, H, W).
        rejected_images: Per class id, up to 64 rejected samples in the same format; may be empty.
        confidences: One row per scored candidate: class_id, confidence, kept (bool); or None.
        frechet: Per-class Fréchet distances (:func:`augment.metrics.per_class_frechet`), or None.
        generator_info: Facts about the generator (name -> value), shown as a table.
        timings: Stage name -> seconds.
        min_confidence: The filter's confidence threshold, drawn on the histograms; or None.
    """

    class_names: list[str]
    plan: pd.DataFrame
    counts_after: dict[int, int]
    reasons: pd.DataFrame
    filter_name: str
    classifier_metrics: dict | None
    accepted_images: dict[int, np.ndarray]
    rejected_images: dict[int, np.ndarray]
    confidences: pd.DataFrame | None
    frechet: pd.DataFrame | None
    generator_info: dict
    timings: dict[str, float]
    min_confidence: float | None


def write_report(
    inputs: ReportInputs, report_dir: Path, *, log_scale: bool | None = None
) -> Path:
    """Write ``report_dir/README.md`` and its figures, replacing any earlier report there.

    Args:
        inputs: The numbers and samples to show.
        report_dir: Folder of the report; created, or replaced when it exists.
        log_scale: Log y axis of the counts chart; None = when the classes are imbalanced (largest
            over smallest count >= :data:`LOG_SCALE_RATIO`).

    Returns:
        The path of the README.

    Raises:
        ValueError: If ``filter_name`` is unknown, a table lacks a column or ``report_dir`` is a
            file.
    """
    _check_choice("filter_name", inputs.filter_name, _FILTER_SECTIONS)
    _check_columns("plan", inputs.plan, PLAN_COLUMNS)
    reasons = _reasons_frame(inputs.reasons)
    report_dir = Path(report_dir)
    if report_dir.exists() and not report_dir.is_dir():
        raise ValueError(f"report_dir={str(report_dir)!r} is a file, not a folder")
    report_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{report_dir.name}.tmp-", dir=report_dir.parent))
    try:
        sections = [_summary(inputs, reasons), _counts_section(inputs, tmp, log_scale)]
        sections += _FILTER_SECTIONS[inputs.filter_name](inputs, reasons, tmp)
        sections += [
            _frechet_section(inputs.frechet),
            _info_section("Generator", inputs.generator_info),
            _timings_section(inputs.timings),
        ]
        text = "\n\n".join(s for s in sections if s) + "\n"
        (tmp / README).write_text(text, encoding="utf-8")
        _replace_dir(tmp, report_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("report written to %s", report_dir / README)
    return report_dir / README


def _check_choice(field: str, value: object, table: Mapping) -> None:
    """Raise a ``ValueError`` naming ``field``, ``value`` and the keys of the dispatch ``table``."""
    if value not in table:
        raise ValueError(f"{field}={value!r} is not supported; allowed: {', '.join(sorted(table))}")


def image_grid(
    images_by_class: Mapping[int, np.ndarray],
    class_names: Sequence[str],
    path: Path,
    max_per_class: int = 16,
) -> None:
    """Save one PNG with a row of samples per class, each row labelled with the class name.

    Every class of ``class_names`` gets a row; a class without images shows "no images". Images of
    different sizes are centred on tiles of the largest size; grey images are shown as grey RGB.

    Args:
        images_by_class: Class id -> uint8 images (N, H, W) or (N, H, W, C) with C in 1, 3, 4.
        class_names: Class names; position = class id.
        path: PNG to write.
        max_per_class: The first this many images of each class are shown.

    Raises:
        ValueError: If ``max_per_class`` < 1 or an image array is not uint8 of a supported shape.
    """
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1, got {max_per_class}")
    rows = [_to_rgb(k, images_by_class.get(k), max_per_class) for k in range(len(class_names))]
    shapes = [r.shape[1:3] for r in rows if len(r)] or [(1, 1)]
    tile_h, tile_w = (max(s[0] for s in shapes), max(s[1] for s in shapes))
    cell_h, cell_w = tile_h + TILE_PADDING, tile_w + TILE_PADDING
    n_cols = max([len(r) for r in rows] + [MIN_GRID_COLUMNS])
    canvas = np.full((cell_h * len(rows), cell_w * n_cols, 3), 255, dtype=np.uint8)  # white
    for i, images in enumerate(rows):
        for j, image in enumerate(images):
            top = i * cell_h + (cell_h - image.shape[0]) // 2
            left = j * cell_w + (cell_w - image.shape[1]) // 2
            canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    fig = _figure((LABEL_INCHES + n_cols * TILE_INCHES, max(len(rows), 1) * TILE_INCHES))
    left = LABEL_INCHES / fig.get_figwidth()
    ax = fig.add_axes((left, 0.0, 1.0 - left, 1.0))
    ax.imshow(canvas, interpolation="nearest", aspect="auto")
    ax.set_xticks([])
    centres = [i * cell_h + cell_h / 2 for i in range(len(rows))]
    ax.set_yticks(centres, [str(n) for n in class_names])
    for i, images in enumerate(rows):
        if not len(images):
            ax.text(cell_w / 2, centres[i], "no images", va="center", fontsize="small")
    fig.savefig(path, dpi=DPI)


def _to_rgb(class_id: int, images: np.ndarray | None, limit: int) -> np.ndarray:
    """The first ``limit`` images of a class as uint8 (N, H, W, 3); empty (0, 1, 1, 3) when none."""
    if images is None or len(images) == 0:
        return np.zeros((0, 1, 1, 3), dtype=np.uint8)
    images = np.asarray(images)[:limit]
    field = f"images of class {class_id}"
    if images.dtype != np.uint8:
        raise ValueError(f"{field} must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{field} must be (N, H, W) or (N, H, W, C) with C in 1, 3, 4; got {images.shape}"
        )
    if images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    return images[..., :3]  # drop alpha


def _figure(size: tuple[float, float]) -> Figure:
    """A new figure on the Agg canvas (no pyplot, no screen)."""
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _check_columns(field: str, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{field} lacks the columns {missing}; it has {list(frame.columns)}")


def _reasons_frame(reasons: pd.DataFrame) -> pd.DataFrame:
    """The reasons table with ``class_id`` as a column (keep.select puts it in the index)."""
    if "class_id" not in reasons.columns and reasons.index.name == "class_id":
        reasons = reasons.reset_index()
    _check_columns("reasons", reasons, REASONS_REQUIRED)
    return reasons.sort_values("class_id").reset_index(drop=True)


def _replace_dir(tmp: Path, report_dir: Path) -> None:
    """Rename ``tmp`` to ``report_dir``; an old report is moved aside first, then deleted."""
    tmp.chmod(REPORT_DIR_MODE)  # mkdtemp makes the folder private (0700)
    old = None
    if report_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{report_dir.name}.old-", dir=report_dir.parent))
        os.replace(report_dir, old / report_dir.name)
    os.replace(tmp, report_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fmt(value: object, digits: int) -> str:
    """One table cell: ints as is, floats with ``digits`` decimals, NaN as n/a, bools yes/no."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return NAN_TEXT if math.isnan(value) else f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")  # a "|" in a class name would split the cell


def _percent(part: float, whole: float) -> str:
    return NAN_TEXT if whole == 0 else f"{100.0 * part / whole:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], digits: int = 4) -> str:
    """A Markdown table; columns whose first cell is a number are right-aligned."""
    first = rows[0] if rows else header
    align = [
        "---:" if isinstance(c, (int, float, np.number)) and not isinstance(c, bool) else "---"
        for c in first
    ]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_fmt(c, digits) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _rate(counts: pd.Series) -> str:
    """Acceptance rate of one row of the reasons table."""
    return _percent(counts["accepted"], counts["generated"])


def _class_name(inputs: ReportInputs, class_id: object) -> str:
    return str(inputs.class_names[int(class_id)])


def _summary(inputs: ReportInputs, reasons: pd.DataFrame) -> str:
    real, after = int(inputs.plan["real_count"].sum()), int(sum(inputs.counts_after.values()))
    generated, kept = int(reasons["generated"].sum()), int(reasons["kept"].sum())
    accepted = int(reasons["accepted"].sum())
    if inputs.filter_name == "none":
        filtered = "no filter (every generated image kept)"
    else:
        filtered = f"{accepted} accepted by the filter ({_percent(accepted, generated)})"
    return (
        f"# Augmentation report\n\n{len(inputs.class_names)} classes: {real} real train images, "
        f"{int(inputs.plan['to_generate'].sum())} synthetic planned, {generated} generated, "
        f"{filtered}, {kept} kept; {after} train images after augmentation; "
        f"classes still short: {int((reasons['short'] > 0).sum())}."
    )


def _counts_section(inputs: ReportInputs, out: Path, log_scale: bool | None) -> str:
    rows = []
    for r in inputs.plan.sort_values("class_id").itertuples():
        after = int(inputs.counts_after.get(r.class_id, 0))
        added = after - int(r.real_count)
        rows.append((str(r.class_name), int(r.real_count), int(r.target), after, added, r.capped))
    before, after = [r[1] for r in rows], [r[3] for r in rows]
    if log_scale is None:
        positive = [c for c in before + after if c > 0]
        log_scale = bool(positive) and max(positive) >= LOG_SCALE_RATIO * min(before + after)
    width = max(COUNTS_INCHES[0], COUNTS_INCHES_PER_CLASS * len(rows))
    fig = _figure((width, COUNTS_INCHES[1]))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    ax.bar(x - BAR_WIDTH / 2, before, width=BAR_WIDTH, label="real (before)")
    ax.bar(x + BAR_WIDTH / 2, after, width=BAR_WIDTH, label="after augmentation")
    vertical = len(rows) > MAX_HORIZONTAL_LABELS
    ax.set_xticks(x, [r[0] for r in rows], rotation="vertical" if vertical else "horizontal")
    ax.set_ylabel("train images" + (" (log scale)" if log_scale else ""))
    if log_scale:
        ax.set_yscale("log")
        ax.set_ylim(bottom=LOG_AXIS_BOTTOM)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, frameon=False)
    fig.tight_layout()
    fig.savefig(out / COUNTS_PNG, dpi=DPI)
    table = _table(("class", "before", "target", "after", "added", "capped"), rows)
    scale = " The chart's y axis is on a log scale." if log_scale else ""
    return (
        f"## Class counts\n\nTrain images per class before and after augmentation.{scale}\n\n"
        f"{table}\n\n![class counts before and after]({COUNTS_PNG})"
    )


def _classifier_sections(inputs: ReportInputs, reasons: pd.DataFrame, out: Path) -> list[str]:
    """Acceptance, shortfall, sample grids, confidences and the classifier's metrics."""
    rejected = [c for c in REJECTION_REASONS if c in reasons.columns]
    columns = ["generated", *rejected, "accepted", "kept", "short"]
    rows = [
        [_class_name(inputs, r["class_id"]), *[int(r[c]) for c in columns], _rate(r)]
        for _, r in reasons.iterrows()
    ]
    total = reasons[columns].sum()
    rows.append(["**total**", *[int(total[c]) for c in columns], _rate(total)])
    table = _table(("class", *columns, "acceptance rate"), rows)
    return [
        "## Filter\n\nEach rejected image is counted under the first reason that applies. "
        f"Acceptance rate = accepted / generated.\n\n{table}",
        _short_section(inputs, reasons),
        _grid_section("Accepted samples", inputs.accepted_images, inputs, out / ACCEPTED_PNG),
        _grid_section("Rejected samples", inputs.rejected_images, inputs, out / REJECTED_PNG),
        _confidence_section(inputs, out),
        _info_section("Filter classifier", inputs.classifier_metrics),
    ]


def _no_filter_sections(inputs: ReportInputs, reasons: pd.DataFrame, out: Path) -> list[str]:
    """Filter off: say so, then what was generated and kept; no rejections, no confidences."""
    columns = ("generated", "kept", "short")
    rows = [
        [_class_name(inputs, r["class_id"]), *[int(r[c]) for c in columns]]
        for _, r in reasons.iterrows()
    ]
    return [
        "## Filter\n\n**Nothing was filtered** (`filter.name=none`): every generated image was "
        "kept, so there are no rejection reasons, rejected samples or confidences.\n\n"
        + _table(("class", *columns), rows),
        _short_section(inputs, reasons),
        _grid_section("Generated samples", inputs.accepted_images, inputs, out / ACCEPTED_PNG),
    ]


# filter_name -> the sections it adds; write_report checks filter_name against these keys.
_FILTER_SECTIONS: dict[str, Callable[[ReportInputs, pd.DataFrame, Path], list[str]]] = {
    "classifier": _classifier_sections,
    "none": _no_filter_sections,
}


def _short_section(inputs: ReportInputs, reasons: pd.DataFrame) -> str:
    short = reasons[reasons["short"] > 0]
    if short.empty:
        return "## Classes still short\n\nNone: every class reached its target."
    targets = inputs.plan.set_index("class_id")["target"]
    lines = []
    for _, r in short.iterrows():
        class_id, kept, missing = int(r["class_id"]), int(r["kept"]), int(r["short"])
        lines.append(
            f"- **{_fmt(_class_name(inputs, class_id), 0)}**: {missing} short "
            f"({kept} of {kept + missing} synthetic kept; "
            f"{int(inputs.counts_after.get(class_id, 0))} of the target {int(targets[class_id])})"
        )
    return "## Classes still short\n\n" + "\n".join(lines)


def _grid_section(
    title: str, images: Mapping[int, np.ndarray], inputs: ReportInputs, path: Path
) -> str:
    if not any(len(v) for v in images.values()):
        return f"## {title}\n\nNo samples to show."
    image_grid(images, inputs.class_names, path)
    return f"## {title}\n\nOne row per class.\n\n![{title.lower()}]({path.name})"


def _confidence_section(inputs: ReportInputs, out: Path) -> str:
    title = "## Classifier confidence"
    conf = inputs.confidences
    if conf is None or conf.empty:
        return f"{title}\n\nNo confidences recorded."
    _check_columns("confidences", conf, CONFIDENCE_COLUMNS)
    if len(inputs.class_names) <= MAX_SMALL_MULTIPLES:
        groups = [(str(n), conf[conf["class_id"] == k]) for k, n in enumerate(inputs.class_names)]
    else:
        groups = [("all classes", conf)]
    n_cols = min(len(groups), SMALL_MULTIPLE_COLUMNS)
    n_rows = math.ceil(len(groups) / n_cols)
    width = max(PANEL_INCHES[0] * n_cols, COUNTS_INCHES[0])
    fig = _figure((width, max(PANEL_INCHES[1] * n_rows, COUNTS_INCHES[1])))
    bins = np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1)
    for i, (name, group) in enumerate(groups):
        ax = fig.add_subplot(n_rows, n_cols, i + 1)
        kept = group["kept"].to_numpy(dtype=bool)
        values = group["confidence"].to_numpy(dtype=float)
        ax.hist([values[kept], values[~kept]], bins=bins, stacked=True, label=["kept", "not kept"])
        if inputs.min_confidence is not None:
            ax.axvline(inputs.min_confidence, color="black", linestyle="--", linewidth=1)
        if not len(group):
            ax.text(0.5, 0.5, "no candidates", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name, fontsize="small")
        ax.set_xlim(0.0, 1.0)
    fig.axes[0].legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(out / CONFIDENCE_PNG, dpi=DPI)
    line = ""
    if inputs.min_confidence is not None:
        line = f" Dashed line: min_confidence = {inputs.min_confidence}."
    return (
        f"{title}\n\nCalibrated confidence of every scored candidate.{line}\n\n"
        f"![confidence]({CONFIDENCE_PNG})"
    )


def _info_section(title: str, info: Mapping | None) -> str:
    if not info:
        return f"## {title}\n\nNot available."
    return f"## {title}\n\n" + _table(("", "value"), [(f"`{k}`", v) for k, v in info.items()])


def _frechet_section(frechet: pd.DataFrame | None) -> str:
    title = "## Fréchet distance per class"
    if frechet is None or frechet.empty:
        return f"{title}\n\nNot computed."
    rows = [
        (str(r.class_name), int(r.n_real), int(r.n_synthetic), float(r.frechet))
        for r in frechet.itertuples()
    ]
    note = (
        "Between the real and the kept synthetic features of each class (lower = closer); n/a "
        f"below {MIN_SAMPLES} samples on a side. With few samples the value is biased upwards: "
        "compare only classes of similar sizes."
    )
    table = _table(("class", "real", "synthetic", "Fréchet distance"), rows, FRECHET_DIGITS)
    return f"{title}\n\n{note}\n\n{table}"


def _timings_section(timings: Mapping[str, float]) -> str:
    if not timings:
        return "## Timings\n\nNot recorded."
    total = float(sum(timings.values()))
    rows = [(str(k), float(v), _percent(v, total)) for k, v in timings.items()]
    rows.append(("**total**", total, _percent(total, total)))
    return "## Timings\n\n" + _table(("stage", "seconds", "share"), rows, SECONDS_DIGITS)
