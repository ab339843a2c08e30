"""validate_filter_config: every bad field refused with its name, value and allowed set."""

import dataclasses

import pytest

from augment.config import FilterConfig
from augment.filter import validate_filter_config


@pytest.mark.parametrize(
    "changes",
    [{}, {"name": "none", "arch": "anything"}, {"arch": "small_cnn", "min_confidence": 0.0, "val_fraction": 0.0}],
)
def test_valid_configs_pass(changes):
    validate_filter_config(dataclasses.replace(FilterConfig(), **changes))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"name": "clip"}, "filter.name='clip' is not one of ['classifier', 'none']"),
        ({"on_shortfall": "ignore"}, "filter.on_shortfall='ignore' is not one of ['fail', 'warn']"),
        ({"precision": "int8"}, "filter.precision='int8' is not one of ['auto', 'bf16', 'fp16', 'fp32']"),
        ({"arch": "resnet50"}, "filter.arch='resnet50' is not one of ['resnet18', 'small_cnn']"),
        ({"path": "/no/such/model.safetensors"}, "filter.path='/no/such/model.safetensors' does not exist"),
        ({"width": 0}, "filter.width=0 must be >= 1"),
        ({"steps": 0}, "filter.steps=0 must be >= 1"),
        ({"batch_size": 0}, "filter.batch_size=0 must be >= 1"),
        ({"lr": 0.0}, "filter.lr=0.0 must be > 0"),
        ({"val_fraction": 1.0}, "filter.val_fraction=1.0 must be in [0, 1)"),
        ({"min_confidence": 1.5}, "filter.min_confidence=1.5 must be in [0, 1]"),
        ({"max_real_similarity": 2.0}, "filter.max_real_similarity=2.0 must be in [-1, 1]"),
        ({"max_synthetic_similarity": -2.0}, "filter.max_synthetic_similarity=-2.0 must be in [-1, 1]"),
        ({"max_rounds": 0}, "filter.max_rounds=0 must be >= 1"),
        ({"overgenerate": 0.9}, "filter.overgenerate=0.9 must be >= 1"),
        ({"min_confidence_per_class": {"cat": -0.1}}, "filter.min_confidence_per_class['cat']=-0.1 must be in [0, 1]"),
    ],
)
def test_invalid_configs_are_refused(changes, message):
    with pytest.raises(ValueError) as err:
        validate_filter_config(dataclasses.replace(FilterConfig(), **changes))
    assert str(err.value) == message


def test_user_state_dict_may_name_a_torchvision_arch(tmp_path):
    weights = tmp_path / "user.safetensors"
    weights.write_bytes(b"")
    validate_filter_config(FilterConfig(path=str(weights), arch="resnet50"))
    with pytest.raises(ValueError) as err:
        validate_filter_config(FilterConfig(path=str(weights), arch="lenet"))
    assert str(err.value) == (
        "filter.arch='lenet' is not one of ['resnet18', 'small_cnn'] nor a name from "
        "torchvision.models.list_models(module=torchvision.models)"
    )
