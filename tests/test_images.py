"""Image preparation rules, no Ray: geometry, modes, odd inputs, the JPEG fast path."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from reference import assert_matches_reference

from raydsconv.errors import InvalidArgumentError
from raydsconv.images import BadImage, ImageSpec, ResizeAndConvert, plan_geometry, prepare_image
from raydsconv.samples import jpeg_bytes, photo_like, write_odd_cases


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    cases = write_odd_cases(root, "odd")
    return root, cases


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("policy", ["stretch", "crop", "pad"])
@pytest.mark.parametrize("shape", [(32, 32), (24, 40), (40, 24)])
@pytest.mark.parametrize("encode", [png_bytes, jpeg_bytes])
def test_shape_is_height_width_and_pixels_match_reference(policy, shape, encode):
    data = encode(photo_like(np.random.default_rng(3), 90, 60))
    prepared = prepare_image(data, ImageSpec(shape=shape, resize=policy))
    assert prepared.pixels.shape == (*shape, 3)
    assert (prepared.width, prepared.height) == (90, 60)
    assert_matches_reference(prepared.pixels, data, shape, "RGB", policy)


def test_jpeg_fast_path_matches_pillow_at_imagenet_sizes():
    from raydsconv.images import _prepare_jpeg_fast, _prepare_with_pillow

    rng = np.random.default_rng(8)
    for size in ((500, 375), (375, 500), (640, 480)):
        data = jpeg_bytes(photo_like(rng, *size))
        spec = ImageSpec(shape=(224, 224))
        fast = prepare_image(data, spec).pixels.astype(int)
        direct = _prepare_jpeg_fast(data, *size, spec)
        assert direct is not None and np.array_equal(direct.pixels, fast)  # the fast path was taken
        pillow = _prepare_with_pillow(Image.open(io.BytesIO(data)), 1, spec).pixels.astype(int)
        assert np.abs(fast - pillow).max() <= 2 and np.abs(fast - pillow).mean() < 0.02


def test_grayscale_mode_stores_height_width_only():
    data = png_bytes(photo_like(np.random.default_rng(4), 50, 30))
    prepared = prepare_image(data, ImageSpec(shape=(20, 10), mode="L"))
    assert prepared.pixels.shape == (20, 10)
    assert_matches_reference(prepared.pixels, data, (20, 10), "L")


def test_pad_letterboxes_with_pad_value_and_crop_keeps_centre():
    white = Image.new("RGB", (100, 50), (255, 255, 255))
    padded = prepare_image(png_bytes(white), ImageSpec(shape=(100, 100), resize="pad", pad_value=7)).pixels
    assert (padded[:25] == 7).all() and (padded[75:] == 7).all()
    assert (padded[25:75] == 255).all()
    halves = np.zeros((50, 100, 3), dtype=np.uint8)
    halves[:, 25:75] = 200  # the centre square survives a centre crop untouched
    cropped = prepare_image(png_bytes(Image.fromarray(halves)), ImageSpec(shape=(50, 50), resize="crop")).pixels
    assert (cropped == 200).all()


def test_geometry_of_crop_and_pad():
    crop = plan_geometry(96, 64, (32, 32), "crop")
    assert (crop.resize_width, crop.resize_height, crop.offset_x, crop.offset_y) == (48, 32, 8, 0)
    pad = plan_geometry(96, 64, (32, 32), "pad")
    assert (pad.resize_width, pad.resize_height, pad.offset_x, pad.offset_y) == (32, 21, 0, 5)


def test_every_readable_odd_case_converts_like_the_reference(odd):
    root, cases = odd
    for relative in cases.readable:
        data = (root / relative).read_bytes()
        for mode in ("RGB", "L"):
            prepared = prepare_image(data, ImageSpec(shape=(24, 36), mode=mode))
            assert_matches_reference(prepared.pixels, data, (24, 36), mode, what=relative)


def test_every_bad_odd_case_has_a_reason(odd):
    root, cases = odd
    reasons = {}
    for relative in cases.bad:
        with pytest.raises(BadImage) as caught:
            prepare_image((root / relative).read_bytes(), ImageSpec(shape=(8, 8)))
        reasons[relative] = caught.value.reason
    assert reasons["odd/empty.jpg"] == "empty file"
    assert "truncated" in reasons["odd/truncated.jpg"]
    assert reasons["odd/readme.txt"].startswith("not an image")
    assert reasons["odd/random_bytes.png"].startswith("not an image")


def test_exif_orientation_is_applied_before_resizing(odd):
    root, _ = odd
    prepared = prepare_image((root / "odd/exif_rotated.jpg").read_bytes(), ImageSpec(shape=(96, 64)))
    assert (prepared.width, prepared.height) == (64, 96)  # 96x64 file, displayed rotated by 90 degrees


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    prepared = prepare_image(png_bytes(Image.fromarray(values)), ImageSpec(shape=(1, 4), mode="L"))
    assert prepared.pixels.tolist() == [[0, 1, 128, 255]]


def test_transparency_is_composited_over_the_background():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    white = prepare_image(png_bytes(rgba), ImageSpec(shape=(4, 4))).pixels
    assert (white == 255).all()
    black = prepare_image(png_bytes(rgba), ImageSpec(shape=(4, 4), background=(0, 0, 0))).pixels
    assert (black == 0).all()


def test_images_over_max_pixels_are_skipped_with_reason():
    data = jpeg_bytes(Image.new("RGB", (400, 300)))
    with pytest.raises(BadImage, match="too large: 400x300"):
        prepare_image(data, ImageSpec(shape=(8, 8), max_pixels=100_000))


def test_a_large_photo_converts():
    data = jpeg_bytes(photo_like(np.random.default_rng(5), 4000, 3000))
    assert prepare_image(data, ImageSpec(shape=(224, 224))).pixels.shape == (224, 224, 3)


def test_draft_is_opt_in_and_close_to_full_decoding():
    data = jpeg_bytes(photo_like(np.random.default_rng(6), 800, 600))
    exact = prepare_image(data, ImageSpec(shape=(100, 100))).pixels.astype(int)
    draft = prepare_image(data, ImageSpec(shape=(100, 100), draft=True))
    assert (draft.width, draft.height) == (800, 600)
    difference = np.abs(draft.pixels.astype(int) - exact).mean()
    assert 0 < difference < 3  # draft really decoded at reduced scale, and stayed close


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shape": (0, 10)}, "shape"),
        ({"shape": (10,)}, "shape"),
        ({"shape": (10, 10), "mode": "CMYK"}, "mode"),
        ({"shape": (10, 10), "resize": "squash"}, "resize"),
    ],
)
def test_bad_specs_are_refused(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        ImageSpec(**kwargs)


def test_resize_and_convert_transform_takes_height_first():
    image = photo_like(np.random.default_rng(7), 60, 30)
    out = ResizeAndConvert(size=(20, 50), mode="L")(image)
    assert out.size == (50, 20) and out.mode == "L"


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_the_fast_path_decodes_and_resizes_as_torchvision_bit_for_bit(mode):
    """raydsconv.jpeg skips importing torchvision's Python package; its output must not change."""
    import torch
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as torchvision_decode
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    from raydsconv import jpeg

    assert jpeg._image_ops(), "torchvision's image extension was not loaded directly"
    rng = np.random.default_rng(11)
    for width, height, new_width, new_height in [(500, 375, 224, 224), (375, 500, 160, 96), (64, 48, 200, 150),
                                                 (33, 47, 33, 20), (1024, 768, 7, 9)]:
        data = jpeg_bytes(photo_like(rng, width, height), 85)
        ours = jpeg.decode_jpeg(data, mode)
        theirs = torchvision_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                    mode=ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY)
        assert torch.equal(ours, theirs)
        resized = F.resize(theirs, [new_height, new_width], interpolation=InterpolationMode.BICUBIC, antialias=True)
        assert torch.equal(jpeg.resize_bicubic(ours, new_height, new_width), resized), (width, height, new_width)
