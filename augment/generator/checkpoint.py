"""Run state on disk: fingerprints, resumable training checkpoints and the latent cache.

Everything a rerun may reuse is keyed by a fingerprint of what produced it, so a changed input
never silently reuses stale work, and an unchanged one never redoes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

FINGERPRINT_CHARS = 16  # hex digits kept in folder names (64 bits: collisions are not a concern)
CHECKPOINT_PREFIX = "step-"
CHECKPOINT_SUFFIX = ".pt"


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of tensors' shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's class and weights."""
    state = module.state_dict()
    h = hashlib.sha256(type(module).__name__.encode())
    for name in sorted(state):
        h.update(name.encode())
        h.update(tensor_digest(state[name]).encode())
    return h.hexdigest()


def fingerprint(*parts: Any) -> str:
    """SHA-256 of JSON-able parts (dataclasses are turned into dicts)."""
    plain = [dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def short(fp: str) -> str:
    return fp[:FINGERPRINT_CHARS]


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(folder: Path, step: int, state: Dict[str, Any]) -> Path:
    """Write ``state`` as ``folder/step-<step>.pt`` atomically and drop older checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{CHECKPOINT_PREFIX}{step:08d}{CHECKPOINT_SUFFIX}"
    _atomic_torch_save({**state, "step": step}, path)
    for old in folder.glob(f"{CHECKPOINT_PREFIX}*{CHECKPOINT_SUFFIX}"):
        if old != path:
            old.unlink()
    return path


def load_latest_checkpoint(folder: Path) -> Optional[Dict[str, Any]]:
    """The newest checkpoint in ``folder`` (with its ``step``), or ``None`` when there is none."""
    paths = sorted(folder.glob(f"{CHECKPOINT_PREFIX}*{CHECKPOINT_SUFFIX}")) if folder.is_dir() else []
    if not paths:
        return None
    logger.info("resuming from %s", paths[-1])
    return torch.load(paths[-1], map_location="cpu", weights_only=False)


def load_cached_latents(path: Path) -> Optional[torch.Tensor]:
    """Latents cached by :func:`save_cached_latents`, or ``None``."""
    if not path.is_file():
        return None
    logger.info("latent cache hit: %s", path)
    return load_file(str(path))["latents"]


def save_cached_latents(path: Path, latents: torch.Tensor) -> None:
    """Write the encoded dataset atomically (safetensors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"latents": latents.detach().cpu().contiguous()}, str(tmp))
    os.replace(tmp, path)
