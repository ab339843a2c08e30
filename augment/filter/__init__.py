"""Classifier filter: keep only synthetic images a calibrated classifier recognises as their class.

* :mod:`.classifier` -- architectures, :class:`FilterClassifier`, loading a user's classifier;
* :mod:`.training` -- training and calibrating one on the real data (cached);
* :mod:`.calibration` -- temperature scaling and the expected calibration error;
* :mod:`.keep` -- the keep rules (pure numpy/pandas) and next-round generation counts;
* :mod:`.validation` -- checks of a filter config before any work starts.

Names are imported lazily, so ``augment.filter.keep`` loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> submodule that defines it.
_EXPORTS = {
    "expected_calibration_error": "calibration",
    "fit_temperature": "calibration",
    "ARCHITECTURES": "classifier",
    "FilterClassifier": "classifier",
    "build_network": "classifier",
    "load_user_classifier": "classifier",
    "KeepResult": "keep",
    "near_duplicates": "keep",
    "next_round_counts": "keep",
    "resolve_thresholds": "keep",
    "select": "keep",
    "train_classifier": "training",
    "validate_filter_config": "validation",
    "FILTER_NAMES": "validation",
    "ON_SHORTFALL": "validation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
