"""The conversion plan: everything that decides a conversion's output, validated once, before
anything touches the disk or Ray, and written into the output when the conversion starts.

Two runs with equal plans write the same bytes, so a re-run of an unfinished conversion of the same
plan may keep the shards already written; any difference (``ConversionPlan.differences``) refuses
to mix. What tunes only speed or memory (batch_size, num_workers, the Ray address) is not planned.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from raydsconv.errors import InvalidArgumentError, ManifestError
from raydsconv.formats import Format, get_format
from raydsconv.images import VALIDATIONS, ImageSpec
from raydsconv.masks import MaskSpec
from raydsconv.targets import TARGETS, ClassLabel, Mask, TargetKind, resolve_target

PLAN_VERSION = 1


@dataclass(frozen=True)
class SourcePlan:
    """What is converted: the source's description (kind, root, ...) and its listing's fingerprint."""

    description: dict[str, Any]
    num_candidates: int
    fingerprint: str  # "" for sources that cannot tell a change (a torch Dataset)


@dataclass(frozen=True)
class FormatPlan:
    """One output format and its typed options (the format's ``options`` dataclass, or None)."""

    name: str
    options: Any = None

    @property
    def format(self) -> Format:
        return get_format(self.name)

    def options_dict(self) -> dict[str, Any]:
        return asdict(self.options) if self.options is not None else {}


@dataclass(frozen=True)
class ConversionPlan:
    source: SourcePlan
    formats: tuple[FormatPlan, ...]
    image: ImageSpec | None  # None: no fixed-size format
    target: TargetKind  # what each sample carries besides its image
    validation: str  # how flexible-size formats check the bytes they keep
    max_pixels: int  # larger images are skipped
    images_per_file: int
    version: int = PLAN_VERSION

    @property
    def num_shards(self) -> int:
        return -(-self.source.num_candidates // self.images_per_file)

    @property
    def several(self) -> bool:
        """Several formats from one pass: each goes into its own sub-folder."""
        return len(self.formats) > 1

    def shard_range(self, shard: int) -> tuple[int, int]:
        """The candidates of ``shard``: [start, stop)."""
        start = shard * self.images_per_file
        return start, min(start + self.images_per_file, self.source.num_candidates)

    def params(self, fmt: FormatPlan) -> dict[str, Any]:
        """The parameters its writers get and its manifest records (the on-disk contract)."""
        spec = self.image
        if fmt.format.fixed_size:
            params = {**spec.to_dict(), "channels": spec.channels, "dtype": "uint8"}
        else:
            params = {"validation": self.validation}
        return {**params, **self.target.params(fmt.format.fixed_size), **fmt.options_dict()}

    @property
    def mask(self) -> MaskSpec | None:
        return self.target.spec if isinstance(self.target, Mask) else None

    def to_dict(self) -> dict[str, Any]:
        plan = {
            "version": self.version,
            "source": asdict(self.source),
            "formats": [{"name": fmt.name, "options": fmt.options_dict()} for fmt in self.formats],
            "image": self.image.to_dict() if self.image is not None else None,
            "mask": asdict(self.mask) if self.mask is not None else None,  # where masks were always recorded
            "validation": self.validation,
            "max_pixels": self.max_pixels,
            "images_per_file": self.images_per_file,
        }
        if self.target.to_plan():  # other kinds than class and mask (which record nothing more)
            plan["target"] = self.target.to_plan()
        return plan

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "ConversionPlan":
        """Rebuild a recorded plan; an unreadable one raises ManifestError naming ``where``."""
        try:
            if data["version"] != PLAN_VERSION:
                raise ManifestError(f"{where}: plan version {data['version']} is not {PLAN_VERSION}")
            image = data["image"]
            if data["mask"] is not None:
                target: TargetKind = Mask(MaskSpec(**data["mask"]))
            elif "target" in data:
                target = TARGETS[data["target"]["target"]].from_params(data["target"])
            else:
                target = ClassLabel()
            return cls(
                source=SourcePlan(dict(data["source"]["description"]), int(data["source"]["num_candidates"]),
                                  str(data["source"]["fingerprint"])),
                formats=tuple(FormatPlan(item["name"], get_format(item["name"]).parse_options(item["options"]))
                              for item in data["formats"]),
                image=ImageSpec.from_dict(image) if image is not None else None,
                target=target,
                validation=str(data["validation"]),
                max_pixels=int(data["max_pixels"]),
                images_per_file=int(data["images_per_file"]),
            )
        except ManifestError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise ManifestError(f"{where}: unreadable conversion plan ({type(error).__name__}: {error})") from None

    def differences(self, recorded: dict[str, Any]) -> list[str]:
        """What differs from a plan recorded on disk (its ``to_dict``), one phrase each, e.g.
        "image.shape: [6, 6] now, [8, 8] in the output"; empty when they are the same plan."""
        mine, theirs = _flat(json.loads(json.dumps(self.to_dict()))), _flat(recorded)
        found = []
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) == theirs.get(key):
                continue
            if key == "source.fingerprint":
                found.append("the source's files changed (added, removed or modified)")
            else:
                found.append(f"{key}: {mine.get(key)!r} now, {theirs.get(key)!r} in the output")
        return found


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"image": {"shape": [8, 8]}} -> {"image.shape": [8, 8]}; lists of dicts keep their index."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, (list, tuple)) and data and all(isinstance(item, dict) for item in data):
        items = ((str(i), item) for i, item in enumerate(data))
    else:
        return {prefix: list(data) if isinstance(data, tuple) else data}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def check_arguments(
    *,
    format: str | Sequence[str],
    shape: tuple[int, int] | None,
    mode: str,
    resize: str,
    background: tuple[int, int, int],
    pad_value: int,
    draft: bool,
    max_pixels: int,
    validation: str,
    images_per_file: int,
    batch_size: int,
    num_workers: int | None,
    format_options: dict[str, dict[str, Any]] | None,
    target: str | TargetKind | None,
    dense: bool,
    mask_mode: str,
    mask_pad_value: int,
) -> tuple[tuple[FormatPlan, ...], ImageSpec | None, TargetKind]:
    """Every argument that can be checked without the source; raises InvalidArgumentError."""
    formats = _formats(format)
    _check_positive("images_per_file", images_per_file)
    _check_positive("batch_size", batch_size)
    _check_positive("max_pixels", max_pixels)
    if num_workers is not None:  # 0: in-process loading for a DataLoader; convert() runs one task at a time
        _check_positive("num_workers", num_workers, zero_ok=True)
    if validation not in VALIDATIONS:
        raise InvalidArgumentError(f"validation must be one of {', '.join(VALIDATIONS)}, got {validation!r}")
    fixed = [fmt for fmt in formats if fmt.fixed_size]
    if fixed and shape is None:
        raise InvalidArgumentError(f"format {fixed[0].name!r} stores one image size: give shape=(height, width)")
    image = ImageSpec(shape=shape, mode=mode, resize=resize, background=background, pad_value=pad_value,
                      draft=draft, max_pixels=max_pixels) if fixed else None
    given = format_options or {}
    unknown = set(given) - {fmt.name for fmt in formats}
    if unknown:
        raise InvalidArgumentError(f"format_options for {', '.join(sorted(unknown))}, which this conversion does not write")
    planned = tuple(FormatPlan(fmt.name, fmt.parse_options(dict(given.get(fmt.name, {})))) for fmt in formats)
    kind = resolve_target(target, dense=dense, mask_mode=mask_mode, mask_pad_value=mask_pad_value)
    kind.check_formats(formats)
    return planned, image, kind


def _formats(format: str | Sequence[str]) -> list[Format]:
    names = [name.strip() for name in format.split(",")] if isinstance(format, str) else list(format)
    if not names or len(set(names)) != len(names):
        raise InvalidArgumentError(f"give one or more distinct formats, got {format!r}")
    return [get_format(name) for name in names]


def _check_positive(name: str, value: Any, *, zero_ok: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if zero_ok else 1):
        raise InvalidArgumentError(f"{name} must be a {'non-negative' if zero_ok else 'positive'} integer, got {value!r}")
