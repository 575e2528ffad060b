"""Builds and runs the Ray Data plan; the only module that composes Ray Data.

    sample table ──from_arrow (one block per shard)──▶ map_batches(prepare) ──▶ write_datasink(ShardSink)

Ray fuses ``map_batches`` and the write into one task per block, so a shard is read, prepared and
written by a single task, in index order, and pixels never travel through the object store or the
driver. Each task returns only a small record per shard (files, checksums, per-sample metadata).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from raydsconv.errors import ConversionError, InvalidArgumentError, RaydsconvError
from raydsconv.formats import Format
from raydsconv.images import (
    DEFAULT_MAX_PIXELS,
    BadImage,
    ImageInfo,
    ImageSpec,
    as_pil_image,
    class_index,
    encode_png,
    inspect_image,
    oriented,
    prepare_image,
    prepare_pil_image,
)
from raydsconv.manifest import ShardFile
from raydsconv.masks import MaskSpec, check_mask_size, encode_mask, file_extension, mask_array, prepare_mask
from raydsconv.sources import Listing

logger = logging.getLogger(__name__)


@dataclass
class ShardRecord:
    """What one written shard reports back to the driver."""

    shard: int
    files: dict[str, dict[str, ShardFile]]  # format -> role -> file
    kept: np.ndarray  # candidate numbers of the stored samples, in row order
    labels: np.ndarray  # their labels (from the listing, or from the items of an in-memory source)
    width: np.ndarray
    height: np.ndarray
    source_format: list[str]
    index_columns: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # format -> extra columns
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (candidate, reason)
    node: str = ""  # Ray node that wrote the shard (reported, never stored: output is node-independent)


@dataclass(frozen=True)
class Target:
    """One output format of a conversion: where its shards go and its recorded parameters."""

    format: Format
    root: Path
    params: dict[str, Any]


@dataclass(frozen=True)
class Preparation:
    """What the prepare step produces: pixels for fixed-size targets, checked bytes for flexible ones."""

    spec: ImageSpec | None  # None: no fixed-size target
    keep_bytes: bool
    validation: str = "full"
    max_pixels: int = DEFAULT_MAX_PIXELS
    num_classes: int | None = None  # in-memory sources that name their classes: labels must be below
    mask: MaskSpec | None = None  # dense labels: every sample has a mask


def prepare_batch(batch: dict[str, np.ndarray], *, loader: Any, preparation: Preparation) -> dict[str, np.ndarray]:
    """Read and prepare a batch of candidates. Bad inputs are marked (ok=False, reason), not raised."""
    loader = _shipped(loader)
    spec, mask_spec = preparation.spec, preparation.mask
    count = len(batch["path"])
    columns: dict[str, np.ndarray] = {
        "label": np.array(batch["label"], dtype=np.int64),
        "ok": np.zeros(count, dtype=bool),
        "reason": np.full(count, "", dtype=object),
        "width": np.zeros(count, dtype=np.int32),
        "height": np.zeros(count, dtype=np.int32),
        "source_format": np.full(count, "", dtype=object),
        "extension": np.full(count, "", dtype=object),
    }
    if spec is not None:
        columns["image"] = np.zeros((count, *spec.array_shape), dtype=np.uint8)
        if mask_spec is not None:
            columns["mask"] = np.zeros((count, *mask_spec.array_shape(spec.shape)), dtype=mask_spec.dtype)
    if preparation.keep_bytes:
        columns["data"] = np.full(count, b"", dtype=object)
        if mask_spec is not None:
            columns["mask_data"] = np.full(count, b"", dtype=object)
            columns["mask_extension"] = np.full(count, "", dtype=object)
    for i in range(count):
        row = {key: values[i] for key, values in batch.items()}
        try:
            prepared = _prepare_item(_read(loader, row), preparation, mask_name=row.get("mask_path"))
        except BadImage as bad:
            columns["reason"][i] = bad.reason
            continue
        except Exception as error:  # one odd file must never stop the conversion
            columns["reason"][i] = f"unexpected error: {type(error).__name__}: {error}"
            continue
        for name, value in prepared.items():
            columns[name][i] = value
        columns["ok"][i] = True
    return {key: batch[key] for key in ("candidate", "path", "shard")} | columns


def _prepare_item(item: Any, preparation: Preparation, mask_name: str | None = None) -> dict[str, Any]:
    """One sample's prepared values by column. ``item`` is what the loader read: file bytes, or a
    pair (image, target) whose image is file bytes or in memory and whose target is a class index
    or, with dense labels, a mask (file bytes or in memory; ``mask_name`` its file, for reasons)."""
    spec = preparation.spec
    image, target = item if isinstance(item, tuple) else (item, None)
    values: dict[str, Any] = {}
    if isinstance(image, bytes):
        if spec is not None:
            prepared = prepare_image(image, spec)
            values["image"] = prepared.pixels
            info = ImageInfo(prepared.width, prepared.height, prepared.source_format)
        else:
            info = inspect_image(image, validation=preparation.validation, max_pixels=preparation.max_pixels)
        data = image
    else:  # in memory (a torch Dataset): no original bytes, so flexible formats get a lossless PNG
        picture = oriented(as_pil_image(image))  # as displayed: PNG keeps no EXIF orientation
        data = encode_png(picture) if preparation.keep_bytes else b""
        if spec is not None:
            values["image"] = prepare_pil_image(picture, spec).pixels
        info = ImageInfo(picture.width, picture.height, "PNG")
    if preparation.mask is not None:
        try:
            values.update(_prepare_mask(target, info, preparation))
        except BadImage as bad:
            raise BadImage(f"{bad.reason} ({mask_name})" if mask_name else bad.reason) from None
    elif target is not None:
        values["label"] = class_index(target)
        if preparation.num_classes is not None and values["label"] >= preparation.num_classes:
            raise BadImage(f"target {values['label']} is not one of the dataset's {preparation.num_classes} classes")
    if preparation.keep_bytes:
        values["data"] = data
    values.update(width=info.width, height=info.height, source_format=info.source_format, extension=info.extension)
    return values


def _prepare_mask(mask: Any, info: ImageInfo, preparation: Preparation) -> dict[str, Any]:
    """The mask of a sample: resized like its image (fixed), and its bytes (flexible): the original
    file, or a PNG for a mask in memory."""
    array = mask_array(mask, preparation.mask, preparation.max_pixels)
    check_mask_size(array, info.width, info.height)
    values: dict[str, Any] = {}
    if preparation.spec is not None:
        values["mask"] = prepare_mask(array, preparation.spec, preparation.mask)
    if preparation.keep_bytes:
        is_file = isinstance(mask, bytes)
        values["mask_data"] = mask if is_file else encode_mask(array)
        values["mask_extension"] = file_extension(mask) if is_file else "png"
    return values


_SHIPPED: dict[Any, Any] = {}


def _shipped(loader: Any) -> Any:
    """The loader itself, or the one behind an ObjectRef: fetched once per worker process."""
    import ray

    if not isinstance(loader, ray.ObjectRef):
        return loader
    if loader not in _SHIPPED:
        _SHIPPED.clear()  # one conversion at a time: drop the previous source
        _SHIPPED[loader] = ray.get(loader)
    return _SHIPPED[loader]


def _read(loader: Any, row: dict[str, Any]) -> Any:
    try:
        return loader.read(row)
    except OSError as error:
        raise BadImage(f"cannot read file: {error.strerror or error}") from None


class _ShardInProgress:
    def __init__(self, shard: int, targets: list[Target], classes: list[str], strict: bool):
        self.shard = shard
        self.strict = strict
        self.writers: dict[str, Any] = {}
        try:
            for target in targets:
                self.writers[target.format.name] = target.format.writer(target.root, shard, target.params, classes)
        except BaseException:
            self.abort()  # the writers made so far leave no temporary files
            raise
        self.kept: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.width: list[np.ndarray] = []
        self.height: list[np.ndarray] = []
        self.source_format: list[str] = []
        self.skipped: list[tuple[int, str]] = []

    def add(self, batch: dict[str, np.ndarray]) -> None:
        ok = batch["ok"]
        if not ok.all():
            bad = np.flatnonzero(~ok)
            if self.strict:
                first = bad[0]
                raise ConversionError(f"{batch['path'][first]}: {batch['reason'][first]} (strict mode)")
            self.skipped.extend((int(batch["candidate"][i]), str(batch["reason"][i])) for i in bad)
            batch = {key: value[ok] for key, value in batch.items()}
        if len(batch["candidate"]) == 0:
            return
        for writer in self.writers.values():
            writer.add(batch)
        self.kept.append(batch["candidate"].astype(np.int64))
        self.labels.append(batch["label"].astype(np.int64))
        self.width.append(batch["width"])
        self.height.append(batch["height"])
        self.source_format.extend(str(f) for f in batch["source_format"])

    def finish(self) -> ShardRecord:
        files = {name: writer.close() for name, writer in self.writers.items()}

        def joined(parts: list[np.ndarray], dtype) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

        return ShardRecord(
            shard=self.shard,
            files=files,
            kept=joined(self.kept, np.int64),
            labels=joined(self.labels, np.int64),
            width=joined(self.width, np.int32),
            height=joined(self.height, np.int32),
            source_format=self.source_format,
            index_columns={name: writer.index_columns() for name, writer in self.writers.items()},
            skipped=self.skipped,
        )

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()


def _make_sink(targets: list[Target], classes: list[str], strict: bool):
    from ray.data.block import BlockAccessor
    from ray.data.datasource import Datasink

    class ShardSink(Datasink):
        """Writes the shards of the blocks a task receives; a shard never spans two tasks because
        one input block holds one whole shard and Ray fuses prepare + write into that task."""

        def __init__(self) -> None:
            self.records: list[ShardRecord] = []

        def write(self, blocks: Iterable[Any], ctx: Any) -> list[ShardRecord]:
            import ray

            node = ray.get_runtime_context().get_node_id()
            records: list[ShardRecord] = []
            current: _ShardInProgress | None = None
            try:
                for block in blocks:
                    batch = BlockAccessor.for_block(block).to_numpy()
                    shards = batch["shard"]
                    starts = [0, *(np.flatnonzero(np.diff(shards)) + 1).tolist(), len(shards)]
                    for start, stop in zip(starts[:-1], starts[1:]):
                        shard = int(shards[start])
                        if current is None or current.shard != shard:
                            if current is not None:
                                records.append(current.finish())
                                current = None
                            current = _ShardInProgress(shard, targets, classes, strict)
                        current.add({key: value[start:stop] for key, value in batch.items()})
                if current is not None:
                    records.append(current.finish())
                    current = None
                for record in records:
                    record.node = node
            except BaseException:
                if current is not None:
                    current.abort()
                raise
            return records

        def on_write_complete(self, write_result: Any) -> None:
            self.records = [record for returned in write_result.write_returns for record in returned]

        def get_name(self) -> str:
            return "Write" + "".join(t.format.name.capitalize() for t in targets) + "Shards"

    return ShardSink()


def sample_table(listing: Listing, images_per_file: int) -> pa.Table:
    candidate = np.arange(len(listing), dtype=np.int64)
    return pa.table(
        {
            "candidate": candidate,
            "path": pa.array(listing.paths, type=pa.string()),
            "label": listing.labels,
            "shard": candidate // images_per_file,
            **listing.columns,
        }
    )


def run_pipeline(
    listing: Listing,
    targets: list[Target],
    preparation: Preparation,
    *,
    images_per_file: int,
    batch_size: int,
    concurrency: int | None,
    strict: bool,
    progress: bool,
) -> list[ShardRecord]:
    """Convert every candidate of ``listing`` into the shards of every target, in one pass; return
    one record per shard."""
    import ray

    table = sample_table(listing, images_per_file)
    num_shards = -(-len(listing) // images_per_file)
    blocks = [table.slice(shard * images_per_file, images_per_file) for shard in range(num_shards)]
    compute = ray.data.TaskPoolStrategy(size=concurrency)
    try:  # shipped once through the object store, not with every task
        ray.cloudpickle.dumps(listing.loader)
        loader = ray.put(listing.loader)
    except Exception as error:
        raise InvalidArgumentError(
            f"the source cannot be sent to Ray workers ({type(error).__name__}: {error}); make it picklable "
            "(e.g. no open file handles, locks or lambdas holding local state)"
        ) from None
    with _data_context(progress):
        dataset = ray.data.from_arrow(blocks)
    dataset = dataset.map_batches(
        prepare_batch,
        fn_kwargs={"loader": loader, "preparation": preparation},
        batch_size=batch_size,
        batch_format="numpy",
        compute=compute,
    )
    sink = _make_sink(targets, listing.classes, strict)
    try:
        with _data_context(progress):
            dataset.write_datasink(sink, concurrency=concurrency)
    except Exception as error:
        cause = _raydsconv_cause(error)
        if cause is not None:
            raise ConversionError(str(cause)) from None
        raise
    records = sorted(sink.records, key=lambda record: record.shard)
    if [record.shard for record in records] != list(range(num_shards)):
        raise ConversionError(
            f"internal error: expected shards 0..{num_shards - 1} written once each, got "
            f"{[record.shard for record in records]} (did Ray split a shard across tasks?)"
        )
    return records


@contextmanager
def _data_context(progress: bool):
    """Our settings for Ray Data, restored afterwards so the caller's session is left as it was.

    Ray Data reserves part of the CPUs for each operator of a plan; ours is a single fused
    operator, and on a small node the reservation left a CPU idle while the first tasks ran
    (measured on 2 CPUs: 530 -> 700 images/s, parity with a multiprocessing.Pool).
    """
    from ray.data import DataContext

    context = DataContext.get_current()
    settings = {
        "enable_progress_bars": progress,
        "print_on_execution_start": progress,
        "op_resource_reservation_enabled": False,
    }
    saved = {name: getattr(context, name) for name in settings}
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    try:
        for name, value in settings.items():
            setattr(context, name, value)
        if not progress:  # Ray Data also logs each execution at INFO
            data_logger.setLevel(logging.WARNING)
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        data_logger.setLevel(saved_level)


def _raydsconv_cause(error: BaseException) -> RaydsconvError | None:
    """Find our own error inside Ray's wrappers (RayTaskError, UserCodeException, ...)."""
    seen = set()
    stack = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        inner = getattr(current, "cause", None)  # Ray's task errors wrap the original here
        if isinstance(current, RaydsconvError) and inner is None:
            return current
        stack.extend([current.__context__, current.__cause__, inner])
    return None
