"""A generator of datasets as hpc_pytorch_loader, raydsconv's predecessor, writes them (its layout as
measured on its output; see raydsconv.migration), for the migration tests. Not the predecessor's code:
each format is written from the facts of its layout alone.

``write_predecessor(root, "memmap", ...)`` returns what was stored, sample by sample, to compare a
migrated dataset against: images (arrays, or encoded bytes), labels, masks.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from raydsconv.samples import jpeg_bytes, photo_like

CLASSES = ("cat", "dog", "eel")
SIZES = ((24, 16), (16, 24), (20, 20))  # (width, height) of the flexible formats' JPEGs
# Variants: parquet "columns" (its v2: one row, a column per image) or "rows" (v1: one column, a row
# per image); pyarrow_ipc "columns" or "batches" (image_data / label, one row per record batch).
DEFAULT_VARIANT = {"parquet": "columns", "pyarrow_ipc": "columns"}


@dataclass
class Written:
    """What the predecessor's dataset holds, in sample order."""

    format: str
    images: list[Any] = field(default_factory=list)  # (H, W[, C]) uint8 arrays, or encoded bytes
    labels: list[int] = field(default_factory=list)  # class labels; empty with masks
    masks: list[Any] = field(default_factory=list)  # mask arrays, or encoded bytes (PNG)
    mask_arrays: list[np.ndarray] = field(default_factory=list)  # the masks' values, either way


def write_predecessor(root: Path, format: str, *, num_images: int = 7, images_per_file: int = 3,
                      shape: tuple[int, int] = (6, 6), mode: str = "RGB", dense: bool = False,
                      variant: str | None = None, seed: int = 0) -> Written:
    """Write ``num_images`` samples in hpc_pytorch_loader's ``format`` layout at ``root``."""
    rng = np.random.default_rng(seed)
    fixed = format in ("memmap", "hdf5")
    written = Written(format)
    for i in range(num_images):
        if fixed:
            written.images.append(rng.integers(0, 256, size=(*shape, 3) if mode == "RGB" else shape, dtype=np.uint8))
        else:
            width, height = SIZES[i % len(SIZES)]
            written.images.append(jpeg_bytes(photo_like(rng, width, height), quality=75))  # its re-encodes
        if dense:
            mask_shape = written.images[-1].shape if fixed else (SIZES[i % len(SIZES)][1], SIZES[i % len(SIZES)][0])
            values = rng.integers(0, 4, size=mask_shape, dtype=np.uint8)
            written.mask_arrays.append(values)
            written.masks.append(values if fixed else _png(values))
        else:
            written.labels.append(int(rng.integers(0, len(CLASSES))))
    for folder in ("metadata", "images", "labels"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    metadata = {"num_images_per_array": images_per_file, "len": num_images,
                "len_last_array": num_images % images_per_file,
                "total_num_arrays": -(-num_images // images_per_file)}
    if fixed:
        metadata.update(mode=mode, shape=list(shape))
    (root / "metadata" / "metadata.json").write_text(json.dumps(metadata))
    if not dense:  # as for VOCSegmentation, which has no class_to_idx
        (root / "metadata" / "class_to_integer_mapping.json").write_text(json.dumps({c: i for i, c in enumerate(CLASSES)}))
    targets = written.masks if dense else written.labels
    writer = WRITERS[format]
    for shard, start in enumerate(range(0, num_images, images_per_file)):
        stop = min(start + images_per_file, num_images)
        writer(root, shard, written.images[start:stop], targets[start:stop],
               variant or DEFAULT_VARIANT.get(format, ""))
    return written


def _png(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def _memmap(root: Path, shard: int, images: list, targets: list, variant: str) -> None:
    """Raw bytes without any header, under a .npy name; labels int64, masks uint8."""
    (root / "images" / f"images_{shard}.npy").write_bytes(np.stack(images).tobytes())
    labels = np.stack(targets) if isinstance(targets[0], np.ndarray) else np.asarray(targets, dtype=np.int64)
    (root / "labels" / f"labels_{shard}.npy").write_bytes(labels.tobytes())


def _hdf5(root: Path, shard: int, images: list, targets: list, variant: str) -> None:
    import h5py

    with h5py.File(root / "images" / f"images_{shard}.h5", "w") as file:
        file.create_dataset("images", data=np.stack(images))
    labels = np.stack(targets) if isinstance(targets[0], np.ndarray) else np.asarray(targets, dtype=np.int64)
    with h5py.File(root / "labels" / f"labels_{shard}.h5", "w") as file:
        file.create_dataset("labels", data=labels)


def _arrow_table(values: list, kind: Any, variant: str, column: str):
    import pyarrow as pa

    if variant == "columns":  # one row, one column per sample "0" ... "n-1"
        return pa.Table.from_arrays([pa.array([value], type=kind) for value in values],
                                    names=[str(i) for i in range(len(values))])
    return pa.table({column: pa.array(values, type=kind)})  # one column, one row per sample


def _parquet(root: Path, shard: int, images: list, targets: list, variant: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(_arrow_table(images, pa.binary(), variant, "images"), root / "images" / f"images_{shard}.parquet")
    pq.write_table(_arrow_table(targets, pa.int64(), variant, "labels"), root / "labels" / f"labels_{shard}.parquet")


def _ipc(root: Path, shard: int, images: list, targets: list, variant: str) -> None:
    """Arrow IPC files named .parquet; the "batches" variant writes one row per record batch, and
    dense labels as binary (encoded masks)."""
    import pyarrow as pa

    kind = pa.binary() if isinstance(targets[0], bytes) else pa.int64()
    for folder, name, values, value_type, column in (("images", "images", images, pa.binary(), "image_data"),
                                                     ("labels", "labels", targets, kind, "label")):
        table = _arrow_table(values, value_type, variant, column)
        with pa.OSFile(str(root / folder / f"{name}_{shard}.parquet"), "wb") as sink:
            with pa.ipc.new_file(sink, table.schema) as writer:
                for batch in table.to_batches(max_chunksize=1 if variant == "batches" else None):
                    writer.write_batch(batch)


def _tar(root: Path, shard: int, images: list, targets: list, variant: str) -> None:
    with tarfile.open(root / "images" / f"images_{shard}.tar", "w") as tar:
        for i, data in enumerate(images):
            info = tarfile.TarInfo(f"image_{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / "labels" / f"labels_{shard}.json").write_text(json.dumps(targets))


WRITERS = {"memmap": _memmap, "hdf5": _hdf5, "parquet": _parquet, "pyarrow_ipc": _ipc, "tar": _tar}
