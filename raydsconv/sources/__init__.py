"""Where samples come from. A source lists its candidates cheaply on the driver (no decoding) and
hands the pipeline a picklable loader that reads one candidate's bytes inside a worker."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

from raydsconv.errors import InvalidArgumentError
from raydsconv.targets import ClassLabel, Mask, NoTarget, TargetKind
from raydsconv.sources.files import LabelsTable, list_labeled_files, list_unlabeled_folder
from raydsconv.sources.listing import Listing, Skipped
from raydsconv.sources.segmentation import SegmentationFolder, list_segmentation_folder


def list_source(source: Any, *, root_in_archive: str | None = None, target: TargetKind | None = None,
                labels: LabelsTable | None = None) -> Listing:
    """Dispatch on what the user passed and on the target kind: an image folder (one sub-folder per
    class), a tar archive of one (``root_in_archive`` picks a folder inside it), a torch Dataset; for
    masks a SegmentationFolder (a plain path is one); for unlabeled images, or with a ``labels``
    table, a folder of images without class sub-folders."""
    target = target or ClassLabel()
    if labels is not None and not isinstance(target, ClassLabel):
        raise InvalidArgumentError(f"a labels table gives class labels, not targets of kind {target.name!r}")
    if isinstance(source, SegmentationFolder):
        if not isinstance(target, Mask):
            raise InvalidArgumentError(f"a SegmentationFolder gives masks, not targets of kind {target.name!r}")
        return list_segmentation_folder(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise InvalidArgumentError(f"source {str(path)!r} does not exist")
        if path.is_dir():
            return _list_folder(path, target, labels)
        if tarfile.is_tarfile(path):
            if labels is not None or not isinstance(target, ClassLabel):
                what = "a labels table is" if labels is not None else f"targets of kind {target.name!r} are"
                raise InvalidArgumentError(f"source {str(path)!r}: {what} not supported from a tar archive; "
                                           "extract it, or give a torch Dataset")
            from raydsconv.sources.archive import list_tar_archive

            return list_tar_archive(path, root_in_archive)
        raise InvalidArgumentError(
            f"source {str(path)!r} is a file but not a tar archive; give an image folder with one sub-folder "
            "per class, or a tar of one"
        )
    if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        if labels is not None:
            raise InvalidArgumentError("a labels table labels the files of a folder; a torch Dataset gives its own targets")
        from raydsconv.sources.torch_dataset import list_torch_dataset

        return list_torch_dataset(source, target=target)
    raise InvalidArgumentError(
        f"unsupported source {type(source).__name__}; give the path of an image folder or a map-style torch Dataset"
    )


def _list_folder(path: Path, target: TargetKind, labels: LabelsTable | None) -> Listing:
    if isinstance(target, Mask):
        return list_segmentation_folder(SegmentationFolder(path))
    if labels is not None:
        return list_labeled_files(path, labels)
    if isinstance(target, NoTarget):
        return list_unlabeled_folder(path)
    if not isinstance(target, ClassLabel):
        raise InvalidArgumentError(f"targets of kind {target.name!r} come from a torch Dataset of (image, target) "
                                   f"items, not from a folder")
    from raydsconv.sources.folder import list_image_folder

    return list_image_folder(path)


__all__ = ["LabelsTable", "Listing", "SegmentationFolder", "Skipped", "list_source"]
