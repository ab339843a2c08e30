"""Image conversions: decoding into generator tensors, resize policies, and back to PIL/PNG."""

import io

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from augment.images import (
    RESIZE_POLICIES,
    dataset_to_tensors,
    encode_png,
    generator_mode,
    open_image,
    tensor_to_pil,
    to_tensor,
)


def _image(array) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.asarray(array, dtype=np.uint8))


def _png(array) -> bytes:
    return encode_png(_image(array))


def test_to_tensor_maps_uint8_to_minus_one_one_exactly():
    x = to_tensor([_image([[0, 51], [255, 102]])], "L", 2, "forbid")
    assert x.shape == (1, 1, 2, 2)
    assert x.dtype == torch.float32
    expected = torch.tensor([[0, 51], [255, 102]], dtype=torch.float32) / 127.5 - 1
    assert torch.equal(x[0, 0], expected)
    assert x.min().item() == -1.0 and x.max().item() == 1.0


def test_to_tensor_accepts_pil_bytes_dicts_and_paths(tmp_path):
    array = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    path = tmp_path / "a.png"
    path.write_bytes(_png(array))
    values = [_image(array), _png(array), {"bytes": _png(array), "path": None}, {"bytes": None, "path": str(path)},
              str(path)]
    x = to_tensor(values, "L", 4, "forbid")
    assert x.shape == (5, 1, 4, 4)
    for i in range(1, 5):
        assert torch.equal(x[i], x[0])


def test_to_tensor_converts_modes():
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red
    as_rgb = to_tensor([_image(rgb)], "RGB", 2, "forbid")
    assert as_rgb.shape == (1, 3, 2, 2)
    assert as_rgb[0, :, 0, 0].tolist() == [1.0, -1.0, -1.0]
    as_grey = to_tensor([_image(rgb)], "L", 2, "forbid")
    expected = _image(rgb).convert("L").getpixel((0, 0)) / 127.5 - 1  # PIL's ITU-R 601-2 luma
    assert as_grey.shape == (1, 1, 2, 2)
    assert as_grey[0, 0, 0, 0].item() == pytest.approx(expected)
    grey = to_tensor([_image([[0, 255], [255, 0]])], "RGB", 2, "forbid")
    assert torch.equal(grey[0, 0], grey[0, 1]) and torch.equal(grey[0, 1], grey[0, 2])


def test_to_tensor_of_nothing_is_empty():
    assert to_tensor([], "RGB", 8, "resize").shape == (0, 3, 8, 8)


def test_resize_policy_resize_squashes_to_r():
    x = to_tensor([_image(np.full((6, 10), 200))], "L", 4, "resize")
    assert x.shape == (1, 1, 4, 4)
    assert torch.allclose(x, torch.full_like(x, 200 / 127.5 - 1))


def test_resize_policy_center_crop_keeps_the_middle():
    # 4 wide x 2 high: the short side is already R=2, so the central columns 1 and 2 remain.
    array = np.array([[10, 20, 30, 40], [50, 60, 70, 80]])
    x = to_tensor([_image(array)], "L", 2, "center_crop")
    expected = torch.tensor([[20, 30], [60, 70]], dtype=torch.float32) / 127.5 - 1
    assert torch.equal(x[0, 0], expected)


def test_resize_policy_center_crop_scales_the_short_side():
    # 4 wide x 24 high in three bands -> 2 x 12 -> the central 2 x 2 lies in the middle band.
    tall = np.zeros((24, 4), dtype=np.uint8)
    tall[8:16] = 200
    x = to_tensor([_image(tall)], "L", 2, "center_crop")
    assert x.shape == (1, 1, 2, 2)
    assert torch.equal(x, torch.full_like(x, 200 / 127.5 - 1))


def test_resize_policy_forbid_names_the_row_and_size():
    images = [_image(np.zeros((4, 4))), _image(np.zeros((3, 5)))]
    with pytest.raises(ValueError) as err:
        to_tensor(images, "L", 4, "forbid", start_index=10)
    assert str(err.value) == (
        "resize policy 'forbid': row 11 is 5x3, not 4x4; forbid allows only 4x4 images "
        "(other policies: center_crop, pad, resize)"
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "RGBA"}, "mode='RGBA' is not supported; allowed: L, RGB"),
        ({"resize_policy": "stretch"}, "resize_policy='stretch' is not supported; allowed: center_crop, forbid, pad, resize"),
    ],
)
def test_to_tensor_rejects_unknown_options(kwargs, message):
    args = {"mode": "L", "resolution": 2, "resize_policy": "resize", **kwargs}
    with pytest.raises(ValueError) as err:
        to_tensor([_image(np.zeros((2, 2)))], **args)
    assert str(err.value) == message


def test_resize_policies_table_is_the_documented_set():
    assert sorted(RESIZE_POLICIES) == ["center_crop", "forbid", "pad", "resize"]


def test_resize_policy_pad_centres_the_pixels_untouched_and_export_crops_them_back():
    digit = np.random.default_rng(0).integers(1, 256, size=(5, 3), dtype=np.uint8)  # 3 wide, 5 high
    x = to_tensor([_image(digit)], "L", 8, "pad")
    canvas = ((x[0, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
    # left margin (8 - 3) // 2 = 2, top margin (8 - 5) // 2 = 1; everything else black
    assert np.array_equal(canvas[1:6, 2:5], digit)
    canvas[1:6, 2:5] = 0
    assert not canvas.any()
    (back,) = tensor_to_pil((x + 1) / 2, "L", (3, 5), "pad")
    assert np.array_equal(np.asarray(back), digit)


def test_resize_policy_pad_refuses_an_image_larger_than_the_canvas():
    with pytest.raises(ValueError) as err:
        to_tensor([_image(np.zeros((4, 4))), _image(np.zeros((3, 9)))], "L", 8, "pad", start_index=3)
    assert str(err.value) == (
        "resize policy 'pad': row 4 is 9x3, larger than 8x8; pad only enlarges (allowed: images up to "
        "8x8, or the policies resize, center_crop)"
    )


def test_open_image_rejects_unknown_types_and_empty_rows():
    with pytest.raises(TypeError) as err:
        open_image(3)
    assert str(err.value) == (
        "image of type int is not supported; allowed: PIL.Image.Image, bytes, dict with 'bytes'/'path', path"
    )
    with pytest.raises(OSError) as err:
        open_image({"bytes": None, "path": None})
    assert str(err.value) == "the row holds neither image bytes nor a path"


@pytest.mark.parametrize(
    "pil_mode, expected",
    [("1", "L"), ("L", "L"), ("LA", "L"), ("I;16", "L"), ("F", "L"), ("P", "RGB"), ("RGB", "RGB"),
     ("RGBA", "RGB"), ("CMYK", "RGB")],
)
def test_generator_mode(pil_mode, expected):
    assert generator_mode(pil_mode) == expected


@pytest.mark.parametrize("decode", [True, False])
def test_dataset_to_tensors_reads_storage_whatever_the_batch_size(decode):
    arrays = [np.full((3, 3), 30 * i, dtype=np.uint8) for i in range(5)]
    ds = datasets.Dataset.from_dict(
        {"image": [_png(a) for a in arrays], "label": [0, 1, 1, 0, 1], "extra": list("abcde")},
        features=datasets.Features(
            {"image": datasets.Image(decode=decode), "label": datasets.ClassLabel(names=["a", "b"]),
             "extra": datasets.Value("string")}
        ),
    )
    images, labels = dataset_to_tensors(ds, "L", 3, "forbid", batch_size=2)
    assert images.shape == (5, 1, 3, 3)
    assert labels.dtype == torch.long and labels.tolist() == [0, 1, 1, 0, 1]
    assert [round(v, 6) for v in images[:, 0, 0, 0].tolist()] == [round(30 * i / 127.5 - 1, 6) for i in range(5)]
    one_by_one, _ = dataset_to_tensors(ds, "L", 3, "forbid", batch_size=1)
    assert torch.equal(one_by_one, images)


def test_dataset_to_tensors_forbid_reports_the_dataset_row():
    arrays = [np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((2, 3))]
    ds = datasets.Dataset.from_dict(
        {"image": [_png(a) for a in arrays], "label": [0, 0, 1, 1]},
        features=datasets.Features({"image": datasets.Image(decode=False), "label": datasets.Value("int64")}),
    )
    with pytest.raises(ValueError) as err:
        dataset_to_tensors(ds, "L", 3, "forbid", batch_size=2)
    assert str(err.value).startswith("resize policy 'forbid': row 3 is 3x2, not 3x3;")


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
def test_tensor_to_pil_back_to_source_size_and_mode(mode, channels):
    x = torch.zeros(2, channels, 4, 4)
    x[1] = 1.0
    images = tensor_to_pil(x, mode, (6, 5))
    assert [(im.mode, im.size) for im in images] == [(mode, (6, 5))] * 2
    assert np.asarray(images[0]).max() == 0 and np.asarray(images[1]).min() == 255


def test_tensor_to_pil_rounds_and_clips_without_resizing_at_r():
    x = torch.tensor([[[[-0.5, 0.5], [1.5, 0.2]]]])  # (1, 1, 2, 2)
    (image,) = tensor_to_pil(x, "L", (2, 2))
    assert np.asarray(image).tolist() == [[0, 128], [255, 51]]


def test_tensor_to_pil_rejects_a_channel_mismatch():
    with pytest.raises(ValueError) as err:
        tensor_to_pil(torch.zeros(1, 3, 4, 4), "L", (4, 4))
    assert str(err.value) == "x has shape (1, 3, 4, 4); mode 'L' needs (N, 1, R, R)"


@pytest.mark.parametrize("mode, shape", [("L", (3, 4)), ("RGB", (3, 4, 3))])
def test_encode_png_is_lossless(mode, shape):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    data = encode_png(_image(array))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = PIL.Image.open(io.BytesIO(data))
    assert decoded.mode == mode and np.array_equal(np.asarray(decoded), array)
