"""``mask``: a segmentation mask per sample (dense labels), of its image's size. Fixed-size formats
store its pixels, resized with the image's geometry (nearest neighbour); flexible-size ones its file
(the source's, or a PNG for a mask in memory). See ``raydsconv.masks`` for the rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from raydsconv.masks import MaskSpec, check_mask_size, encode_mask, file_extension, mask_array, prepare_mask
from raydsconv.targets.base import ENCODED, Field, SampleContext, TargetKind


@dataclass(frozen=True)
class Mask(TargetKind):
    spec: MaskSpec = MaskSpec()

    name = "mask"

    def fields(self, shape: tuple[int, int] | None) -> tuple[Field, ...]:
        if shape is None:
            return (Field("mask", ENCODED, feature={"_type": "Image"}),)
        return (Field("mask", self.spec.dtype.name, self.spec.array_shape(tuple(shape)), stored_name="masks"),)

    def params(self, fixed_size: bool) -> dict[str, Any]:
        # The manifest's names since the first version: "dense" says a dataset has masks.
        params: dict[str, Any] = {"dense": True, "mask_mode": self.spec.mode}
        if fixed_size:
            params["mask_pad_value"] = self.spec.pad_value
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "Mask":
        return cls(MaskSpec(params["mask_mode"], params.get("mask_pad_value", 255)))

    def to_plan(self) -> dict[str, Any]:
        return {}  # the plan records the spec under "mask", as it always has

    def prepare(self, target: Any, context: SampleContext) -> dict[str, Any]:
        array = mask_array(target, self.spec, context.max_pixels)
        check_mask_size(array, context.width, context.height)
        values: dict[str, Any] = {}
        if context.image is not None:
            values["mask"] = prepare_mask(array, context.image, self.spec)
        if context.keep_bytes:
            is_file = isinstance(target, bytes)
            values["mask_data"] = target if is_file else encode_mask(array)
            values["mask_extension"] = file_extension(target) if is_file else "png"
        return values

    def targets(self, fields: dict[str, Any], decoder: Any) -> list[Any]:
        return decoder.masks(fields["mask"])

    def stacked(self, fields: dict[str, Any], decoder: Any) -> Any | None:
        masks = fields["mask"]
        return decoder.stacked_masks(masks) if isinstance(masks, np.ndarray) else None

    def ray_columns(self, fields: dict[str, Any], decoder: Any, decode: bool) -> dict[str, Any]:
        masks = fields["mask"]
        if isinstance(masks, np.ndarray):
            return {"mask": masks}
        values = np.empty(len(masks), dtype=object)
        values[:] = decoder.masks(masks) if decode else masks
        return {"mask": values}
