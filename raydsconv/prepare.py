"""Reading and preparing candidates inside a worker: decode/resize for fixed-size formats, byte
checks for flexible ones, and each sample's target fields (its target kind's ``prepare``). Ray-free;
bad inputs are marked (``ok=False`` and a reason), never raised."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raydsconv.images import (
    DEFAULT_MAX_PIXELS,
    BadImage,
    ImageInfo,
    ImageSpec,
    as_pil_image,
    encode_png,
    inspect_image,
    oriented,
    prepare_image,
    prepare_pil_image,
)
from raydsconv.targets import ClassLabel, SampleContext, TargetKind, empty_columns


@dataclass(frozen=True)
class Preparation:
    """What the prepare step produces: pixels for fixed-size targets, checked bytes for flexible ones."""

    spec: ImageSpec | None  # None: no fixed-size target
    keep_bytes: bool
    validation: str = "full"
    max_pixels: int = DEFAULT_MAX_PIXELS
    num_classes: int | None = None  # in-memory sources that name their classes: labels must be below
    target: TargetKind = field(default_factory=ClassLabel)  # what each sample carries besides its image

    def columns(self, count: int) -> dict[str, np.ndarray]:
        """The target's batch columns for ``count`` samples: its fields for each kind of format written."""
        fixed = self.target.fields(self.spec.shape) if self.spec is not None else ()
        flexible = self.target.fields(None) if self.keep_bytes else ()
        return empty_columns(fixed, count) | empty_columns(flexible, count)


def prepare_batch(batch: dict[str, np.ndarray], *, loader: Any, preparation: Preparation) -> dict[str, np.ndarray]:
    """Read and prepare a batch of candidates. Bad inputs are marked (ok=False, reason), not raised."""
    spec = preparation.spec
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
    if preparation.keep_bytes:
        columns["data"] = np.full(count, b"", dtype=object)
    columns |= {name: values for name, values in preparation.columns(count).items() if name not in columns}
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
    pair (image, target) whose image is file bytes or in memory and whose target is what the target
    kind prepares: a class index, a mask (file bytes or in memory; ``mask_name`` its file, for
    reasons), ..."""
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
    context = SampleContext(info.width, info.height, spec, preparation.keep_bytes, preparation.max_pixels,
                            preparation.num_classes)
    try:
        values.update(preparation.target.prepare(target, context))
    except BadImage as bad:
        raise BadImage(f"{bad.reason} ({mask_name})" if mask_name else bad.reason) from None
    if preparation.keep_bytes:
        values["data"] = data
    values.update(width=info.width, height=info.height, source_format=info.source_format, extension=info.extension)
    return values


def _read(loader: Any, row: dict[str, Any]) -> Any:
    try:
        return loader.read(row)
    except OSError as error:
        raise BadImage(f"cannot read file: {error.strerror or error}") from None
