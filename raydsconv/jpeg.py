"""The JPEG fast path's two operations, libjpeg-turbo decoding and torch's antialiased bicubic resize,
without importing torchvision's Python package: that import costs ~2 CPU-s in every fresh Ray worker,
more than a shard of small images takes to convert. torchvision's image extension is loaded by
itself and its operator called as ``torchvision.io.decode_jpeg`` calls it; the resize is
``torchvision.transforms.v2.functional.resize``'s own code for uint8 images on the CPU. Bit for bit
the same (tests/test_images.py compares both with torchvision); where the extension cannot be loaded
this way, torchvision's functions are used.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path
from typing import Any

READ_MODES = {"RGB": 3, "L": 1}  # torchvision.io.ImageReadMode.RGB / GRAY


_LOADING = threading.Lock()  # a shard's threads may all reach their first JPEG at once


def _image_ops() -> bool:
    with _LOADING:
        return _load_image_ops()


@functools.cache
def _load_image_ops() -> bool:
    """Load torchvision's image extension into torch.ops; False where it is not found."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    folders = [Path(folder) for folder in (spec.submodule_search_locations or [])] if spec else []
    libraries = [library for folder in folders for library in sorted(folder.glob("image*.so"))]
    for library in libraries:
        try:
            torch.ops.load_library(str(library))
            torch.ops.image.decode_jpeg  # noqa: B018  (raises if this library did not register it)
            return True
        except (OSError, RuntimeError, AttributeError):
            continue
    return False


def decode_jpeg(data: bytes, mode: str) -> Any:
    """(C, H, W) uint8 tensor of a JPEG, as ``torchvision.io.decode_jpeg(..., mode=RGB|GRAY)``."""
    import torch

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if _image_ops():
        return torch.ops.image.decode_jpeg(encoded, READ_MODES[mode], False)
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as torchvision_decode_jpeg

    return torchvision_decode_jpeg(encoded, mode=ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY)


def resize_bicubic(image: Any, height: int, width: int) -> Any:
    """A (C, H, W) uint8 tensor resized with antialiased bicubic interpolation, as
    ``v2.functional.resize(image, [height, width], InterpolationMode.BICUBIC, antialias=True)``."""
    import torch
    from torch.nn.functional import interpolate

    channels, old_height, old_width = image.shape
    if (height, width) == (old_height, old_width):
        return image
    numel = image.numel()
    image = image.reshape(-1, channels, old_height, old_width)
    strides = image.stride()
    if image.is_contiguous(memory_format=torch.channels_last) and image.shape[0] == 1 and numel != strides[0]:
        # torchvision's restride (pytorch issue 68430): the output is then allocated channels-last too
        image = image.as_strided((1, channels, old_height, old_width), [numel, *strides[1:]])
    # uint8 bicubic has a native CPU kernel: no float round trip (torchvision takes it on every CPU)
    resized = interpolate(image, size=[height, width], mode="bicubic", align_corners=False, antialias=True)
    return resized.reshape(channels, height, width)
