"""Inference precision: the names configs use (auto | fp32 | bf16 | fp16) and the autocast they mean.

Sampling and filter scoring run under autocast in the resolved dtype; "auto" picks bf16 where the
device runs it natively (a bf16 CUDA GPU, a CPU with AVX-512-BF16 or AMX) and fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Optional

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively (fast, not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(name: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of a precision name on ``device``; ``None`` means fp32 (no autocast).

    Raises:
        ValueError: For a name outside :data:`PRECISIONS`.
    """
    if name not in PRECISIONS:
        raise ValueError(f"precision={name!r} is not supported; allowed: {', '.join(PRECISIONS)}")
    if name == "auto":
        name = "bf16" if native_bf16(device) else "fp32"
    return DTYPES[name]


def autocast(dtype: Optional[torch.dtype], device: torch.device) -> ContextManager:
    """Autocast to ``dtype`` on ``device``'s type, or nothing for ``None`` (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
