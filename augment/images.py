"""Image conversions: encoded bytes / PIL images <-> generator tensors.

Real images stay encoded (PNG/JPEG bytes) everywhere in the pipeline; they are decoded here, once
per use, into the generator's input: a float tensor ``(N, C, R, R)`` in ``[-1, 1]`` of one mode
(``L`` or ``RGB``) and one square resolution ``R``. Synthetic images go the other way:
:func:`tensor_to_pil` turns ``[0, 1]`` tensors back into PIL images at the source size and
:func:`encode_png` encodes them losslessly.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

logger = logging.getLogger(__name__)

# Generator modes and their channel counts.
MODE_CHANNELS: dict[str, int] = {"L": 1, "RGB": 3}
# PIL modes that hold one grey channel (with or without alpha); every other mode maps to RGB.
_GREY_PIL_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
UINT8_MAX = 255.0
# What PIL raises for bytes that are not a readable image (a broken PNG chunk is a SyntaxError).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError)
DEFAULT_BATCH_SIZE = 256


def check_choice(field: str, value: Any, table: dict) -> None:
    """Raise a ``ValueError`` unless ``value`` is a key of the dispatch ``table``.

    Args:
        field: Name of the option, as the user wrote it (``dataset.resize``).
        value: The value given.
        table: The table that dispatches on this option; its keys are the allowed values.

    Raises:
        ValueError: Naming the field, the value and the allowed values.
    """
    if value not in table:
        allowed = ", ".join(sorted(table))
        raise ValueError(f"{field}={value!r} is not supported; allowed: {allowed}")


def generator_mode(pil_mode: str) -> str:
    """The generator mode (``L`` or ``RGB``) that an image of PIL mode ``pil_mode`` maps to."""
    return "L" if pil_mode in _GREY_PIL_MODES else "RGB"


def open_image(value: Any) -> PIL.Image.Image:
    """Decode one image, the way ``datasets.Image`` does (EXIF orientation applied).

    Args:
        value: A PIL image, encoded bytes, a ``{"bytes", "path"}`` dict (bytes first) or a path.

    Returns:
        The decoded (fully loaded) PIL image.

    Raises:
        TypeError: For a value of another type.
        OSError: When the bytes or file are not a readable image (``PIL.UnidentifiedImageError``
            is an ``OSError``).
    """
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, dict):
        value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
    if isinstance(value, (bytes, bytearray)):
        image = PIL.Image.open(io.BytesIO(value))
    elif isinstance(value, (str, os.PathLike)):
        image = PIL.Image.open(value)
    elif value is None:
        raise OSError("the row holds neither image bytes nor a path")
    else:
        raise TypeError(
            f"image of type {type(value).__name__} is not supported; "
            "allowed: PIL.Image.Image, bytes, dict with 'bytes'/'path', path"
        )
    image.load()
    if image.getexif().get(PIL.Image.ExifTags.Base.Orientation) is not None:
        image = PIL.ImageOps.exif_transpose(image)
    return image


def _resize(image: PIL.Image.Image, resolution: int, index: int) -> PIL.Image.Image:
    # PIL's bilinear resize widens its kernel when it shrinks, i.e. it antialiases.
    if image.size == (resolution, resolution):
        return image
    return image.resize((resolution, resolution), PIL.Image.Resampling.BILINEAR)


def _center_crop(image: PIL.Image.Image, resolution: int, index: int) -> PIL.Image.Image:
    width, height = image.size
    scale = resolution / min(width, height)
    new_w, new_h = max(resolution, round(width * scale)), max(resolution, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), PIL.Image.Resampling.BILINEAR)
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def pad_box(size: tuple[int, int], resolution: int) -> tuple[int, int, int, int]:
    """Where a ``(width, height)`` image sits on the ``R x R`` canvas of the ``pad`` policy:
    ``(left, top, right, bottom)``, centred (the extra pixel of an odd margin goes right/bottom)."""
    width, height = size
    left, top = (resolution - width) // 2, (resolution - height) // 2
    return left, top, left + width, top + height


def _pad(image: PIL.Image.Image, resolution: int, index: int) -> PIL.Image.Image:
    width, height = image.size
    if width > resolution or height > resolution:
        raise ValueError(
            f"resize policy 'pad': row {index} is {width}x{height}, larger than {resolution}x{resolution}; "
            f"pad only enlarges (allowed: images up to {resolution}x{resolution}, or the policies resize, "
            "center_crop)"
        )
    if image.size == (resolution, resolution):
        return image
    canvas = PIL.Image.new(image.mode, (resolution, resolution))  # black
    canvas.paste(image, pad_box(image.size, resolution)[:2])
    return canvas


def _forbid(image: PIL.Image.Image, resolution: int, index: int) -> PIL.Image.Image:
    if image.size != (resolution, resolution):
        width, height = image.size
        others = ", ".join(sorted(set(RESIZE_POLICIES) - {"forbid"}))
        raise ValueError(
            f"resize policy 'forbid': row {index} is {width}x{height}, not {resolution}x{resolution}; "
            f"forbid allows only {resolution}x{resolution} images (other policies: {others})"
        )
    return image


# How an image of another size reaches the square generator resolution.
RESIZE_POLICIES: dict[str, Callable[[PIL.Image.Image, int, int], PIL.Image.Image]] = {
    "resize": _resize,  # bilinear (antialiased) to R x R; the aspect ratio is not kept
    "center_crop": _center_crop,  # short side to R, then the central R x R
    "pad": _pad,  # centred on a black R x R canvas, pixels untouched; export crops the canvas off
    "forbid": _forbid,  # every image must already be R x R
}


def _to_array(image: PIL.Image.Image, mode: str, resolution: int, policy: str, index: int):
    if image.mode != mode:
        image = image.convert(mode)
    image = RESIZE_POLICIES[policy](image, resolution, index)
    return np.asarray(image, dtype=np.uint8).reshape(resolution, resolution, MODE_CHANNELS[mode])


def to_tensor(
    images: Iterable[Any],
    mode: str,
    resolution: int,
    resize_policy: str,
    start_index: int = 0,
) -> torch.Tensor:
    """Decode images into the generator's input.

    Args:
        images: PIL images, encoded bytes, ``{"bytes", "path"}`` dicts or paths.
        mode: Generator mode, a key of :data:`MODE_CHANNELS`.
        resolution: Square side ``R`` in pixels.
        resize_policy: A key of :data:`RESIZE_POLICIES`.
        start_index: Row index of the first image, used in error messages.

    Returns:
        Float tensor ``(N, C, R, R)`` in ``[-1, 1]``.

    Raises:
        ValueError: For an unknown mode or policy, or (``forbid``) an image of another size.
    """
    check_choice("mode", mode, MODE_CHANNELS)
    check_choice("resize_policy", resize_policy, RESIZE_POLICIES)
    arrays = [
        _to_array(open_image(value), mode, resolution, resize_policy, start_index + offset)
        for offset, value in enumerate(images)
    ]
    if not arrays:
        return torch.empty(0, MODE_CHANNELS[mode], resolution, resolution)
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, C, R, R) uint8
    return batch.float().div(UINT8_MAX / 2).sub(1.0)


def dataset_to_tensors(
    ds,
    mode: str,
    resolution: int,
    resize_policy: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    image_column: str = "image",
    label_column: str = "label",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a whole ``datasets.Dataset`` (image feature decoded or not) into tensors.

    Args:
        ds: The dataset; its image column is read from the Arrow storage, never through PIL twice.
        mode: Generator mode, a key of :data:`MODE_CHANNELS`.
        resolution: Square side ``R`` in pixels.
        resize_policy: A key of :data:`RESIZE_POLICIES`.
        batch_size: Rows decoded per Arrow batch (memory, not results, depends on it).
        image_column: Name of the image column.
        label_column: Name of the integer label column.

    Returns:
        ``(images, labels)``: float ``(N, C, R, R)`` in ``[-1, 1]`` and a ``LongTensor (N,)``.
    """
    check_choice("mode", mode, MODE_CHANNELS)
    images = torch.empty(len(ds), MODE_CHANNELS[mode], resolution, resolution)  # (N, C, R, R)
    labels = torch.empty(len(ds), dtype=torch.long)  # (N,)
    start = 0
    arrow = ds.select_columns([image_column, label_column]).with_format("arrow")
    for batch in arrow.iter(batch_size=batch_size):
        stop = start + batch.num_rows
        images[start:stop] = to_tensor(
            batch.column(image_column).to_pylist(), mode, resolution, resize_policy, start
        )
        labels[start:stop] = torch.from_numpy(batch.column(label_column).to_numpy().astype(np.int64))
        start = stop
    return images, labels


def tensor_to_pil(
    x: torch.Tensor, mode: str, size: tuple[int, int], resize_policy: str = "resize"
) -> list[PIL.Image.Image]:
    """Turn generator output back into images at the source size.

    Args:
        x: Tensor ``(N, C, R, R)`` in ``[0, 1]`` (values outside are clipped).
        mode: ``L`` (``C == 1``) or ``RGB`` (``C == 3``).
        size: ``(width, height)`` of the output. When it differs from ``R x R`` the image is
            cropped back out of its canvas (``resize_policy="pad"``) or resized (bilinear).
        resize_policy: How the real images reached ``R x R`` (a key of :data:`RESIZE_POLICIES`).

    Returns:
        ``N`` PIL images of mode ``mode`` and size ``size``.

    Raises:
        ValueError: For an unknown mode or a channel count that does not match it.
    """
    check_choice("mode", mode, MODE_CHANNELS)
    check_choice("resize_policy", resize_policy, RESIZE_POLICIES)
    if x.ndim != 4 or x.shape[1] != MODE_CHANNELS[mode]:
        raise ValueError(
            f"x has shape {tuple(x.shape)}; mode {mode!r} needs (N, {MODE_CHANNELS[mode]}, R, R)"
        )
    pixels = (x.detach().float().clamp(0.0, 1.0) * UINT8_MAX).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()  # (N, R, R, C)
    out = []
    for array in pixels:
        image = PIL.Image.fromarray(array[..., 0] if mode == "L" else array)  # uint8: L or RGB
        if image.size != tuple(size):
            if resize_policy == "pad" and size[0] <= image.width and size[1] <= image.height:
                image = image.crop(pad_box(tuple(size), image.width))
            else:
                image = image.resize(tuple(size), PIL.Image.Resampling.BILINEAR)
        out.append(image)
    return out


def encode_png(img: PIL.Image.Image) -> bytes:
    """Encode an image as (lossless) PNG bytes."""
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
