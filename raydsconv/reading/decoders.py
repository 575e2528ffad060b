"""Decoders: what a reader hands out, made from what is stored. A batch at a time.

Stored images are pixels (fixed-size formats: one (N, H, W[, C]) uint8 array per batch) or encoded
files (flexible-size formats: a list of bytes); stored masks likewise. A decoder turns them into the
requested output. Built in: ``pil`` (as ImageFolder gives), ``numpy`` (H, W, C) uint8, ``tensor``
(C, H, W) uint8 ``torch.Tensor``, ``bytes`` (the stored file, flexible formats). Add your own —
e.g. GPU JPEG decoding — with ``register_decoder`` (see docs/extending.md); torch is imported only
by the decoders that make tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from raydsconv.errors import InvalidArgumentError
from raydsconv.masks import MaskSpec, mask_array, mask_image


@dataclass(frozen=True)
class Stored:
    """What a decoder needs to know of the dataset it decodes."""

    fixed_size: bool  # pixels (fixed-size formats) or encoded files (flexible-size ones)
    mode: str | None  # the pixels' PIL mode, fixed-size formats
    mask_spec: MaskSpec | None  # None: samples have class labels
    draft: tuple[int, int] | None = None  # flexible formats: (height, width) the caller needs at least


class Decoder:
    """Turns a batch of stored images and masks into one output kind.

    ``images`` and ``masks`` get one batch (an array of pixels, or a list of encoded files) and
    return one value per sample; ``stacked_images`` / ``stacked_masks`` may return the whole batch of
    pixels as one array or tensor (fixed-size formats, no transforms) or None when this output has
    no such form. Labels are never decoded: they stay ints.
    """

    name: ClassVar[str] = ""
    fixed_size_only: ClassVar[bool] = False
    flexible_only: ClassVar[bool] = False

    def __init__(self, stored: Stored):
        self.stored = stored

    def images(self, batch: Any) -> list[Any]:
        raise NotImplementedError

    def masks(self, batch: Any) -> list[Any]:
        raise NotImplementedError

    def stacked_images(self, pixels: np.ndarray) -> Any | None:
        return None

    def stacked_masks(self, masks: np.ndarray) -> Any | None:
        return None


def _pixels(stored: Stored, batch: Any) -> list[np.ndarray]:
    """Each image of a batch as an (H, W[, C]) uint8 array."""
    if stored.fixed_size:
        return list(batch)
    from raydsconv.images import decode_rgb

    # Masks are drawn on the image as displayed: datasets with masks decode with EXIF orientation.
    return [_writable(np.asarray(decode_rgb(data, stored.draft, orient=stored.mask_spec is not None))) for data in batch]


def _writable(array: np.ndarray) -> np.ndarray:
    """``array``, copied only if it is read-only (numpy's view of a PIL image is): torch warns about a
    tensor of read-only memory, and ``default_collate`` makes one. Fixed-size rows are already ours to write."""
    return np.require(array, requirements=("C_CONTIGUOUS", "WRITEABLE"))


def _mask_arrays(stored: Stored, batch: Any) -> list[np.ndarray]:
    if isinstance(batch, np.ndarray):
        return list(batch)
    # Stored masks were checked at conversion: no size limit of ours when reading them back.
    return [_writable(mask_array(data, stored.mask_spec, max_pixels=None)) for data in batch]


class PilDecoder(Decoder):
    name = "pil"

    def images(self, batch: Any) -> list[Any]:
        from PIL import Image

        if self.stored.fixed_size:
            return [Image.fromarray(pixels, self.stored.mode) for pixels in batch]
        from raydsconv.images import decode_rgb

        return [decode_rgb(data, self.stored.draft, orient=self.stored.mask_spec is not None) for data in batch]

    def masks(self, batch: Any) -> list[Any]:
        return [mask_image(mask) for mask in _mask_arrays(self.stored, batch)]


class NumpyDecoder(Decoder):
    name = "numpy"

    def images(self, batch: Any) -> list[Any]:
        return _pixels(self.stored, batch)

    def masks(self, batch: Any) -> list[Any]:
        return _mask_arrays(self.stored, batch)

    def stacked_images(self, pixels: np.ndarray) -> Any:
        return pixels

    def stacked_masks(self, masks: np.ndarray) -> Any:
        return masks


class TensorDecoder(Decoder):
    """(C, H, W) uint8 tensors, ready for torchvision.transforms.v2 or the GPU; masks as
    ``tv_tensors.Mask`` ((H, W), or (3, H, W) for RGB masks; uint16 masks as int32)."""

    name = "tensor"

    def images(self, batch: Any) -> list[Any]:
        import torch

        return [_channels_first(torch.from_numpy(np.ascontiguousarray(pixels))) for pixels in _pixels(self.stored, batch)]

    def masks(self, batch: Any) -> list[Any]:
        return [self._mask(mask) for mask in _mask_arrays(self.stored, batch)]

    def stacked_images(self, pixels: np.ndarray) -> Any:
        import torch

        return _channels_first(torch.from_numpy(pixels), batched=True)

    def stacked_masks(self, masks: np.ndarray) -> Any:
        return self._mask(masks)

    def _mask(self, mask: np.ndarray) -> Any:
        import torch
        from torchvision import tv_tensors

        tensor = torch.from_numpy(mask.astype(np.int32) if mask.dtype == np.uint16 else np.ascontiguousarray(mask))
        return tv_tensors.Mask(tensor.movedim(-1, -3) if self.stored.mask_spec.channels == 3 else tensor)


class BytesDecoder(Decoder):
    """The stored files themselves, e.g. for ``torchvision.io.decode_jpeg(..., device="cuda")``."""

    name = "bytes"
    flexible_only = True

    def images(self, batch: Any) -> list[Any]:
        return list(batch)

    def masks(self, batch: Any) -> list[Any]:
        return list(batch)


def _channels_first(pixels: Any, batched: bool = False) -> Any:
    """(…, H, W, C) -> (…, C, H, W); single-channel (…, H, W) -> (…, 1, H, W)."""
    if pixels.dim() == (4 if batched else 3):
        return pixels.movedim(-1, -3)
    return pixels.unsqueeze(-3)


DECODERS: dict[str, type[Decoder]] = {cls.name: cls for cls in (PilDecoder, NumpyDecoder, TensorDecoder, BytesDecoder)}


def register_decoder(decoder: type[Decoder]) -> type[Decoder]:
    """Make ``output=decoder.name`` available to every reader; usable as a class decorator."""
    if not decoder.name:
        raise InvalidArgumentError("a decoder needs a name")
    if decoder.name in DECODERS and DECODERS[decoder.name] is not decoder:
        raise InvalidArgumentError(f"a decoder named {decoder.name!r} is already registered")
    DECODERS[decoder.name] = decoder
    return decoder


def make_decoder(output: str, stored: Stored, format_name: str) -> Decoder:
    choices = [name for name, cls in DECODERS.items()
               if not (cls.flexible_only and stored.fixed_size) and not (cls.fixed_size_only and not stored.fixed_size)]
    if output not in choices:
        raise InvalidArgumentError(f"output must be one of {', '.join(choices)} for format {format_name!r}, got {output!r}")
    return DECODERS[output](stored)
