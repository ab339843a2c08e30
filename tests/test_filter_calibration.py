"""Temperature scaling and ECE on synthetic logits with known answers."""

import pytest
import torch

from augment.filter.calibration import MAX_TEMPERATURE, expected_calibration_error, fit_temperature


def labels_from(logits, temperature, seed=0):
    """Labels drawn from softmax(logits / temperature): that temperature is the calibrated one."""
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.softmax(logits / temperature, dim=1), 1, generator=g).squeeze(1)


@pytest.mark.parametrize("t_true", [0.5, 2.0, 4.0])
def test_fit_temperature_recovers_the_true_one(t_true):
    g = torch.Generator().manual_seed(1)
    logits = 3.0 * torch.randn(20000, 5, generator=g)
    t = fit_temperature(logits, labels_from(logits, t_true))
    assert abs(t - t_true) / t_true < 0.1


def test_fit_temperature_clamped_and_empty():
    logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0]])
    # Both wrong and very confident: NLL falls as T grows, so T stops at the upper bound.
    assert fit_temperature(logits, torch.tensor([1, 0])) == MAX_TEMPERATURE
    assert fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 1.0


def test_fit_temperature_shape_error():
    with pytest.raises(ValueError) as err:
        fit_temperature(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
    assert str(err.value) == "logits must be (N, K) and labels (N,), got logits (4, 3) and labels (5,)"


def test_ece_of_a_calibrated_toy_is_near_zero():
    g = torch.Generator().manual_seed(2)
    logits = 2.0 * torch.randn(50000, 4, generator=g)
    probs = torch.softmax(logits, dim=1)
    labels = labels_from(logits, 1.0)
    assert expected_calibration_error(probs, labels) < 0.01
    # The same predictions made over-confident are clearly miscalibrated.
    assert expected_calibration_error(torch.softmax(3 * logits, dim=1), labels) > 0.1


def test_ece_exact_value():
    # Bin (0.8, 0.867]: confidences 0.85 and 0.85, one right -> |0.5 - 0.85| * 2/4;
    # bin (0.933, 1]: 1.0 and 1.0, both right -> 0.
    probs = torch.tensor([[0.85, 0.15], [0.15, 0.85], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.35 * 2 / 4)


def test_ece_empty_and_bins_error():
    assert torch.isnan(torch.tensor(expected_calibration_error(torch.zeros(0, 2), torch.zeros(0))))
    with pytest.raises(ValueError) as err:
        expected_calibration_error(torch.zeros(1, 2), torch.zeros(1), n_bins=0)
    assert str(err.value) == "n_bins must be >= 1, got 0"
