"""Dataset card: the ``README.md`` of the Hub-ready folder.

The card has two parts. The YAML front matter is what the Hub and ``datasets.load_dataset`` read:
``configs`` (which parquet files make which split) and ``dataset_info`` (features with the class
names, split sizes). Both are written with the ``datasets`` helpers that ``push_to_hub`` itself uses,
so the folder loads exactly as a dataset pushed by ``datasets`` would. The Markdown body is for
people: what the dataset is, where the real images come from, the class counts before and after,
how the synthetic images were made and filtered, what the provenance columns mean, and the
resolved configuration that produced it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from datasets import Features
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

logger = logging.getLogger(__name__)

CONFIG_NAME = "default"
LICENSE = "other"  # the licence of the source images carries over; the card cannot know it
TAGS = ["synthetic", "image-classification", "class-imbalance"]
TASK_CATEGORIES = ["image-classification"]

# The Hub's size_categories vocabulary: (exclusive upper bound on the number of rows, label).
SIZE_CATEGORIES = (
    (10**3, "n<1K"),
    (10**4, "1K<n<10K"),
    (10**5, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"),
    (10**9, "100M<n<1B"),
    (10**10, "1B<n<10B"),
    (10**11, "10B<n<100B"),
    (10**12, "100B<n<1T"),
)
LARGEST_SIZE_CATEGORY = "n>1T"

# How the synthetic rows were filtered, by FilterConfig.name; also the set of allowed names.
FILTER_TEXT = {
    "classifier": (
        "Each synthetic image was kept only if a classifier trained on the real training images "
        "assigned it to its intended class with at least the configured confidence, and it was not "
        "a near-copy of a real image or of another synthetic image (thresholds in the `filter` "
        "section of the configuration below). The `confidence` column holds that classifier's "
        "probability for the intended class."
    ),
    "none": (
        "**The synthetic images were NOT filtered.** Every sample the generator produced is "
        "included, whether or not it looks like its class, so inspect them before training on "
        "them. The `confidence` column is null unless a classifier scored the images."
    ),
}

PROVENANCE_COLUMNS = (
    ("image", "The image (PNG bytes for synthetic rows; the original bytes for real rows)."),
    ("label", "The class (a `ClassLabel`; the names are in the metadata above)."),
    ("is_synthetic", "`false` for a real image of the source dataset, `true` for a generated one."),
    ("seed", "The seed of the generator noise for this one image (null for real rows): the "
             "same seed, generator and configuration give the same image."),
    ("confidence", "The filter classifier's probability for `label` (null for real rows, and "
                   "for synthetic rows that were not scored)."),
    ("generator", "Which generator made the image (null for real rows)."),
)


@dataclass
class CardInfo:
    """What the card says beyond what the exported splits themselves show.

    Attributes:
        class_names: Class names, indexed by class id.
        counts_before: Real images per class id in the source training split.
        counts_after: Rows per class id in the exported training split (real + synthetic).
        config_yaml: The resolved configuration of the run, as YAML.
        filter_name: How the synthetic images were filtered: a key of :data:`FILTER_TEXT`.
        generator_id: Identifies the generator that made the synthetic images.
        report_path: Link to the run report, relative to the card (e.g. ``report/README.md``),
            or None for no link.
        source: A description of the source dataset (a Hub id, a path, a benchmark name).
    """

    class_names: Sequence[str]
    counts_before: dict[int, int]
    counts_after: dict[int, int]
    config_yaml: str
    filter_name: str
    generator_id: str
    report_path: str | None
    source: str


@dataclass(frozen=True)
class SplitStats:
    """Size of one exported split, for ``dataset_info``.

    Attributes:
        num_examples: Number of rows.
        num_bytes: Size of the rows in Arrow (what ``datasets`` calls the dataset size).
        download_bytes: Total size of the split's parquet files.
    """

    num_examples: int
    num_bytes: int
    download_bytes: int


def size_category(num_rows: int) -> str:
    """The Hub's ``size_categories`` label for a dataset of ``num_rows`` rows."""
    for upper, label in SIZE_CATEGORIES:
        if num_rows < upper:
            return label
    return LARGEST_SIZE_CATEGORY


def front_matter(features: Features, splits: Mapping[str, SplitStats], data_files: Mapping[str, str]) -> str:
    """YAML front matter (without the ``---`` fences) read by the Hub and ``load_dataset``.

    Args:
        features: Features of every split.
        splits: Size of each split, in the order the splits are listed.
        data_files: Glob of each split's parquet files, relative to the card.

    Returns:
        The YAML text.
    """
    info = DatasetInfo(features=features, splits=SplitDict(), download_size=0, dataset_size=0)
    for name, stats in splits.items():
        info.splits.add(SplitInfo(name=name, num_bytes=stats.num_bytes, num_examples=stats.num_examples))
        info.download_size += stats.download_bytes
        info.dataset_size += stats.num_bytes
    total_rows = sum(stats.num_examples for stats in splits.values())
    card_data = DatasetCardData(
        license=LICENSE,
        tags=list(TAGS),
        task_categories=list(TASK_CATEGORIES),
        size_categories=[size_category(total_rows)],
    )
    DatasetInfosDict({CONFIG_NAME: info}).to_dataset_card_data(card_data)
    configs = {"data_files": [{"split": name, "path": data_files[name]} for name in splits]}
    MetadataConfigs({CONFIG_NAME: configs}).to_dataset_card_data(card_data)
    return str(card_data)


def check_card_info(info: CardInfo) -> None:
    """Fail early, before anything is written, on what :func:`render_card` cannot describe.

    Raises:
        ValueError: If ``info.filter_name`` is not a key of :data:`FILTER_TEXT`.
    """
    if info.filter_name not in FILTER_TEXT:
        raise ValueError(
            f"filter.name={info.filter_name!r} has no dataset-card description; "
            f"allowed: {', '.join(sorted(FILTER_TEXT))}"
        )


def render_card(
    info: CardInfo,
    features: Features,
    splits: Mapping[str, SplitStats],
    data_files: Mapping[str, str],
    real_counts: Mapping[int, int],
    synthetic_counts: Mapping[int, int],
) -> str:
    """The whole ``README.md``: YAML front matter, then the Markdown description.

    Args:
        info: What the run knows about itself.
        features: Features of every split.
        splits: Size of each split.
        data_files: Glob of each split's parquet files, relative to the card.
        real_counts: Real rows per class id in the exported training split.
        synthetic_counts: Synthetic rows per class id in the exported training split.

    Returns:
        The card text.

    Raises:
        ValueError: If ``info.filter_name`` is not a key of :data:`FILTER_TEXT`.
    """
    check_card_info(info)
    totals = {c: real_counts.get(c, 0) + synthetic_counts.get(c, 0) for c in range(len(info.class_names))}
    after = {c: info.counts_after.get(c, 0) for c in totals}
    if after != totals:
        logger.warning("card: counts_after %s differ from the exported training split %s; the card "
                       "shows the exported rows", after, totals)
    sections = [
        f"---\n{front_matter(features, splits, data_files)}\n---",
        _overview(info, splits),
        _counts_section(info, real_counts, synthetic_counts),
        _synthetic_section(info),
        _columns_section(),
    ]
    if info.report_path is not None:
        sections.append(f"## Report\n\nPlots and statistics of this run: [report]({info.report_path}).")
    sections.append(_config_section(info.config_yaml))
    return "\n\n".join(sections) + "\n"


def _overview(info: CardInfo, splits: Mapping[str, SplitStats]) -> str:
    split_list = ", ".join(f"`{name}` ({stats.num_examples} rows)" for name, stats in splits.items())
    return (
        "# Class-balanced image-classification dataset\n\n"
        "An image-classification dataset whose under-represented classes were topped up with "
        "synthetic images from a class-conditional latent diffusion model trained on the real "
        "images, made with `augment`. Every row says whether it is real or "
        "synthetic and, for synthetic rows, how it was made (see *Columns*).\n\n"
        f"- **Source**: {info.source}\n"
        f"- **Classes**: {len(info.class_names)}\n"
        f"- **Splits**: {split_list}\n"
        f"- **Generator**: `{info.generator_id}`"
    )


def _counts_section(info: CardInfo, real_counts: Mapping[int, int], synthetic_counts: Mapping[int, int]) -> str:
    lines = [
        "## Class counts (training split)",
        "",
        "*Before* is the number of real images in the source; *real*, *synthetic* and *total* count "
        "the rows of this dataset.",
        "",
        "| id | class | before | real | synthetic | total |",
        "|---:|:---|---:|---:|---:|---:|",
    ]
    sums = [0, 0, 0]
    for class_id, name in enumerate(info.class_names):
        before = info.counts_before.get(class_id, 0)
        real, synthetic = real_counts.get(class_id, 0), synthetic_counts.get(class_id, 0)
        sums = [sums[0] + before, sums[1] + real, sums[2] + synthetic]
        lines.append(f"| {class_id} | {_cell(name)} | {before} | {real} | {synthetic} | {real + synthetic} |")
    lines.append(f"| | **all** | {sums[0]} | {sums[1]} | {sums[2]} | {sums[1] + sums[2]} |")
    return "\n".join(lines)


def _synthetic_section(info: CardInfo) -> str:
    return (
        "## How the synthetic images were made\n\n"
        f"A class-conditional latent diffusion model (`{info.generator_id}`) was trained on the real "
        "training images and sampled once per synthetic image, each from its own seed (the `seed` "
        "column). The model, sampler and guidance settings are in the `generator` section of the "
        "configuration below.\n\n"
        f"Filter: `{info.filter_name}`. {FILTER_TEXT[info.filter_name]}"
    )


def _columns_section() -> str:
    rows = "\n".join(f"| `{name}` | {text} |" for name, text in PROVENANCE_COLUMNS)
    return f"## Columns\n\n| column | meaning |\n|:---|:---|\n{rows}"


def _config_section(config_yaml: str) -> str:
    # A fence longer than any run of backticks inside the YAML, so nothing can close it early.
    longest = max((len(run) for run in re.findall(r"`+", config_yaml)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"## Configuration\n\nThe resolved configuration of the run:\n\n{fence}yaml\n{config_yaml.rstrip()}\n{fence}"


def _cell(text: str) -> str:
    """Escape a value for a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
