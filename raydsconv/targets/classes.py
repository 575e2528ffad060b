"""``class``: one int label per sample (folder classes, a labels table, a Dataset's targets)."""

from __future__ import annotations

from typing import Any

import numpy as np

from raydsconv.images import BadImage, class_index
from raydsconv.targets.base import Field, SampleContext, TargetKind

LABEL = Field("label", "int64", stored_name="labels", member="cls", indexed=True)


class ClassLabel(TargetKind):
    """The default kind. Recorded as nothing in a manifest's params (datasets of every version)."""

    name = "class"

    def fields(self, shape: tuple[int, int] | None) -> tuple[Field, ...]:
        return (LABEL,)

    def params(self, fixed_size: bool) -> dict[str, Any]:
        return {}

    def to_plan(self) -> dict[str, Any]:
        return {}

    def prepare(self, target: Any, context: SampleContext) -> dict[str, Any]:
        if target is None:  # a file source: the label is the listing's
            return {}
        label = class_index(target)
        if context.num_classes is not None and label >= context.num_classes:
            raise BadImage(f"target {label} is not one of the dataset's {context.num_classes} classes")
        return {"label": label}

    def describe(self, values: dict[str, Any], classes: list[str]) -> dict[str, Any]:
        label = int(values["label"])
        return {"class": classes[label] if label < len(classes) else str(label), "label": label}

    def targets(self, fields: dict[str, Any], decoder: Any) -> list[Any]:
        return [int(label) for label in fields["label"]]

    def stacked(self, fields: dict[str, Any], decoder: Any) -> Any:
        return self.targets(fields, decoder)

    def ray_columns(self, fields: dict[str, Any], decoder: Any, decode: bool) -> dict[str, Any]:
        return {"label": np.asarray(fields["label"], dtype=np.int64)}
