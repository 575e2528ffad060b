"""Where samples come from. A source lists its candidates cheaply on the driver (no decoding) and
hands the pipeline a picklable loader that reads one candidate's bytes inside a worker."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

from raydsconv.errors import InvalidArgumentError
from raydsconv.sources.listing import Listing, Skipped
from raydsconv.sources.segmentation import SegmentationFolder, list_segmentation_folder


def list_source(source: Any, *, root_in_archive: str | None = None, dense: bool = False) -> Listing:
    """Dispatch on what the user passed: an image folder (one sub-folder per class), a tar archive of
    one (``root_in_archive`` picks a folder inside it), a torch Dataset, or for dense labels a
    SegmentationFolder (a plain path with ``dense=True`` is one)."""
    if isinstance(source, SegmentationFolder):
        return list_segmentation_folder(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise InvalidArgumentError(f"source {str(path)!r} does not exist")
        if path.is_dir():
            if dense:
                return list_segmentation_folder(SegmentationFolder(path))
            from raydsconv.sources.folder import list_image_folder

            return list_image_folder(path)
        if tarfile.is_tarfile(path):
            if dense:
                raise InvalidArgumentError(f"source {str(path)!r}: dense labels from a tar archive are not supported; "
                                           "extract it, or give a torch Dataset of (image, mask)")
            from raydsconv.sources.archive import list_tar_archive

            return list_tar_archive(path, root_in_archive)
        raise InvalidArgumentError(
            f"source {str(path)!r} is a file but not a tar archive; give an image folder with one sub-folder "
            "per class, or a tar of one"
        )
    if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        from raydsconv.sources.torch_dataset import list_torch_dataset

        return list_torch_dataset(source, dense=dense)
    raise InvalidArgumentError(
        f"unsupported source {type(source).__name__}; give the path of an image folder or a map-style torch Dataset"
    )


__all__ = ["Listing", "SegmentationFolder", "Skipped", "list_source"]
