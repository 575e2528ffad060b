"""Reading and preparing candidates inside a worker: decode/resize for fixed-size formats, byte
checks for flexible ones, and each sample's target (class or mask). Ray-free; bad inputs are marked
(``ok=False`` and a reason), never raised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from raydsconv.images import (
    DEFAULT_MAX_PIXELS,
    BadImage,
    ImageInfo,
    ImageSpec,
    as_pil_image,
    class_index,
    encode_png,
    inspect_image,
    oriented,
    prepare_image,
    prepare_pil_image,
)
from raydsconv.masks import MaskSpec, check_mask_size, encode_mask, file_extension, mask_array, prepare_mask


@dataclass(frozen=True)
class Preparation:
    """What the prepare step produces: pixels for fixed-size targets, checked bytes for flexible ones."""

    spec: ImageSpec | None  # None: no fixed-size target
    keep_bytes: bool
    validation: str = "full"
    max_pixels: int = DEFAULT_MAX_PIXELS
    num_classes: int | None = None  # in-memory sources that name their classes: labels must be below
    mask: MaskSpec | None = None  # dense labels: every sample has a mask


def prepare_batch(batch: dict[str, np.ndarray], *, loader: Any, preparation: Preparation) -> dict[str, np.ndarray]:
    """Read and prepare a batch of candidates. Bad inputs are marked (ok=False, reason), not raised."""
    spec, mask_spec = preparation.spec, preparation.mask
    count = len(batch["path"])
    columns: dict[str, np.ndarray] = {
        "label": np.array(batch["label"], dtype=np.int64),
        "ok": np.zeros(count, dtype=bool),
        "reason": np.full(count, "", dtype=object),
        "width": np.zeros(count, dtype=np.int32),
        "height": np.zeros(count, dtype=np.int32),
        "source_format": np.full(count, "", dtype=object),
        "extension": np.full(count, "", dtype=object),
    }
    if spec is not None:
        columns["image"] = np.zeros((count, *spec.array_shape), dtype=np.uint8)
        if mask_spec is not None:
            columns["mask"] = np.zeros((count, *mask_spec.array_shape(spec.shape)), dtype=mask_spec.dtype)
    if preparation.keep_bytes:
        columns["data"] = np.full(count, b"", dtype=object)
        if mask_spec is not None:
            columns["mask_data"] = np.full(count, b"", dtype=object)
            columns["mask_extension"] = np.full(count, "", dtype=object)
    for i in range(count):
        row = {key: values[i] for key, values in batch.items()}
        try:
            prepared = _prepare_item(_read(loader, row), preparation, mask_name=row.get("mask_path"))
        except BadImage as bad:
            columns["reason"][i] = bad.reason
            continue
        except Exception as error:  # one odd file must never stop the conversion
            columns["reason"][i] = f"unexpected error: {type(error).__name__}: {error}"
            continue
        for name, value in prepared.items():
            columns[name][i] = value
        columns["ok"][i] = True
    return {key: batch[key] for key in ("candidate", "path", "shard")} | columns


def _prepare_item(item: Any, preparation: Preparation, mask_name: str | None = None) -> dict[str, Any]:
    """One sample's prepared values by column. ``item`` is what the loader read: file bytes, or a
    pair (image, target) whose image is file bytes or in memory and whose target is a class index
    or, with dense labels, a mask (file bytes or in memory; ``mask_name`` its file, for reasons)."""
    spec = preparation.spec
    image, target = item if isinstance(item, tuple) else (item, None)
    values: dict[str, Any] = {}
    if isinstance(image, bytes):
        if spec is not None:
            prepared = prepare_image(image, spec)
            values["image"] = prepared.pixels
            info = ImageInfo(prepared.width, prepared.height, prepared.source_format)
        else:
            info = inspect_image(image, validation=preparation.validation, max_pixels=preparation.max_pixels)
        data = image
    else:  # in memory (a torch Dataset): no original bytes, so flexible formats get a lossless PNG
        picture = oriented(as_pil_image(image))  # as displayed: PNG keeps no EXIF orientation
        data = encode_png(picture) if preparation.keep_bytes else b""
        if spec is not None:
            values["image"] = prepare_pil_image(picture, spec).pixels
        info = ImageInfo(picture.width, picture.height, "PNG")
    if preparation.mask is not None:
        try:
            values.update(_prepare_mask(target, info, preparation))
        except BadImage as bad:
            raise BadImage(f"{bad.reason} ({mask_name})" if mask_name else bad.reason) from None
    elif target is not None:
        values["label"] = class_index(target)
        if preparation.num_classes is not None and values["label"] >= preparation.num_classes:
            raise BadImage(f"target {values['label']} is not one of the dataset's {preparation.num_classes} classes")
    if preparation.keep_bytes:
        values["data"] = data
    values.update(width=info.width, height=info.height, source_format=info.source_format, extension=info.extension)
    return values


def _prepare_mask(mask: Any, info: ImageInfo, preparation: Preparation) -> dict[str, Any]:
    """The mask of a sample: resized like its image (fixed), and its bytes (flexible): the original
    file, or a PNG for a mask in memory."""
    array = mask_array(mask, preparation.mask, preparation.max_pixels)
    check_mask_size(array, info.width, info.height)
    values: dict[str, Any] = {}
    if preparation.spec is not None:
        values["mask"] = prepare_mask(array, preparation.spec, preparation.mask)
    if preparation.keep_bytes:
        is_file = isinstance(mask, bytes)
        values["mask_data"] = mask if is_file else encode_mask(array)
        values["mask_extension"] = file_extension(mask) if is_file else "png"
    return values


def _read(loader: Any, row: dict[str, Any]) -> Any:
    try:
        return loader.read(row)
    except OSError as error:
        raise BadImage(f"cannot read file: {error.strerror or error}") from None
