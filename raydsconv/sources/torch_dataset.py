"""Any map-style ``torch.utils.data.Dataset`` whose items are ``(image, target)``: the image a PIL
image, an (H, W[, C]) array or a (C, H, W) tensor, the target what its target kind prepares: a class
index, a mask (PIL image, array or tensor; see raydsconv.masks), ...; for unlabeled images (target
``none``) an item may be the image alone. Candidates are the
dataset's indices in order; each worker reads its own items. Class names come from the dataset's
``classes``, ``class_to_idx`` or ``categories`` when it has one of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from raydsconv.errors import InvalidArgumentError
from raydsconv.masks import MaskSpec
from raydsconv.targets import ClassLabel, NoTarget, TargetKind
from raydsconv.sources.listing import Listing


@dataclass
class TorchDatasetLoader:
    dataset: Any
    images_alone: bool = False  # unlabeled: an item may be the image alone (a pair's target is ignored)

    def read(self, row: dict) -> tuple[Any, Any]:
        item = self.dataset[int(row["path"])]
        if isinstance(item, (tuple, list)) and len(item) >= 2:
            return item[0], None if self.images_alone else item[1]
        if self.images_alone:
            return item, None
        raise TypeError(f"item {row['path']} is a {type(item).__name__}, not an (image, target) pair")


def class_names(dataset: Any) -> list[str]:
    classes = getattr(dataset, "classes", None)
    if classes:
        return [str(name) for name in classes]
    class_to_idx = getattr(dataset, "class_to_idx", None)
    if class_to_idx:
        return [str(name) for name, _ in sorted(class_to_idx.items(), key=lambda item: item[1])]
    categories = getattr(dataset, "categories", None)
    return [str(name) for name in categories] if categories else []


def list_torch_dataset(dataset: Any, *, target: TargetKind) -> Listing:
    try:
        count = len(dataset)
    except TypeError:
        raise InvalidArgumentError(
            f"{type(dataset).__name__} has no len(); give a map-style torch Dataset (iterable datasets are not supported)"
        ) from None
    if count == 0:
        raise InvalidArgumentError(f"the {type(dataset).__name__} given as source is empty")
    return Listing(
        paths=[str(i) for i in range(count)],
        labels=np.full(count, -1, dtype=np.int64),  # class labels: set by the workers from each item's target
        classes=[] if isinstance(target, NoTarget) else class_names(dataset),
        loader=TorchDatasetLoader(dataset, images_alone=isinstance(target, NoTarget)),
        description={"kind": "torch_dataset", "type": f"{type(dataset).__module__}.{type(dataset).__qualname__}",
                     "num_candidates": count},
        labels_from_items=isinstance(target, ClassLabel),
    )


def check_masks_untransformed(dataset: Any, mask: MaskSpec) -> None:
    """Refuse, before any work, a dataset of (image, mask) whose masks are made images: the
    predecessor's VOC recipe passes ``ResizeAndConvert((256, 256), "RGB")`` as both ``transform``
    and ``target_transform`` of ``VOCSegmentation``, so every mask comes out an RGB bicubic blend
    of its classes and every sample would be skipped. Looks at the dataset's ``target_transform``
    (torchvision datasets keep it, also inside ``transforms``) and at item 0's mask."""
    for transform in (getattr(dataset, "target_transform", None),
                      getattr(getattr(dataset, "transforms", None), "target_transform", None)):
        resize = _resize_and_convert_in(transform)
        if resize is not None:
            raise InvalidArgumentError(
                f"the {type(dataset).__name__}'s target_transform is {resize!r}: it resizes every mask as an image "
                "(bicubic, blending its classes), so no mask would be a class map; give the dataset neither transform "
                "nor target_transform: raydsconv resizes each image to shape, and its mask with nearest neighbour")
    if mask.mode == "RGB":
        return  # colour-coded masks are RGB images
    try:
        first = dataset[0][1]
    except Exception:  # a bad item 0 is skipped with its reason like any other
        return
    if getattr(first, "mode", None) in ("RGB", "RGBA"):
        raise InvalidArgumentError(
            f"item 0 of the {type(dataset).__name__} has a mask that is an {first.mode} image, not a class map "
            f"(mask_mode {mask.mode!r}); if a target_transform converts or resizes the masks, remove it: raydsconv "
            "resizes masks with nearest neighbour, like their images; for colour-coded masks give mask_mode='RGB'")


def _resize_and_convert_in(transform: Any) -> Any:
    """A ResizeAndConvert that ``transform`` is or composes (torchvision's Compose keeps a list
    ``transforms``), else None. Known by name, so that the predecessor's own class counts too."""
    if type(transform).__name__ == "ResizeAndConvert":
        return transform
    inner = getattr(transform, "transforms", None)
    for part in inner if isinstance(inner, (list, tuple)) else ():
        found = _resize_and_convert_in(part)
        if found is not None:
            return found
    return None
