"""The format registry: a new format is one module plus one entry here."""

from __future__ import annotations

from raydsconv.errors import UnsupportedFormatError
from raydsconv.formats.base import Format, ShardReader, ShardWriter
from raydsconv.formats.hdf5 import HDF5
from raydsconv.formats.ipc import IPC
from raydsconv.formats.memmap import MEMMAP
from raydsconv.formats.parquet import PARQUET
from raydsconv.formats.tar import TAR

FORMATS: dict[str, Format] = {fmt.name: fmt for fmt in (MEMMAP, HDF5, PARQUET, IPC, TAR)}


def register(fmt: Format) -> Format:
    """Add a format (see docs/extending.md); a name already taken is refused."""
    from raydsconv.errors import InvalidArgumentError

    if fmt.name in FORMATS and FORMATS[fmt.name] is not fmt:
        raise InvalidArgumentError(f"a format named {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise UnsupportedFormatError(
            f"unknown format {name!r}; available: {', '.join(sorted(FORMATS))}"
        ) from None


__all__ = ["FORMATS", "Format", "ShardReader", "ShardWriter", "get_format", "register"]
