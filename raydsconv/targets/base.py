"""What a sample carries besides its image: a target kind, and the fields it stores.

A ``TargetKind`` owns, in one place, everything about one kind of target:

* ``fields``: the named values stored per sample. Formats store fields, whatever the kind: an
  *array* field has one dtype and shape per sample (a class label, a mask's pixels, a multi-hot
  vector); an *encoded* field is a file's bytes (a mask's PNG, kept by flexible-size formats).
* ``prepare``: in a worker, the field values of one sample from the target its source gave.
* ``targets`` / ``stacked`` / ``ray_columns``: what readers hand out, made from the stored fields.
* ``params`` / ``from_params``: how the kind is recorded in a dataset's manifest and found again.

In a batch travelling from ``prepare`` to the writers, an array field is the column of its name;
an encoded field is ``{name}_data`` (bytes) with ``{name}_extension`` (its file extension).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from raydsconv.images import ImageSpec

ENCODED = "encoded"  # the dtype of an encoded field: a file's bytes


@dataclass(frozen=True)
class Field:
    """One value stored per sample beside its image.

    name: the Arrow column and batch column (``label``, ``mask``).
    dtype: numpy dtype of an array field, or ``ENCODED`` for a file's bytes.
    shape: one sample's shape (``()`` for a scalar).
    stored_name: memmap's file stem and HDF5's dataset name (default: ``name``).
    member: the tar member's suffix, ``{key}.{member}`` (default: ``name``); encoded fields add their
        file extension, array fields ``.npy`` (a scalar ``indexed`` one is written as text).
    indexed: the value is the sample's class label, also kept in the index's ``label`` column.
    feature: its Hugging Face ``datasets`` feature in Arrow formats' metadata (None: from the dtype).
    """

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    stored_name: str = ""
    member: str = ""
    indexed: bool = False
    feature: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def encoded(self) -> bool:
        return self.dtype == ENCODED

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(object) if self.encoded else np.dtype(self.dtype)

    @property
    def file_stem(self) -> str:
        return self.stored_name or self.name

    @property
    def member_suffix(self) -> str:
        return self.member or self.name

    @property
    def data_column(self) -> str:
        """Its column in a pipeline batch."""
        return f"{self.name}_data" if self.encoded else self.name

    @property
    def extension_column(self) -> str:
        return f"{self.name}_extension"


@dataclass(frozen=True)
class SampleContext:
    """What ``TargetKind.prepare`` knows of the sample whose target it prepares."""

    width: int  # the image's size, as displayed
    height: int
    image: ImageSpec | None  # fixed-size formats are written: images become pixels of this spec
    keep_bytes: bool  # flexible-size formats are written: encoded fields are needed
    max_pixels: int
    num_classes: int | None = None  # class labels of an in-memory source must be below it


class TargetKind(ABC):
    """One kind of target (see the module's docstring). Instances are frozen values, picklable:
    they travel to the workers inside the conversion's job."""

    name: ClassVar[str] = ""
    returns_target: ClassVar[bool] = True  # readers give (image, target); False: the image alone

    def __eq__(self, other: object) -> bool:  # kinds are values: equal when they record the same
        return type(self) is type(other) and self.params(True) == other.params(True)

    def __hash__(self) -> int:
        return hash((type(self), repr(sorted(self.params(True).items()))))

    @abstractmethod
    def fields(self, shape: tuple[int, int] | None) -> tuple[Field, ...]:
        """The fields stored per sample: for a fixed-size format of images ``shape`` (height, width),
        or for a flexible-size one (``shape`` None)."""

    def params(self, fixed_size: bool) -> dict[str, Any]:
        """What a dataset's manifest records of the kind (its ``params``), enough for ``from_params``."""
        return {"target": self.name}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "TargetKind":
        return cls()

    def to_plan(self) -> dict[str, Any]:
        """The kind in a conversion plan: what decides the output."""
        return self.params(fixed_size=True)

    def check_formats(self, formats: list[Any]) -> None:
        """Refuse formats that cannot store this kind (raise InvalidArgumentError)."""
        from raydsconv.errors import InvalidArgumentError

        for fmt in formats:
            if fmt.targets is not None and self.name not in fmt.targets:
                raise InvalidArgumentError(f"format {fmt.name!r} cannot store targets of kind {self.name!r} "
                                           f"(it stores {', '.join(fmt.targets)})")

    # conversion, in a worker
    @abstractmethod
    def prepare(self, target: Any, context: SampleContext) -> dict[str, Any]:
        """The batch columns of one sample from the target its source gave (None for file sources,
        whose class labels come from the listing); raise ``raydsconv.images.BadImage`` to skip it."""

    def describe(self, values: dict[str, Any], classes: list[str]) -> dict[str, Any]:
        """Entries of the sample's ``.json`` member in tar shards, from its batch columns."""
        return {}

    # reading
    def targets(self, fields: dict[str, Any], decoder: Any) -> list[Any]:
        """One target per sample of a batch of stored fields (by name: arrays, or lists of bytes).
        By default a kind of one field gives its values; others override this."""
        (values,) = fields.values()
        return list(values)

    def stacked(self, fields: dict[str, Any], decoder: Any) -> Any | None:
        """The batch's targets as one value for ``raydsconv.collate`` (None: no such form)."""
        return None

    def ray_columns(self, fields: dict[str, Any], decoder: Any, decode: bool) -> dict[str, Any]:
        """The Ray Data columns of a block besides ``image``: by default the fields as stored."""
        return dict(fields)


def empty_columns(fields: tuple[Field, ...], count: int) -> dict[str, np.ndarray]:
    """Batch columns for ``count`` samples of these fields, to be filled in."""
    columns: dict[str, np.ndarray] = {}
    for item in fields:
        if item.encoded:
            columns[item.data_column] = np.full(count, b"", dtype=object)
            columns[item.extension_column] = np.full(count, "", dtype=object)
        else:
            columns[item.name] = np.zeros((count, *item.shape), dtype=item.dtype)
    return columns
