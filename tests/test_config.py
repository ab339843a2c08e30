"""Compose every option of every config group; typos and wrong types fail before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import OmegaConfBaseException

from augment.api import compose_config
from augment.cli import config_dir
from augment.config import Config

CONF = Path(config_dir())
GROUPS = ["dataset", "targets", "generator", "filter", "output", "experiment"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if group == "dataset" and option == "hf":
        overrides.append("dataset.path=some/folder")
    cfg, cfg_yaml = compose_config(overrides)
    assert isinstance(cfg, Config)
    assert "seed: 0" in cfg_yaml


def test_defaults():
    cfg, _ = compose_config()
    assert cfg.dataset.kind == "mnist_lt"
    assert cfg.targets.sampling_strategy == "not majority"
    assert cfg.filter.name == "classifier" and cfg.filter.arch == "small_cnn"
    assert cfg.seed == 0 and cfg.dry_run is False
    assert cfg.output.overwrite is False


def test_seed_zero_and_overrides_are_typed():
    cfg, _ = compose_config(["seed=0", "generator.sampler.num_inference_steps=7", "targets.ratio=0.5"])
    assert cfg.seed == 0
    assert cfg.generator.sampler.num_inference_steps == 7
    assert cfg.targets.ratio == 0.5


def test_dict_targets_from_the_command_line():
    cfg, _ = compose_config(["targets.sampling_strategy={3:250,nine:100}"])
    assert cfg.targets.sampling_strategy == {3: 250, "nine": 100}  # class id 3, class name "nine"


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("generator.sampler.num_inference_step=5", "num_inference_step"),  # typo in a key
        ("seed=abc", "seed"),  # wrong type
        ("dataset=nope", "dataset"),  # unknown option
        ("output.overwrite=maybe", "overwrite"),
    ],
)
def test_bad_overrides_fail_at_compose_time(override, fragment):
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)) as err:
        compose_config([override])
    assert fragment in str(err.value) or fragment in str(err.value.__cause__)
