"""Target kinds: what each sample carries besides its image (see ``raydsconv.targets.base``).

Built in: ``class`` (an int label), ``mask`` (segmentation), ``none`` (unlabeled). A kind of your
own is a ``TargetKind`` subclass registered with ``register_target`` (docs/extending.md).
"""

from __future__ import annotations

from typing import Any

from raydsconv.errors import InvalidArgumentError, ManifestError
from raydsconv.masks import MaskSpec
from raydsconv.targets.base import ENCODED, Field, SampleContext, TargetKind, empty_columns
from raydsconv.targets.classes import ClassLabel
from raydsconv.targets.mask import Mask
from raydsconv.targets.none import NoTarget

TARGETS: dict[str, type[TargetKind]] = {kind.name: kind for kind in (ClassLabel, Mask, NoTarget)}


def register_target(kind: type[TargetKind]) -> type[TargetKind]:
    """Make a target kind known to readers (usable as a class decorator); a name taken is refused."""
    if not kind.name:
        raise InvalidArgumentError("a target kind needs a name")
    if TARGETS.get(kind.name, kind) is not kind:
        raise InvalidArgumentError(f"a target kind named {kind.name!r} is already registered")
    TARGETS[kind.name] = kind
    return kind


def make_known(kind: TargetKind) -> None:
    """Register the class of a kind that travelled here by pickle (a Ray worker, a spawned DataLoader
    worker) and whose module, defined outside the library, never ran its ``register_target`` here."""
    TARGETS.setdefault(kind.name, type(kind))


def resolve_target(target: str | TargetKind | None, *, dense: bool = False, mask_mode: str = "L",
                   mask_pad_value: int = 255) -> TargetKind:
    """The kind a conversion was asked for: ``target`` (a name or a kind), or ``dense=True`` for masks."""
    if target is None:
        target = "mask" if dense else "class"
    if isinstance(target, str):
        if target == "mask":
            target = Mask(MaskSpec(mask_mode, mask_pad_value))
        elif target in TARGETS:
            target = TARGETS[target]()
        else:
            raise InvalidArgumentError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if not isinstance(target, TargetKind):
        raise InvalidArgumentError(f"target must be a name ({', '.join(TARGETS)}) or a TargetKind, got {target!r}")
    if dense and not isinstance(target, Mask):
        raise InvalidArgumentError(f"dense=True means target='mask', not {target.name!r}")
    return target


def target_of(params: dict[str, Any]) -> TargetKind:
    """The kind a dataset's manifest params record."""
    if params.get("dense"):
        return Mask.from_params(params)
    name = params.get("target", ClassLabel.name)
    if name not in TARGETS:
        raise ManifestError(f"the dataset's samples carry targets of kind {name!r}, which is not registered here; "
                            "import the module that defines it (raydsconv.targets.register_target) first")
    return TARGETS[name].from_params(params)


def stored_fields(params: dict[str, Any]) -> tuple[Field, ...]:
    """The fields a format's writer or reader handles, for a dataset of these params."""
    shape = params.get("shape")
    return target_of(params).fields(tuple(shape) if shape is not None else None)


__all__ = ["ENCODED", "TARGETS", "ClassLabel", "Field", "Mask", "NoTarget", "SampleContext", "TargetKind",
           "empty_columns", "make_known", "register_target", "resolve_target", "stored_fields", "target_of"]
