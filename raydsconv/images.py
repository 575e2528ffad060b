"""Turn one encoded image into the fixed-size pixels we store. No Ray, no formats.

The rules, the same on every path:

* EXIF orientation is applied first, then the mode conversion, then the resize.
* Transparency (RGBA, LA, palette or grayscale with a transparent colour) is composited over
  ``ImageSpec.background`` (white by default) before converting to the target mode.
* 16-bit grayscale is scaled to 8 bits (65535 -> 255), never clipped; animated images give
  their first frame.
* ``shape`` is ``(height, width)``. ``resize`` is ``stretch`` (ignore aspect ratio), ``crop``
  (resize the short side, centre crop) or ``pad`` (fit inside, letterbox with ``pad_value``).
  Resampling is bicubic with antialiasing.

JPEGs that need nothing but decode + resize take a faster path (libjpeg-turbo through
``torchvision.io.decode_jpeg`` and torchvision's uint8 antialiased bicubic resize, which follows
Pillow's algorithm): it is about twice as fast as Pillow and differs from it by rounding only
(mean |diff| about 0.01 of 255). Everything else goes through Pillow.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from raydsconv.errors import InvalidArgumentError

RESIZE_POLICIES = ("stretch", "crop", "pad")
CHANNELS = {"RGB": 3, "L": 1}
# Pillow's own decompression-bomb threshold (~89 Mpx); above it we skip the image instead of warning.
DEFAULT_MAX_PIXELS = 89_478_485

_ORIENTATION = ExifTags.Base.Orientation
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class BadImage(Exception):
    """This input is not a usable image; ``reason`` says why. Callers skip it and record the reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageSpec:
    """What every stored image looks like in a fixed-size format."""

    shape: tuple[int, int]  # (height, width)
    mode: str = "RGB"
    resize: str = "stretch"
    background: tuple[int, int, int] = (255, 255, 255)
    pad_value: int = 0
    draft: bool = False  # JPEG DCT-domain downscaling: faster for big images, changes pixels slightly
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        shape = tuple(self.shape) if self.shape is not None else ()
        if len(shape) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in shape):
            raise InvalidArgumentError(
                f"shape must be two positive integers (height, width), got {self.shape!r}"
            )
        object.__setattr__(self, "shape", (int(shape[0]), int(shape[1])))
        if self.mode not in CHANNELS:
            raise InvalidArgumentError(
                f"unknown image mode {self.mode!r}; choose one of {', '.join(CHANNELS)}"
            )
        if self.resize not in RESIZE_POLICIES:
            raise InvalidArgumentError(
                f"unknown resize policy {self.resize!r}; choose one of {', '.join(RESIZE_POLICIES)}"
            )
        object.__setattr__(self, "background", tuple(int(v) for v in self.background))
        if len(self.background) != 3 or not all(0 <= v <= 255 for v in self.background):
            raise InvalidArgumentError(f"background must be an RGB triple in 0..255, got {self.background!r}")
        if not 0 <= self.pad_value <= 255:
            raise InvalidArgumentError(f"pad_value must be in 0..255, got {self.pad_value!r}")
        if self.max_pixels <= 0:
            raise InvalidArgumentError(f"max_pixels must be positive, got {self.max_pixels!r}")

    @property
    def channels(self) -> int:
        return CHANNELS[self.mode]

    @property
    def array_shape(self) -> tuple[int, ...]:
        """Shape of one stored image: (H, W, C), or (H, W) for single-channel modes."""
        height, width = self.shape
        return (height, width) if self.channels == 1 else (height, width, self.channels)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shape": list(self.shape), "background": list(self.background)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageSpec":
        return cls(**{**data, "shape": tuple(data["shape"]), "background": tuple(data["background"])})


@dataclass(frozen=True)
class Geometry:
    """Where a (width, height) source lands in the target: resize to (resize_width, resize_height),
    then crop at (offset_x, offset_y) for ``crop`` or paste at it on a canvas for ``pad``."""

    resize_width: int
    resize_height: int
    offset_x: int = 0
    offset_y: int = 0


def plan_geometry(width: int, height: int, shape: tuple[int, int], policy: str) -> Geometry:
    """Pure geometry shared by images and their masks, so both land on the same pixels."""
    target_h, target_w = shape
    if policy == "stretch":
        return Geometry(target_w, target_h)
    if policy == "crop":
        scale = max(target_w / width, target_h / height)
        new_w = max(target_w, round(width * scale))
        new_h = max(target_h, round(height * scale))
        return Geometry(new_w, new_h, (new_w - target_w) // 2, (new_h - target_h) // 2)
    scale = min(target_w / width, target_h / height)
    new_w = min(target_w, max(1, round(width * scale)))
    new_h = min(target_h, max(1, round(height * scale)))
    return Geometry(new_w, new_h, (target_w - new_w) // 2, (target_h - new_h) // 2)


def place(resized: np.ndarray, geometry: Geometry, spec: ImageSpec, pad_value: int | None = None) -> np.ndarray:
    """Apply the crop or the letterbox of ``geometry`` to an already resized (H, W[, C]) array of
    any dtype (images, and masks with their own ``pad_value``)."""
    target_h, target_w = spec.shape
    x, y = geometry.offset_x, geometry.offset_y
    if spec.resize == "crop":
        return np.ascontiguousarray(resized[y : y + target_h, x : x + target_w])
    if spec.resize == "pad":
        fill = spec.pad_value if pad_value is None else pad_value
        canvas = np.full((target_h, target_w, *resized.shape[2:]), fill, dtype=resized.dtype)
        canvas[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
        return canvas
    return resized


@dataclass(frozen=True)
class PreparedImage:
    pixels: np.ndarray  # spec.array_shape, uint8
    width: int  # size of the source after EXIF orientation
    height: int
    source_format: str  # what Pillow says the bytes are (JPEG, PNG, ...), whatever the file name


def open_image(data: bytes, max_pixels: int | None) -> Image.Image:
    """Parse the header of ``data`` (no decoding yet); raises BadImage for empty, unknown, malformed
    or oversized input (``max_pixels=None``: no limit of ours). Call under
    ``warnings.catch_warnings()`` (see callers)."""
    if not data:
        raise BadImage("empty file")
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we skip such images instead
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImage("not an image (no image format recognises these bytes)") from None
    except Image.DecompressionBombError as error:
        raise BadImage(f"too large: {error}") from None
    except Exception as error:  # Pillow raises many types on malformed headers
        raise BadImage(f"unreadable image header: {error}") from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise BadImage(f"too large: {width}x{height} pixels exceeds max_pixels={max_pixels}")
    return image


def prepare_image(data: bytes, spec: ImageSpec) -> PreparedImage:
    """Decode ``data`` and produce the stored pixels; raises BadImage with a reason."""
    with warnings.catch_warnings():
        image = open_image(data, spec.max_pixels)
        width, height = image.size
        orientation = _orientation(image)
        if _fast_path_applies(image, data, orientation, spec):
            fast = _prepare_jpeg_fast(data, width, height, spec)
            if fast is not None:
                return fast
        try:
            return _prepare_with_pillow(image, orientation, spec)
        except BadImage:
            raise
        except Exception as error:
            raise BadImage(f"cannot decode {image.format or 'image'}: {error}") from None


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not cost us the image
        return 1


def _fast_path_applies(image: Image.Image, data: bytes, orientation: int, spec: ImageSpec) -> bool:
    # A JPEG without its end-of-image marker is likely truncated: leave it to Pillow, which raises.
    return (
        image.format == "JPEG"
        and image.mode == spec.mode
        and orientation == 1
        and not spec.draft
        and data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")
    )


def _prepare_jpeg_fast(data: bytes, width: int, height: int, spec: ImageSpec) -> PreparedImage | None:
    from raydsconv.jpeg import decode_jpeg, resize_bicubic

    geometry = plan_geometry(width, height, spec.shape, spec.resize)
    try:
        decoded = decode_jpeg(data, spec.mode)
        decoded = resize_bicubic(decoded, geometry.resize_height, geometry.resize_width)
        resized = decoded.permute(1, 2, 0).numpy()
        if spec.channels == 1:
            resized = resized[:, :, 0]
        pixels = place(np.ascontiguousarray(resized), geometry, spec)
    except Exception:
        return None  # Pillow gets a second look and gives the precise reason
    return PreparedImage(pixels, width, height, "JPEG")


def _prepare_with_pillow(image: Image.Image, orientation: int, spec: ImageSpec) -> PreparedImage:
    source_format = image.format or "unknown"
    width, height = _oriented_size(image.size, orientation)
    # Geometry comes from the file's own size, so draft decoding changes pixels, never the layout.
    geometry = plan_geometry(width, height, spec.shape, spec.resize)
    if spec.draft and image.format == "JPEG":
        wanted = (geometry.resize_width, geometry.resize_height)
        image.draft(image.mode if image.mode in ("RGB", "L") else None, _oriented_size(wanted, orientation))
    image.load()  # raises on truncated data
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    image = convert_mode(image, spec.mode, spec.background)
    if image.size != (geometry.resize_width, geometry.resize_height):
        image = image.resize((geometry.resize_width, geometry.resize_height), Image.Resampling.BICUBIC)
    pixels = place(np.asarray(image, dtype=np.uint8), geometry, spec)
    return PreparedImage(pixels, width, height, source_format)


def _oriented_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def convert_mode(image: Image.Image, mode: str, background: tuple[int, int, int]) -> Image.Image:
    """Bring any Pillow mode to ``mode`` ("RGB" or "L") by the documented rules."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.uint32).clip(0, 65535)
        image = Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image).clip(0, 255).round().astype(np.uint8), "L")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        image = Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode == mode:
        return image
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return image.convert(mode)


# File extension a stored image gets, by the format Pillow detects (not by its original name).
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tiff", "BMP": "bmp"}
VALIDATIONS = ("full", "header")


@dataclass(frozen=True)
class ImageInfo:
    width: int  # after EXIF orientation, as for PreparedImage
    height: int
    source_format: str

    @property
    def extension(self) -> str:
        return extension_for(self.source_format)


def extension_for(source_format: str) -> str:
    """The file extension stored bytes get, from the format Pillow detects."""
    return EXTENSIONS.get(source_format, source_format.lower())


def inspect_image(data: bytes, *, validation: str = "full", max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Check that ``data`` is a usable image without keeping pixels; raises BadImage with a reason.

    ``validation="full"`` decodes the whole image, as a reader's decoder later will (the only check
    that catches a truncated JPEG; ``Image.verify()`` does not). JPEGs are decoded at 1/8 scale:
    every entropy-coded byte is still read, so truncation, a missing end marker and malformed
    markers are caught, at a fraction of the cost. Damage inside the compressed data that the
    decoder tolerates (libjpeg warns, Pillow drops the warning) decodes to wrong pixels and is not
    caught: no check without a checksum of the original can tell. ``"header"`` only parses the
    header: much faster, blind to damage further in.
    """
    with warnings.catch_warnings():
        image = open_image(data, max_pixels)
        file_width, file_height = image.size
        width, height = _oriented_size(image.size, _orientation(image))
        source_format = image.format or "unknown"
        if validation == "full":
            try:
                if image.format == "JPEG":
                    image.draft(None, (max(1, file_width // 8), max(1, file_height // 8)))
                image.load()
            except Exception as error:
                raise BadImage(f"cannot decode {source_format}: {error}") from None
    return ImageInfo(width, height, source_format)


def decode_rgb(data: bytes, draft: tuple[int, int] | None = None, *, orient: bool = False) -> Image.Image:
    """Stored bytes as an RGB PIL image, as torchvision's ImageFolder loads a file (without its copy
    when the image is RGB already). ``draft=(height, width)``: JPEGs decode at the smallest
    1/2, 1/4 or 1/8 scale still that large. ``orient``: apply EXIF orientation (ImageFolder does
    not; images with masks need it, as their masks match the image as displayed)."""
    image = Image.open(io.BytesIO(data))
    if draft is not None and image.format == "JPEG":
        image.draft("RGB", (draft[1], draft[0]))
    if orient:
        image = oriented(image)
    return image.convert("RGB") if image.mode != "RGB" else image


def oriented(image: Image.Image) -> Image.Image:
    """``image`` as displayed: its EXIF orientation applied (the image itself when there is none)."""
    return ImageOps.exif_transpose(image) if _orientation(image) != 1 else image


def prepare_pil_image(image: Image.Image, spec: ImageSpec) -> PreparedImage:
    """The fixed-size rules for an image already in memory (e.g. from a torch Dataset)."""
    return _prepare_with_pillow(image, _orientation(image), spec)


def as_pil_image(image: Any) -> Image.Image:
    """A torch Dataset's image as PIL: PIL images as they are, (H, W[, C]) arrays, (C, H, W) tensors."""
    if isinstance(image, Image.Image):
        return image
    if hasattr(image, "detach"):  # a torch tensor, channels first
        array = image.detach().cpu().numpy()
        array = array.transpose(1, 2, 0) if array.ndim == 3 else array
        if array.dtype != np.uint8:  # float tensors, as ToTensor makes them, are 0..1
            array = (array.clip(0, 1) * 255).round().astype(np.uint8) if array.dtype.kind == "f" else array
    else:
        array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise BadImage(f"not an image: array of shape {array.shape}")
    if array.dtype != np.uint8 and array.dtype != np.uint16:
        raise BadImage(f"not an image: array of dtype {array.dtype} (give uint8, or floats 0..1 in a tensor)")
    return Image.fromarray(np.ascontiguousarray(array))


def class_index(target: Any) -> int:
    """A classification target as an int label; anything else is not a class index."""
    if hasattr(target, "item") and getattr(target, "ndim", 0) == 0:
        target = target.item()
    if isinstance(target, (bool, float)) or not isinstance(target, (int, np.integer)) or target < 0:
        raise BadImage(f"target {target!r} is not a class index (a non-negative int)")
    return int(target)


def encode_png(image: Image.Image) -> bytes:
    """Lossless bytes for an image that has no file of its own."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class ResizeAndConvert:
    """A torchvision-style transform: PIL image in, PIL image of ``size=(height, width)`` and ``mode`` out.

    Uses exactly the rules of the converters (orientation, alpha, 16-bit, resize policy), so a
    torch Dataset wrapped with it converts to the same pixels as a folder of the same images.
    ``shape=`` is the predecessor's name for ``size`` (also height first here). It is for images
    only: masks must not go through it (their classes would be blended); the converters resize
    masks themselves, with nearest neighbour.
    """

    def __init__(self, size: tuple[int, int] | None = None, mode: str = "RGB", resize: str = "stretch", *,
                 shape: tuple[int, int] | None = None, **options: Any):
        if size is not None and shape is not None and tuple(size) != tuple(shape):
            raise InvalidArgumentError(f"ResizeAndConvert got size={size!r} and shape={shape!r}; give one of them")
        size = size if size is not None else shape
        if size is None:
            raise InvalidArgumentError("ResizeAndConvert needs size=(height, width) (or the predecessor's shape=)")
        self.spec = ImageSpec(shape=tuple(size), mode=mode, resize=resize, **options)

    def __call__(self, image: Image.Image) -> Image.Image:
        prepared = _prepare_with_pillow(image, _orientation(image), self.spec)
        return Image.fromarray(prepared.pixels, self.spec.mode)

    def __repr__(self) -> str:
        return f"ResizeAndConvert(size={self.spec.shape}, mode={self.spec.mode!r}, resize={self.spec.resize!r})"
