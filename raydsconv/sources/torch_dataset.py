"""Any map-style ``torch.utils.data.Dataset`` whose items are ``(image, target)``: the image a PIL
image, an (H, W[, C]) array or a (C, H, W) tensor, the target a class index, or with dense labels a
mask (PIL image, array or tensor; see raydsconv.masks). Candidates are the
dataset's indices in order; each worker reads its own items. Class names come from the dataset's
``classes``, ``class_to_idx`` or ``categories`` when it has one of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from raydsconv.errors import InvalidArgumentError
from raydsconv.sources.listing import Listing


@dataclass
class TorchDatasetLoader:
    dataset: Any

    def read(self, row: dict) -> tuple[Any, Any]:
        item = self.dataset[int(row["path"])]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise TypeError(f"item {row['path']} is a {type(item).__name__}, not an (image, target) pair")
        return item[0], item[1]


def class_names(dataset: Any) -> list[str]:
    classes = getattr(dataset, "classes", None)
    if classes:
        return [str(name) for name in classes]
    class_to_idx = getattr(dataset, "class_to_idx", None)
    if class_to_idx:
        return [str(name) for name, _ in sorted(class_to_idx.items(), key=lambda item: item[1])]
    categories = getattr(dataset, "categories", None)
    return [str(name) for name in categories] if categories else []


def list_torch_dataset(dataset: Any, *, dense: bool = False) -> Listing:
    try:
        count = len(dataset)
    except TypeError:
        raise InvalidArgumentError(
            f"{type(dataset).__name__} has no len(); give a map-style torch Dataset (iterable datasets are not supported)"
        ) from None
    if count == 0:
        raise InvalidArgumentError(f"the {type(dataset).__name__} given as source is empty")
    return Listing(
        classes=class_names(dataset),
        paths=[str(i) for i in range(count)],
        labels=np.full(count, -1, dtype=np.int64),  # class labels: set by the workers from each item's target
        loader=TorchDatasetLoader(dataset),
        description={"kind": "torch_dataset", "type": f"{type(dataset).__module__}.{type(dataset).__qualname__}",
                     "num_candidates": count},
        labels_from_items=not dense,
    )
