"""Dense labels (segmentation masks): how a mask is read, checked, resized and encoded. No Ray, no formats.

The rules:

* A mask is a per-pixel class map of exactly its image's size (after the image's EXIF orientation).
* ``mask_mode`` says what a stored mask is: ``"L"`` (default) one uint8 class per pixel (palette
  PNGs, as VOC's, give their palette indices; 1-bit masks give 0/1); ``"I;16"`` one uint16 class
  per pixel, for more than 256 classes; ``"RGB"`` colour-coded masks, (H, W, 3) uint8.
* Values are never interpolated: masks are resized with nearest neighbour (Pillow's, as
  torchvision's transforms resize PIL masks) with exactly their image's geometry, so a ``crop``
  cuts the same pixels and a ``pad`` letterboxes at the same offsets, filling with
  ``mask_pad_value`` (default 255, the usual "ignore" index).
* A mask whose values do not fit ``mask_mode`` is refused (the sample is skipped with the
  reason), never clipped.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from raydsconv.errors import InvalidArgumentError
from raydsconv.images import (
    DEFAULT_MAX_PIXELS,
    BadImage,
    ImageSpec,
    extension_for,
    open_image,
    oriented,
    place,
    plan_geometry,
)

# mask_mode -> (stored dtype, channels)
MASK_MODES = {"L": (np.uint8, 1), "I;16": (np.uint16, 1), "RGB": (np.uint8, 3)}
_SINGLE_CHANNEL_PIL_MODES = {"L", "P", "1", "I", "I;16", "I;16L", "I;16B", "I;16N"}


@dataclass(frozen=True)
class MaskSpec:
    mode: str = "L"
    pad_value: int = 255  # fills the letterbox of resize="pad"

    def __post_init__(self) -> None:
        if self.mode not in MASK_MODES:
            raise InvalidArgumentError(f"unknown mask_mode {self.mode!r}; choose one of {', '.join(MASK_MODES)}")
        top = np.iinfo(self.dtype).max
        if isinstance(self.pad_value, bool) or not isinstance(self.pad_value, (int, np.integer)) \
                or not 0 <= self.pad_value <= top:
            raise InvalidArgumentError(f"mask_pad_value must be an integer in 0..{top} for mask_mode "
                                       f"{self.mode!r}, got {self.pad_value!r}")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(MASK_MODES[self.mode][0])

    @property
    def channels(self) -> int:
        return MASK_MODES[self.mode][1]

    def array_shape(self, shape: tuple[int, int]) -> tuple[int, ...]:
        """Shape of one stored mask for images of ``shape`` (height, width)."""
        return tuple(shape) if self.channels == 1 else (*shape, self.channels)


def mask_array(mask: Any, spec: MaskSpec, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A mask given as file bytes, a PIL image, an array or a tensor, as an (H, W[, 3]) array of
    ``spec.dtype``; raises BadImage saying why it is not a usable mask."""
    if isinstance(mask, (bytes, bytearray, memoryview)):
        mask = _decoded_mask(bytes(mask), max_pixels)
    if isinstance(mask, Image.Image):
        array = _pil_mask_values(mask, spec)
    elif hasattr(mask, "detach"):  # a torch tensor: (H, W), (1, H, W) or (3, H, W)
        array = mask.detach().cpu().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3):
            array = array.transpose(1, 2, 0)
    elif mask is None:
        raise BadImage("no mask")
    else:
        array = np.asarray(mask)
    given = getattr(mask, "shape", array.shape)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    wanted = "(H, W)" if spec.channels == 1 else "(H, W, 3)"
    if array.ndim != (2 if spec.channels == 1 else 3) or (spec.channels == 3 and array.shape[2] != 3):
        raise BadImage(f"mask of shape {tuple(given)} is not {wanted} as mask_mode {spec.mode!r} needs")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise BadImage(f"mask of dtype {array.dtype} holds no class indices (give integers)")
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > np.iinfo(spec.dtype).max:
            hint = " (use mask_mode 'I;16')" if spec.mode == "L" and low >= 0 and high <= 65535 else ""
            raise BadImage(f"mask values {low}..{high} do not fit mask_mode {spec.mode!r}{hint}")
    return np.ascontiguousarray(array.astype(spec.dtype, copy=False))


def _decoded_mask(data: bytes, max_pixels: int | None) -> Image.Image:
    with warnings.catch_warnings():
        try:
            image = open_image(data, max_pixels)
        except BadImage as bad:
            raise BadImage(f"mask file: {bad.reason}") from None
        try:
            image.load()
        except Exception as error:
            raise BadImage(f"cannot decode mask ({image.format or 'image'}): {error}") from None
    return oriented(image)


def _pil_mask_values(image: Image.Image, spec: MaskSpec) -> np.ndarray:
    if spec.channels == 1:
        if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
            raise BadImage(f"mask is a {image.mode} colour image, not a class map; colour-coded masks "
                           "need mask_mode 'RGB'")
        if image.mode not in _SINGLE_CHANNEL_PIL_MODES:
            raise BadImage(f"mask is a {image.mode} image; class maps are L, P, 1 or 16-bit images")
        return np.asarray(image)  # palette images give their indices, 1-bit ones bools
    if image.mode == "P":
        image = image.convert("RGB")  # a colour-coded mask stored with a palette
    if image.mode != "RGB":
        raise BadImage(f"mask is a {image.mode} image; mask_mode 'RGB' needs RGB colour-coded masks")
    return np.asarray(image)


def check_mask_size(mask: np.ndarray, width: int, height: int) -> None:
    if mask.shape[:2] != (height, width):
        raise BadImage(f"mask is {mask.shape[1]}x{mask.shape[0]} pixels but its image is {width}x{height}")


def prepare_mask(mask: np.ndarray, image_spec: ImageSpec, spec: MaskSpec) -> np.ndarray:
    """Resize ``mask`` (nearest) and crop or letterbox it exactly as its image: its size is the
    image's size after EXIF orientation, so both get the same geometry."""
    height, width = mask.shape[:2]
    geometry = plan_geometry(width, height, image_spec.shape, image_spec.resize)
    resized = mask
    if (geometry.resize_width, geometry.resize_height) != (width, height):
        resized = np.asarray(mask_image(mask).resize((geometry.resize_width, geometry.resize_height),
                                                  Image.Resampling.NEAREST)).astype(spec.dtype, copy=False)
    return place(resized, geometry, image_spec, pad_value=spec.pad_value)


def mask_image(mask: np.ndarray) -> Image.Image:
    """A stored mask as a PIL image of its values: mode L, I;16 (uint16) or RGB."""
    return Image.fromarray(np.ascontiguousarray(mask))


def file_extension(data: bytes) -> str:
    """The extension a mask file is stored with, from its header (as for images)."""
    with Image.open(io.BytesIO(data)) as image:
        return extension_for(image.format or "unknown")


def encode_mask(mask: np.ndarray) -> bytes:
    """Lossless PNG bytes of a mask that has no file of its own (e.g. from a torch Dataset)."""
    buffer = io.BytesIO()
    mask_image(mask).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
