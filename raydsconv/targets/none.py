"""``none``: unlabeled images (e.g. for self-supervised pre-training). Nothing is stored beside the
image, and readers give the image alone, not a pair, so that DataLoader's default collate batches it
as it batches any tensor (``for images in loader``)."""

from __future__ import annotations

from typing import Any

from raydsconv.targets.base import Field, SampleContext, TargetKind


class NoTarget(TargetKind):
    name = "none"
    returns_target = False

    def fields(self, shape: tuple[int, int] | None) -> tuple[Field, ...]:
        return ()

    def prepare(self, target: Any, context: SampleContext) -> dict[str, Any]:
        return {}

    def targets(self, fields: dict[str, Any], decoder: Any) -> list[Any]:
        raise TypeError("samples of kind 'none' have no target")
