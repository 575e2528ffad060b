"""``raydsconv migrate OLD NEW``: turn a dataset written by hpc_pytorch_loader, raydsconv's predecessor,
into a raydsconv dataset, without decoding where possible. No Ray.

The predecessor's layout (what its converters write)::

    OLD/metadata/metadata.json                  {"num_images_per_array", "len", "len_last_array",
                                                 "total_num_arrays"}, plus "mode" and "shape" (fixed-size)
    OLD/metadata/class_to_integer_mapping.json  {class: index} (or {index: class}; absent for some datasets)
    OLD/images/images_{k}.EXT, OLD/labels/labels_{k}.EXT    k = 0, 1, ... (not zero-padded)

- memmap: raw uint8 without a header, (n, shape[0], shape[1][, C]); labels raw int64, or with dense
  labels raw uint8 masks of the image's shape.
- hdf5: ``images_{k}.h5`` with dataset ``images``, ``labels_{k}.h5`` with dataset ``labels``.
- parquet: one row with a binary column per image named "0" ... "n-1" (labels alike, int64), or
  (its v1) one column with a row per image.
- pyarrow_ipc: Arrow IPC files named ``.parquet``, in either of those layouts (a single column
  ``image_data`` / ``label`` with a row per record batch, labels binary masks with dense labels).
- tar: ``images_{k}.tar`` with members ``image_0`` ... (encoded images, no extension);
  ``labels_{k}.json`` a JSON list of ints.

Shard k stays shard k, in the same format family: memmap -> memmap (the raw bytes behind a real
``.npy`` header, streamed), hdf5 -> hdf5 (datasets copied, ``dataset.h5`` written), parquet / pyarrow_ipc
-> parquet / ipc, tar -> tar (the stored image bytes unchanged: they are the predecessor's re-encodes,
JPEGs at quality 75, which the manifest's ``source`` notes; only their headers are read, for width,
height and format; one that does not parse is skipped with the reason). The old layout records no
source paths, so the index's ``path`` is ``images_{k}/{i}``: row i of the predecessor's shard k; and
no original sizes, so fixed-size samples record their stored size, format ``unknown``.

Shards are written by the formats' own ShardWriters (temporary names, sha256 while writing) and the
dataset-level files by commit's ``write_dataset``, into ``NEW/.raydsconv/build``, swapped in at the end
(manifest last), as an overwriting conversion is: a failed migration leaves NEW as it was.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tarfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from raydsconv import layout
from raydsconv.errors import InvalidArgumentError, ManifestError, writing
from raydsconv.formats import FORMATS, Format, get_format
from raydsconv.manifest import Manifest

logger = logging.getLogger(__name__)

PREDECESSOR = "hpc_pytorch_loader"
METADATA = Path("metadata") / "metadata.json"
CLASSES = Path("metadata") / "class_to_integer_mapping.json"
# The predecessor's format -> (suffix of its image files, of its label files, raydsconv's format)
LAYOUTS = {
    "memmap": (".npy", ".npy", "memmap"),
    "hdf5": (".h5", ".h5", "hdf5"),
    "parquet": (".parquet", ".parquet", "parquet"),
    "pyarrow_ipc": (".parquet", ".parquet", "ipc"),
    "tar": (".tar", ".json", "tar"),
}
ARROW_MAGIC = b"ARROW1"  # an Arrow IPC file begins with it; a Parquet file with b"PAR1"
BATCH_ROWS = 256  # rows handed to a shard writer at once: memory stays bounded by a batch (fixed-size)
REENCODED = "images are the predecessor's JPEG quality-75 re-encodes, not the original files"


def predecessor_layout(path: str | Path) -> str | None:
    """Which of hpc_pytorch_loader's formats wrote the dataset at ``path`` ("memmap", "hdf5",
    "parquet", "pyarrow_ipc", "tar", or "unknown" when its first shard is missing), or None when
    ``path`` is not such a dataset. Cheap: a few stats and, for ``.parquet`` files, 6 bytes read."""
    root = Path(path)
    if not (root / METADATA).is_file():
        return None
    for suffix, name in ((".npy", "memmap"), (".h5", "hdf5"), (".tar", "tar"), (".parquet", "parquet")):
        first = root / "images" / f"images_0{suffix}"
        if first.is_file():
            if suffix != ".parquet":
                return name
            with contextlib.suppress(OSError), open(first, "rb") as file:  # IPC files named .parquet
                return "pyarrow_ipc" if file.read(len(ARROW_MAGIC)) == ARROW_MAGIC else "parquet"
    return "unknown"


def predecessor_hint(path: str | Path) -> str | None:
    """The one-line error for opening a predecessor's dataset as ours, or None if ``path`` is not one."""
    found = predecessor_layout(path)
    if found is None:
        return None
    return (f"{path}: a dataset written by {PREDECESSOR} ({found} layout); convert it once with "
            f"`raydsconv migrate {path} NEW` (or raydsconv.migrate(OLD, NEW))")


@dataclass(frozen=True)
class Predecessor:
    """A dataset hpc_pytorch_loader wrote, as its metadata describes it."""

    root: Path
    format: str  # the predecessor's name: memmap, hdf5, parquet, pyarrow_ipc, tar
    images_per_file: int
    counts: list[int]  # samples per shard
    classes: list[str]
    mode: str | None = None  # fixed-size formats: "RGB" or "L", and (height, width)
    shape: tuple[int, int] | None = None
    mask_mode: str | None = None  # dense labels: raydsconv's mask_mode; None: class labels

    @property
    def mask_spec(self) -> Any:
        from raydsconv.masks import MaskSpec

        return MaskSpec(self.mask_mode)

    @property
    def target(self) -> Format:
        return get_format(LAYOUTS[self.format][2])

    @property
    def row_shape(self) -> tuple[int, ...]:
        return (*self.shape, 3) if self.mode == "RGB" else tuple(self.shape)

    def images(self, shard: int) -> Path:
        return self.root / "images" / f"images_{shard}{LAYOUTS[self.format][0]}"

    def labels(self, shard: int) -> Path:
        return self.root / "labels" / f"labels_{shard}{LAYOUTS[self.format][1]}"


def read_predecessor(path: str | Path) -> Predecessor:
    """The predecessor's dataset at ``path``, checked: metadata, every shard file present, the kind
    of labels; raises ManifestError naming the file at fault."""
    root = Path(path)
    found = predecessor_layout(root)
    if found is None:
        raise ManifestError(f"{root}: not a dataset written by {PREDECESSOR} (it has no {METADATA})")
    if found == "unknown":
        raise ManifestError(f"{root / 'images'}: no images_0.npy, .h5, .parquet or .tar; cannot tell which "
                            f"{PREDECESSOR} format wrote {root}")
    metadata = _read_metadata(root / METADATA, fixed=found in ("memmap", "hdf5"))
    old = Predecessor(root, found, metadata["images_per_file"], metadata["counts"], _read_classes(root / CLASSES),
                      metadata.get("mode"), metadata.get("shape"))
    for shard in range(len(old.counts)):
        for file in (old.images(shard), old.labels(shard)):
            if not file.is_file():
                raise ManifestError(f"{file}: missing; {METADATA} lists {len(old.counts)} shards, the "
                                    f"{PREDECESSOR} dataset is incomplete")
    with _reading(old.labels(0)):
        return replace(old, mask_mode=_mask_mode(old))


def _read_metadata(path: Path, *, fixed: bool) -> dict[str, Any]:
    """Samples per shard from ``len`` and ``num_images_per_array``. ``total_num_arrays`` is not
    trusted: a distributed conversion's rank 0 records it without the last, partial shard."""
    try:
        data = json.loads(path.read_text())
        per, total, last = (int(data[key]) for key in ("num_images_per_array", "len", "len_last_array"))
        extra = {"mode": str(data["mode"]), "shape": (int(data["shape"][0]), int(data["shape"][1]))} if fixed else {}
    except (OSError, ValueError) as error:
        raise ManifestError(f"{path}: cannot be read ({error})") from None
    except (KeyError, TypeError, IndexError) as error:
        raise ManifestError(f"{path}: missing or malformed field {error}") from None
    if per <= 0 or total <= 0 or last != total % per:
        raise ManifestError(f"{path}: inconsistent counts (num_images_per_array {per}, len {total}, "
                            f"len_last_array {last}); nothing to migrate")
    if fixed and extra["mode"] not in ("RGB", "L"):
        raise InvalidArgumentError(f"{path}: mode {extra['mode']!r}; raydsconv stores RGB or L images, "
                                   "so this dataset cannot be migrated (convert the source images again)")
    return {"images_per_file": per, "counts": [min(per, total - start) for start in range(0, total, per)], **extra}


def _read_classes(path: Path) -> list[str]:
    """Class names in index order; [] when the predecessor wrote none (they are then named by index).
    {class: index} as ImageFolder's; {index: name} as written for datasets with ``categories``."""
    if not path.is_file():
        return []
    try:
        mapping = json.loads(path.read_text())
        if all(isinstance(value, int) for value in mapping.values()):
            by_index = {value: str(name) for name, value in mapping.items()}
        else:
            by_index = {int(index): str(name) for index, name in mapping.items()}
    except (OSError, ValueError, AttributeError) as error:
        raise ManifestError(f"{path}: cannot be read as a class mapping ({error})") from None
    if sorted(by_index) != list(range(len(by_index))):
        raise ManifestError(f"{path}: class indices are not 0..{len(by_index) - 1}")
    return [by_index[index] for index in range(len(by_index))]


def _mask_mode(old: Predecessor) -> str | None:
    """raydsconv's mask_mode for the masks the predecessor stored in place of labels; None for labels."""
    labels = old.labels(0)
    if old.format == "memmap":  # raw files: the size tells labels (int64) from masks (the image's shape)
        size, count = labels.stat().st_size, old.counts[0]
        if size == count * np.dtype(np.int64).itemsize:
            return None
        if size == count * int(np.prod(old.row_shape)):
            return "RGB" if old.mode == "RGB" else "L"
        raise ManifestError(f"{labels}: {size} bytes, neither {count} int64 labels nor {count} masks of "
                            f"shape {list(old.row_shape)}; the file is damaged")
    if old.format == "hdf5":
        import h5py

        with h5py.File(labels, "r") as file:
            dataset = file["labels"]
            return _array_mask_mode(labels, dataset.shape[1:], dataset.dtype, old.shape) if dataset.ndim > 1 else None
    if old.format in ("parquet", "pyarrow_ipc"):
        first = _arrow_values(labels)[0]
        return _image_mask_mode(first) if isinstance(first, bytes) else None
    return None  # tar: labels are a JSON list of ints


def _array_mask_mode(path: Path, row_shape: tuple[int, ...], dtype: np.dtype, shape: tuple[int, int]) -> str:
    """Masks stored as arrays: class maps (uint8, or uint16) or colours (uint8, 3 channels)."""
    modes = {(2, np.dtype(np.uint8)): "L", (2, np.dtype(np.uint16)): "I;16", (3, np.dtype(np.uint8)): "RGB"}
    mode = modes.get((len(row_shape), np.dtype(dtype)))
    if mode is None or tuple(row_shape[:2]) != tuple(shape) or (mode == "RGB" and row_shape[2] != 3):
        raise ManifestError(f"{path}: masks of {dtype}{list(row_shape)} do not fit images of shape {list(shape)}")
    return mode


def _image_mask_mode(data: bytes) -> str:
    from PIL import Image

    mode = Image.open(io.BytesIO(data)).mode
    return "RGB" if mode == "RGB" else "I;16" if mode.startswith("I") else "L"


# Reading the predecessor's shards


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Any failure to read one of the predecessor's files names it (h5py, pyarrow, tarfile and json
    raise many kinds, some without the file name)."""
    try:
        yield
    except ManifestError:
        raise
    except Exception as error:
        raise ManifestError(f"{path}: cannot be read as {PREDECESSOR}'s ({type(error).__name__}: {error})") from None


def _arrow_values(path: Path) -> list[Any]:
    """The values of one of the predecessor's Arrow files (Parquet, or Arrow IPC under a .parquet
    name) in sample order: one column with a row per sample, or one row with a column per sample
    named "0" ... "n-1" (sorted as numbers: "10" after "9")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(path, "rb") as file:
        ipc = file.read(len(ARROW_MAGIC)) == ARROW_MAGIC
    if ipc:
        with pa.OSFile(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    else:
        table = pq.read_table(path)
    if table.num_columns == 1:
        return table.column(0).to_pylist()
    if table.num_rows == 1:
        return [table.column(name)[0].as_py() for name in sorted(table.column_names, key=int)]
    raise ManifestError(f"{path}: {table.num_rows} rows of {table.num_columns} columns, neither one column "
                        f"nor one row: not a layout {PREDECESSOR} writes")


def _tar_values(path: Path) -> list[bytes]:
    """The members image_0, image_1, ... in that order (sorted as numbers, not as names)."""
    with tarfile.open(path) as tar:
        members = {member.name: member for member in tar.getmembers() if member.isfile()}
        names = [f"image_{i}" for i in range(len(members))]
        if sorted(names) != sorted(members):
            raise ManifestError(f"{path}: members are not image_0 ... image_{len(names) - 1}")
        return [tar.extractfile(members[name]).read() for name in names]


def _flexible_shard(old: Predecessor, shard: int) -> tuple[list[bytes], list[Any]]:
    """The stored image bytes of one shard, and its labels (ints) or masks (bytes), counted."""
    path = old.images(shard)
    with _reading(path):
        images = _tar_values(path) if old.format == "tar" else _arrow_values(path)
        if not all(isinstance(image, bytes) for image in images):
            raise ManifestError(f"{path}: holds values that are not encoded images")
    path = old.labels(shard)
    with _reading(path):
        targets = json.loads(path.read_text()) if old.format == "tar" else _arrow_values(path)
        if not old.mask_mode:
            targets = [int(label) for label in targets]
        elif not all(isinstance(mask, bytes) for mask in targets):
            raise ManifestError(f"{path}: holds values that are not encoded masks")
    for path, values in ((old.images(shard), images), (old.labels(shard), targets)):
        if len(values) != old.counts[shard]:
            raise ManifestError(f"{path}: holds {len(values)} samples, {METADATA} says {old.counts[shard]}")
    return images, targets


@contextlib.contextmanager
def _fixed_shard(old: Predecessor, shard: int) -> Iterator[tuple[Any, Any]]:
    """The images and the labels (or masks) of one shard as arrays that slice lazily: memory maps of
    the raw memmap files, or the HDF5 datasets; their shapes and dtypes checked."""
    count = old.counts[shard]
    targets = (old.mask_spec.dtype, (count, *old.mask_spec.array_shape(old.shape))) if old.mask_mode \
        else (np.dtype(np.int64), (count,))
    images = (np.dtype(np.uint8), (count, *old.row_shape))
    if old.format == "memmap":
        yield _raw_array(old.images(shard), *images), _raw_array(old.labels(shard), *targets)
        return
    import h5py

    with contextlib.ExitStack() as stack:
        files = []
        for path in (old.images(shard), old.labels(shard)):
            with _reading(path):
                files.append(stack.enter_context(h5py.File(path, "r")))
        yield (_dataset(old.images(shard), files[0], "images", *images),
               _dataset(old.labels(shard), files[1], "labels", *targets))


def _raw_array(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A headerless file as a read-only memory map, once its size matches ``shape`` exactly."""
    expected = int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise ManifestError(f"{path}: {size} bytes, but {METADATA}'s counts make it {dtype}{list(shape)} "
                            f"({expected} bytes); the file is damaged")
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def _dataset(path: Path, file: Any, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> Any:
    dataset = file.get(name)
    labels = name == "labels" and len(shape) == 1  # any integer type will do: they are stored as int64
    if dataset is None or dataset.shape != shape or not (dataset.dtype == dtype or labels and dataset.dtype.kind in "iu"):
        found = "nothing" if dataset is None else f"{dataset.dtype}{list(dataset.shape)}"
        raise ManifestError(f"{path}: dataset {name!r} holds {found}, {METADATA} makes it {dtype}{list(shape)}")
    return dataset


# Batches for the shard writers (the pipeline's batch layout, see formats.base.ShardWriter)


def _objects(values: list[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)  # np.array would turn equal-length bytes into something else
    array[:] = values
    return array


def _base_batch(shard: int, first: int, rows: range) -> dict[str, np.ndarray]:
    count = len(rows)
    return {
        "candidate": np.arange(first + rows.start, first + rows.stop, dtype=np.int64),
        "path": _objects([f"images_{shard}/{row}" for row in rows]),
        "ok": np.ones(count, dtype=bool),
        "reason": _objects([""] * count),
    }


def _fixed_batches(old: Predecessor, shard: int, first: int) -> Iterator[dict[str, np.ndarray]]:
    height, width = old.shape
    with _fixed_shard(old, shard) as (images, targets):
        for start in range(0, old.counts[shard], BATCH_ROWS):
            rows = range(start, min(start + BATCH_ROWS, old.counts[shard]))
            batch = _base_batch(shard, first, rows)
            count = len(rows)
            batch.update(image=np.asarray(images[rows.start : rows.stop]), width=np.full(count, width, np.int32),
                         height=np.full(count, height, np.int32), source_format=_objects(["unknown"] * count))
            if old.mask_mode:
                batch.update(mask=np.asarray(targets[rows.start : rows.stop]), label=np.full(count, -1, np.int64))
            else:
                batch["label"] = np.asarray(targets[rows.start : rows.stop], dtype=np.int64)
            yield batch


def _flexible_batches(old: Predecessor, shard: int, first: int) -> Iterator[dict[str, np.ndarray]]:
    """The stored bytes with what their headers say (size, format); a sample whose image or mask
    does not parse is marked bad, with the reason."""
    images, targets = _flexible_shard(old, shard)
    for start in range(0, len(images), BATCH_ROWS):
        rows = range(start, min(start + BATCH_ROWS, len(images)))
        batch = _base_batch(shard, first, rows)
        infos = []
        for position, row in enumerate(rows):
            image, mask, reason = _inspected(images[row], targets[row] if old.mask_mode else None)
            infos.append((image, mask))
            batch["ok"][position], batch["reason"][position] = not reason, reason
        batch.update(data=_objects([images[row] for row in rows]),
                     width=np.asarray([image.width if image else 0 for image, _ in infos], np.int32),
                     height=np.asarray([image.height if image else 0 for image, _ in infos], np.int32),
                     source_format=_objects([image.source_format if image else "" for image, _ in infos]),
                     extension=_objects([image.extension if image else "" for image, _ in infos]))
        if old.mask_mode:
            batch.update(mask_data=_objects([targets[row] for row in rows]), label=np.full(len(rows), -1, np.int64),
                         mask_extension=_objects([mask.extension if mask else "" for _, mask in infos]))
        else:
            batch["label"] = np.asarray([targets[row] for row in rows], dtype=np.int64)
        yield batch


def _inspected(image: bytes, mask: bytes | None) -> tuple[Any, Any, str]:
    """(image info, mask info, "") from the headers alone, or (None, None, why not)."""
    from raydsconv.images import BadImage, inspect_image

    try:
        info = inspect_image(image, validation="header", max_pixels=None)
    except BadImage as error:
        return None, None, str(error)
    try:
        return info, (inspect_image(mask, validation="header", max_pixels=None) if mask is not None else None), ""
    except BadImage as error:
        return None, None, f"mask: {error}"


# Writing the new dataset


def _params(old: Predecessor, fmt: Format) -> dict[str, Any]:
    """The manifest's params, as a conversion to ``fmt`` records them (format options at their defaults)."""
    options = fmt.parse_options({})
    params: dict[str, Any] = asdict(options) if options is not None else {}
    if fmt.fixed_size:
        from raydsconv.images import ImageSpec

        spec = ImageSpec(old.shape, old.mode, resize="stretch")  # the predecessor stretched to shape
        params.update(spec.to_dict(), channels=spec.channels, dtype="uint8")
    else:
        params["validation"] = "header"  # the stored bytes were only parsed, not decoded
    if old.mask_mode:
        params.update(dense=True, mask_mode=old.mask_mode)
        if fmt.fixed_size:
            params["mask_pad_value"] = 255
    return params


def _description(old: Predecessor) -> dict[str, Any]:
    description = {"kind": PREDECESSOR, "root": str(old.root), "format": old.format}
    if not old.target.fixed_size:
        description["note"] = REENCODED
    return description


def _write_shards(old: Predecessor, target: Any) -> tuple[list[Any], np.ndarray]:
    """Every shard through the format's writer, as a conversion writes it: (shard records, every
    sample's label, -1 for masks)."""
    from raydsconv.shards import _ShardInProgress  # the conversion's own shard writer: same records, same files

    batches = _fixed_batches if old.target.fixed_size else _flexible_batches
    records, labels = [], []
    first = 0
    for shard, count in enumerate(old.counts):
        progress = _ShardInProgress(shard, (target,), old.classes, strict=False, expected_rows=count)
        try:
            for batch in batches(old, shard, first):
                labels.append(batch["label"])
                progress.add(batch)
            records.append(progress.finish())
        except BaseException:
            progress.abort()
            raise
        logger.info("migrated shard %d of %d", shard + 1, len(old.counts))
        first += count
    return records, np.concatenate(labels)


def _migrate_into(old: Predecessor, root: Path) -> Manifest:
    from raydsconv.commit import skipped_inputs, write_dataset
    from raydsconv.shards import Target
    from raydsconv.sources import Listing

    target = Target(old.target, root, _params(old, old.target))
    records, labels = _write_shards(old, target)
    if not any(len(record.kept) for record in records):
        raise ManifestError(f"{old.root}: none of its {len(labels)} samples could be read; nothing migrated")
    classes = old.classes
    top = int(labels.max())
    if not old.mask_mode and top >= len(classes):
        if classes:
            raise ManifestError(f"{old.root / CLASSES}: names {len(classes)} classes, but a sample has label {top}")
        classes = [str(index) for index in range(top + 1)]  # no class names given: named by index
    paths = [f"images_{shard}/{row}" for shard, count in enumerate(old.counts) for row in range(count)]
    listing = Listing(classes=classes, paths=paths, labels=labels, loader=None, description=_description(old))
    return write_dataset(target, listing, records, skipped_inputs(listing, records),
                         settings={"images_per_file": old.images_per_file}, plan=None)


# The command


@dataclass(frozen=True)
class MigrationReport:
    source: Path
    output: Path
    old_format: str  # the predecessor's format name
    manifest: Manifest
    seconds: float

    @property
    def skipped(self) -> list[dict[str, str]]:
        """Samples left out (their bytes did not parse as an image), with the reason."""
        return self.manifest.skipped

    def summary(self) -> str:
        manifest = self.manifest
        skipped = f", {len(self.skipped)} skipped (see its manifest)" if self.skipped else ""
        size = sum(f.bytes for shard in manifest.shards for f in shard.files.values())
        return (f"migrated {self.source} ({PREDECESSOR} {self.old_format}) to {self.output}: {manifest.format} "
                f"dataset, {manifest.num_samples} samples in {len(manifest.shards)} shards, {size / 1e6:.1f} MB"
                f"{skipped}, {self.seconds:.1f} s")


def migrate(old: str | Path, new: str | Path, *, overwrite: bool = False) -> MigrationReport:
    """Turn the dataset hpc_pytorch_loader wrote at ``old`` into a raydsconv dataset at ``new`` (see
    the module's description); ``old`` is only read. ``new`` must be empty or absent, unless
    ``overwrite``: a raydsconv dataset there is then replaced once the new one is complete."""
    from raydsconv.lock import OutputLock
    from raydsconv.workspace import check_output_path, finish_swap, remove_work_state

    started = time.perf_counter()
    old, new = Path(old).absolute(), Path(new).absolute()
    predecessor = read_predecessor(old)
    if old.resolve().is_relative_to(new.resolve()):  # an overwrite would remove it
        raise InvalidArgumentError(f"output {str(new)!r} would hold the dataset being migrated; choose another one")
    check_output_path(new)
    work = new / layout.WORK_DIR
    with writing(new):
        work.mkdir(parents=True, exist_ok=True)
    try:
        with OutputLock(work / layout.LOCK_NAME):
            build = _build_folder(new, overwrite)
            try:
                manifest = _migrate_into(predecessor, build)
            except BaseException:
                shutil.rmtree(build, ignore_errors=True)
                raise
            finish_swap(new, build, several=False)  # the manifest moves in last
            remove_work_state(new)
    finally:
        with contextlib.suppress(OSError):
            work.rmdir()
    return MigrationReport(old, new, predecessor.format, manifest, time.perf_counter() - started)


def _build_folder(new: Path, overwrite: bool) -> Path:
    """``NEW/.raydsconv/build``, fresh, once ``new`` may take the dataset."""
    from raydsconv.workspace import finish_swap

    build = new / layout.WORK_DIR / layout.BUILD_DIR
    if layout.completion_marker(build, False).exists():
        finish_swap(new, build, several=False)  # a migration interrupted while swapping in: finish it
    shutil.rmtree(build, ignore_errors=True)  # what an interrupted migration left
    present = [entry for entry in new.iterdir() if entry.name != layout.WORK_DIR]
    if present and not overwrite:
        raise InvalidArgumentError(f"output {str(new)!r} is not empty; pass overwrite=True (--overwrite) to "
                                   "replace it, or choose another output")
    if present and not _ours(new, present):
        raise InvalidArgumentError(f"output {str(new)!r} holds files raydsconv did not write; refusing to replace "
                                   "them even with overwrite (empty it yourself or choose another directory)")
    with writing(build):
        build.mkdir(parents=True)
    return build


def _ours(new: Path, present: list[Path]) -> bool:
    """A finished raydsconv dataset (replaced whole, as ``convert --overwrite`` replaces it), or only
    files a raydsconv conversion writes."""
    if layout.completion_marker(new, False).exists() or layout.completion_marker(new, True).exists():
        return True
    ours = layout.ours_pattern([fmt.file_pattern for fmt in FORMATS.values()])
    return all(layout.is_ours(entry, ours) for entry in present)
