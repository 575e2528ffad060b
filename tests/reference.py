"""An independent reference of what a stored image must be: Pillow decode -> EXIF transpose ->
alpha over white -> convert -> bicubic resize -> crop or letterbox, written with Pillow's own
crop/paste rather than the library's code."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

# The JPEG fast path decodes exactly like Pillow, but torchvision's uint8 bicubic uses 16-bit filter
# weights where Pillow uses 22-bit ones. At ImageNet sizes (500x375 -> 224) that is a mean |diff| of
# ~0.003 and a max of 1 (test_images checks that); on tiny thumbnails with sharp synthetic edges we
# measured up to mean 0.24 and max 5. These bounds hold for the small test images.
JPEG_FAST_PATH_MAX_DIFF = 8
JPEG_FAST_PATH_MEAN_DIFF = 0.5


def reference_pixels(data: bytes, shape: tuple[int, int], mode: str = "RGB", policy: str = "stretch",
                     pad_value: int = 0) -> np.ndarray:
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if image.mode.startswith("I;16"):
        values = np.asarray(image).astype(np.uint32)
        image = Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB").convert(mode) if image.mode != mode else image
    height, width = shape
    source_w, source_h = image.size
    if policy == "stretch":
        return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))
    if policy == "crop":
        scale = max(width / source_w, height / source_h)
        rw, rh = max(width, round(source_w * scale)), max(height, round(source_h * scale))
        left, top = (rw - width) // 2, (rh - height) // 2
        resized = image.resize((rw, rh), Image.Resampling.BICUBIC)
        return np.asarray(resized.crop((left, top, left + width, top + height)))
    scale = min(width / source_w, height / source_h)
    rw, rh = min(width, max(1, round(source_w * scale))), min(height, max(1, round(source_h * scale)))
    canvas = Image.new(mode, (width, height), pad_value if mode == "L" else (pad_value,) * 3)
    canvas.paste(image.resize((rw, rh), Image.Resampling.BICUBIC), ((width - rw) // 2, (height - rh) // 2))
    return np.asarray(canvas)


def takes_jpeg_fast_path(data: bytes, mode: str) -> bool:
    image = Image.open(io.BytesIO(data))
    return image.format == "JPEG" and image.mode == mode and image.getexif().get(0x0112, 1) == 1


def assert_matches_reference(actual: np.ndarray, data: bytes, shape, mode="RGB", policy="stretch", what=""):
    expected = reference_pixels(data, shape, mode, policy)
    assert actual.shape == expected.shape, what
    diff = np.abs(actual.astype(int) - expected.astype(int))
    if takes_jpeg_fast_path(data, mode):
        assert diff.max() <= JPEG_FAST_PATH_MAX_DIFF, f"{what}: max diff {diff.max()}"
        assert diff.mean() <= JPEG_FAST_PATH_MEAN_DIFF, f"{what}: mean diff {diff.mean()}"
    else:
        assert diff.max() == 0, f"{what}: pixels differ from the reference (max diff {diff.max()})"


def reference_placement(source_w: int, source_h: int, shape: tuple[int, int], policy: str) -> tuple[int, int, int, int]:
    """(resized width, resized height, x, y): stored pixel (row, col) shows resized pixel
    (row - y, col - x); ``crop`` has negative offsets, ``pad`` positive ones."""
    height, width = shape
    if policy == "stretch":
        return width, height, 0, 0
    if policy == "crop":
        scale = max(width / source_w, height / source_h)
        rw, rh = max(width, round(source_w * scale)), max(height, round(source_h * scale))
        return rw, rh, -((rw - width) // 2), -((rh - height) // 2)
    scale = min(width / source_w, height / source_h)
    rw, rh = min(width, max(1, round(source_w * scale))), min(height, max(1, round(source_h * scale)))
    return rw, rh, (width - rw) // 2, (height - rh) // 2


def reference_mask(mask: np.ndarray, shape: tuple[int, int], policy: str, pad_value: int = 255) -> np.ndarray:
    """What a stored mask must be: Pillow's nearest resize to the image's geometry, then Pillow's own
    crop or paste."""
    image = Image.fromarray(mask)
    height, width = shape
    rw, rh, x, y = reference_placement(image.width, image.height, shape, policy)
    resized = image.resize((rw, rh), Image.Resampling.NEAREST)
    if policy == "crop":
        return np.asarray(resized.crop((-x, -y, -x + width, -y + height)))
    canvas = Image.new(image.mode, (width, height), pad_value if image.mode != "RGB" else (pad_value,) * 3)
    canvas.paste(resized, (x, y))
    return np.asarray(canvas)
