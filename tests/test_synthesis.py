"""Where SDEdit variations start (``generator.sampler.variation_source``)."""

from pathlib import Path

import pytest
import torch

from augment.config import FilterConfig, SamplerConfig
from augment.distributed import ProcessInfo
from augment.sampling import WorkItem
from augment.synthesis import Synthesizer

LABELS = torch.tensor([0, 0, 0, 1, 1, 2])


def _synthesizer(source: str, tmp_path: Path) -> Synthesizer:
    # Real image i is filled with the value i, so a picked init image names its row.
    images = torch.arange(len(LABELS), dtype=torch.float32)[:, None, None, None].expand(-1, 1, 2, 2)
    return Synthesizer(None, SamplerConfig(mode="variation", variation_source=source), ProcessInfo(0, 1, 0),
                       tmp_path, 0, images, LABELS, None, FilterConfig(), "key")


def _start_rows(synth: Synthesizer, class_id: int) -> set[int]:
    batch = [WorkItem(class_id, i, seed, True) for i, seed in enumerate(range(1000, 1060))]
    return {int(v) for v in synth._init_images(batch)[:, 0, 0, 0]}


@pytest.mark.parametrize(
    "source, class_id, rows",
    [
        ("class", 1, {3, 4}),  # only its own class
        ("other", 1, {0, 1, 2, 5}),  # every real image of the other classes, never its own
        ("other", 2, {0, 1, 2, 3, 4}),
        ("any", 2, {0, 1, 2, 3, 4, 5}),
    ],
)
def test_variation_starts_from_the_configured_pool(source, class_id, rows, tmp_path):
    assert _start_rows(_synthesizer(source, tmp_path), class_id) == rows


def test_the_start_image_is_a_function_of_the_item_seed(tmp_path):
    synth = _synthesizer("other", tmp_path)
    batch = [WorkItem(1, 0, 7, True), WorkItem(1, 1, 8, True)]
    again = [WorkItem(1, 5, 8, True), WorkItem(1, 9, 7, True)]  # same seeds, other order and indices
    assert torch.equal(synth._init_images(batch), synth._init_images(again).flip(0))
