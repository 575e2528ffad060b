"""`convert()`: check the arguments, list the source, run the pipeline, commit index and manifest."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import raydsconv
from raydsconv.errors import ConversionError, InvalidArgumentError
from raydsconv.formats import FORMATS, Format, get_format
from raydsconv.images import DEFAULT_MAX_PIXELS, VALIDATIONS, ImageSpec
from raydsconv.manifest import FORMATS_NAME, INDEX_NAME, MANIFEST_NAME, Manifest, Shard
from raydsconv.masks import MaskSpec
from raydsconv.pipeline import Target
from raydsconv.sources import Listing, SegmentationFolder, Skipped, list_source


@dataclass
class ConversionReport:
    """What a conversion did. ``seconds`` excludes Ray start-up, reported on its own."""

    output: Path
    format: str
    num_candidates: int
    num_samples: int
    num_shards: int
    skipped: list[Skipped]
    seconds: float
    ray_startup_seconds: float
    bytes_written: int
    nodes: int  # Ray nodes that wrote shards
    manifests: dict[str, Manifest] = field(repr=False)  # by format

    @property
    def manifest(self) -> Manifest:
        """The manifest of the (first) format written."""
        return next(iter(self.manifests.values()))

    @property
    def images_per_second(self) -> float:
        return self.num_candidates / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        lines = [
            f"converted {self.num_samples} of {self.num_candidates} inputs into {self.num_shards} shards "
            f"of {self.format} at {self.output}",
            f"{self.seconds:.1f} s ({self.images_per_second:.0f} images/s; Ray start-up "
            f"{self.ray_startup_seconds:.1f} s more), {self.bytes_written / 1e6:.1f} MB written "
            f"by {self.nodes} Ray node{'s' if self.nodes != 1 else ''}",
        ]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} inputs:")
            lines.extend(f"  {s.path}: {s.reason}" for s in self.skipped[:20])
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more (see {MANIFEST_NAME})")
        return "\n".join(lines)


def convert(
    source: Any,
    output: str | os.PathLike,
    *,
    format: str | Sequence[str] = "memmap",
    shape: tuple[int, int] | None = None,
    mode: str = "RGB",
    resize: str = "stretch",
    images_per_file: int = 1000,
    batch_size: int = 32,
    num_workers: int | None = None,
    address: str | None = None,
    overwrite: bool = False,
    strict: bool = False,
    draft: bool = False,
    background: tuple[int, int, int] = (255, 255, 255),
    pad_value: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    validation: str = "full",
    root_in_archive: str | None = None,
    format_options: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    dense: bool = False,
    mask_mode: str = "L",
    mask_pad_value: int = 255,
) -> ConversionReport:
    """Convert an image folder into a sharded dataset at ``output``.

    Args:
        source: an ImageNet-style folder (one sub-folder per class), an uncompressed tar of one
            (or of one tar per class, as ImageNet's training archive), or a map-style torch Dataset
            of (image, target) items; with ``dense=True`` a segmentation folder (images/ and
            masks/, see ``raydsconv.SegmentationFolder``) or a torch Dataset of (image, mask).
        output: the dataset directory to create; must be empty unless ``overwrite``.
        format: the output format (``raydsconv.formats.FORMATS`` lists them), or several
            (a list, or "memmap,parquet"): one read of the source writes each into ``output/<format>``.
        shape: ``(height, width)`` of every stored image (fixed-size formats).
        mode: ``"RGB"`` or ``"L"``.
        resize: ``"stretch"``, ``"crop"`` (short side, centre crop) or ``"pad"`` (letterbox).
        images_per_file: samples per shard (inputs per shard; skipped inputs make a shard shorter).
        batch_size: images prepared per call inside a task; tunes memory, never the output.
        num_workers: at most this many tasks at once (and the CPUs of an embedded Ray); None = all.
        address: a Ray cluster to join from one of its nodes (``"auto"``, ``"HEAD:6379"``); None =
            embedded, or RAY_ADDRESS. Ray Client (``ray://``) does not carry Ray Data conversions.
        overwrite: replace an existing non-empty ``output``.
        strict: raise on the first unreadable input instead of skipping it.
        draft: let libjpeg decode large JPEGs at reduced scale (faster; pixels differ slightly).
        background: RGB colour that transparent pixels are composited over.
        pad_value: fill value of the letterbox for ``resize="pad"``.
        max_pixels: larger images are skipped (decompression-bomb guard).
        root_in_archive: for a tar source, the folder inside the archive that holds the classes.
        validation: how flexible-size formats check the bytes they keep: ``"full"`` decodes
            (catches truncated files), ``"header"`` only parses the header (much faster).
        format_options: per format, e.g. ``{"hdf5": {"compression": "gzip"},
            "parquet": {"row_group_size": 8}, "ipc": {"batch_rows": 256}}``.
        progress: show Ray Data's progress bars.
        dense: every sample has a mask (segmentation) instead of a class label.
        mask_mode: what a mask holds: ``"L"`` uint8 class indices, ``"I;16"`` uint16 ones, or
            ``"RGB"`` colours (see ``raydsconv.masks``).
        mask_pad_value: fills the masks' letterbox for ``resize="pad"`` (255: the usual ignore index).

    Returns:
        A ConversionReport; bad inputs are listed in ``report.skipped`` and in the manifest.
    """
    formats = _formats(format)
    dense = dense or isinstance(source, SegmentationFolder)
    _check_positive("images_per_file", images_per_file)
    _check_positive("batch_size", batch_size)
    if num_workers is not None:
        _check_positive("num_workers", num_workers)
    if validation not in VALIDATIONS:
        raise InvalidArgumentError(f"validation must be one of {', '.join(VALIDATIONS)}, got {validation!r}")
    fixed = [fmt for fmt in formats if fmt.fixed_size]
    if fixed and shape is None:
        raise InvalidArgumentError(f"format {fixed[0].name!r} stores one image size: give shape=(height, width)")
    spec = ImageSpec(
        shape=shape, mode=mode, resize=resize, background=background, pad_value=pad_value,
        draft=draft, max_pixels=max_pixels,
    ) if fixed else None
    options = _format_options(formats, format_options or {})
    mask_spec = _mask_spec(formats, mask_mode, mask_pad_value) if dense else None
    output = Path(output).absolute()
    listing = list_source(source, root_in_archive=root_in_archive, dense=dense)
    if strict and listing.skipped:
        first = listing.skipped[0]
        raise ConversionError(f"{first.path}: {first.reason} (strict mode)")
    if listing.description.get("root"):
        _check_output_location(output, Path(listing.description["root"]))
    _prepare_output(output, overwrite, formats)
    targets = [
        Target(fmt, output / fmt.name if len(formats) > 1 else output,
               _params(fmt, spec, validation, options[fmt.name], mask_spec))
        for fmt in formats
    ]
    for target in targets:
        target.root.mkdir(parents=True, exist_ok=True)

    from raydsconv.cluster import ensure_ray
    from raydsconv.pipeline import Preparation, run_pipeline

    ray_seconds = ensure_ray(address, num_cpus=num_workers)
    started = time.perf_counter()
    preparation = Preparation(spec, keep_bytes=any(not fmt.fixed_size for fmt in formats),
                              validation=validation, max_pixels=max_pixels, mask=mask_spec,
                              num_classes=len(listing.classes) if listing.labels_from_items and listing.classes else None)
    records = run_pipeline(
        listing, targets, preparation,
        images_per_file=images_per_file, batch_size=batch_size, concurrency=num_workers,
        strict=strict, progress=progress,
    )
    if listing.labels_from_items and not listing.classes:  # no class names given: name them by index
        top = max((int(r.labels.max()) for r in records if len(r.labels)), default=-1)
        listing.classes = [str(i) for i in range(top + 1)]
    skipped = sorted(
        [Skipped(listing.paths[c], reason) for record in records for c, reason in record.skipped]
        + listing.skipped,
        key=lambda s: s.path,
    )
    manifests = {target.format.name: _commit(target, listing, records, skipped, images_per_file, strict)
                 for target in targets}
    if len(targets) > 1:
        _write_formats_file(output, targets)
    seconds = time.perf_counter() - started
    return ConversionReport(
        output=output,
        format=",".join(manifests),
        num_candidates=len(listing),
        num_samples=len(np.concatenate([r.kept for r in records])) if records else 0,
        num_shards=len(records),
        skipped=skipped,
        seconds=seconds,
        ray_startup_seconds=ray_seconds,
        bytes_written=sum(f.bytes for r in records for files in r.files.values() for f in files.values()),
        nodes=len({r.node for r in records}),
        manifests=manifests,
    )


def _formats(format: str | Sequence[str]) -> list[Format]:
    names = [name.strip() for name in format.split(",")] if isinstance(format, str) else list(format)
    if not names or len(set(names)) != len(names):
        raise InvalidArgumentError(f"give one or more distinct formats, got {format!r}")
    return [get_format(name) for name in names]


def _format_options(formats: list[Format], given: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    unknown = set(given) - {fmt.name for fmt in formats}
    if unknown:
        raise InvalidArgumentError(f"format_options for {', '.join(sorted(unknown))}, which this conversion does not write")
    checked = {}
    for fmt in formats:
        options = dict(given.get(fmt.name, {}))
        if fmt.check_options is None:
            if options:
                raise InvalidArgumentError(f"format {fmt.name!r} takes no options, got {sorted(options)}")
            checked[fmt.name] = {}
        else:
            checked[fmt.name] = fmt.check_options(options)
    return checked


def _params(fmt: Format, spec: ImageSpec | None, validation: str, options: dict[str, Any],
            mask: MaskSpec | None) -> dict[str, Any]:
    params = {**spec.to_dict(), "channels": spec.channels, "dtype": "uint8"} if fmt.fixed_size else {"validation": validation}
    if mask is not None:
        params.update(dense=True, mask_mode=mask.mode)
        if fmt.fixed_size:
            params["mask_pad_value"] = mask.pad_value
    return {**params, **options}


def _mask_spec(formats: list[Format], mask_mode: str, mask_pad_value: int) -> MaskSpec:
    unable = [fmt.name for fmt in formats if fmt.dense_file_roles is None]
    if unable:
        raise InvalidArgumentError(f"format {unable[0]!r} cannot store masks (dense labels)")
    return MaskSpec(mask_mode, mask_pad_value)


def _commit(target: Target, listing: Listing, records: list, skipped: list[Skipped],
            images_per_file: int, strict: bool) -> Manifest:
    """Index, then the format's dataset-level files, then the manifest: written last."""
    fmt = target.format
    _write_index(target.root, listing, records, fmt.name)
    shards = [Shard(r.shard, len(r.kept), r.files[fmt.name]) for r in records]
    params = dict(target.params)
    if fmt.finalize is not None:
        params.update(fmt.finalize(target.root, shards, params))
    manifest = Manifest(
        format=fmt.name,
        params=params,
        num_samples=sum(shard.num_samples for shard in shards),
        classes=listing.classes,
        shards=shards,
        skipped=[s.to_dict() for s in skipped],
        source=listing.description,
        settings={"images_per_file": images_per_file, "strict": strict},
        library_version=raydsconv.__version__,
    )
    manifest.write(target.root)
    return manifest


def _write_formats_file(output: Path, targets: list[Target]) -> None:
    """Several formats from one pass: ``formats.json`` says which sub-folder holds which."""
    text = json.dumps({"formats": {t.format.name: t.root.name for t in targets}}, indent=1) + "\n"
    (output / FORMATS_NAME).write_text(text)


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")


def _check_output_location(output: Path, source_root: Path) -> None:
    output_real, source_real = output.resolve(), source_root.resolve()
    if output_real == source_real or source_real in output_real.parents:
        raise InvalidArgumentError(f"output {str(output)!r} is inside the source {str(source_root)!r}; choose another place")
    if output_real in source_real.parents:
        raise InvalidArgumentError(f"output {str(output)!r} contains the source {str(source_root)!r}; choose another place")


def _prepare_output(output: Path, overwrite: bool, formats: list[Format]) -> None:
    if output.exists() and not output.is_dir():
        raise InvalidArgumentError(f"output {str(output)!r} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise InvalidArgumentError(f"output {str(output)!r} is not empty; pass overwrite=True (--overwrite) to replace it")
        if not _holds_only_our_files(output):
            raise InvalidArgumentError(
                f"output {str(output)!r} holds files raydsconv did not write; refusing to delete them even with "
                "overwrite (empty it yourself or choose another directory)"
            )
        # The manifest goes first: an interrupted overwrite never looks like a finished dataset.
        (output / MANIFEST_NAME).unlink(missing_ok=True)
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)


def _holds_only_our_files(output: Path) -> bool:
    """A dataset, or what an interrupted conversion left behind (of any format), and nothing else."""
    patterns = [fmt.file_pattern for fmt in FORMATS.values()]
    ours = re.compile(rf"({'|'.join(patterns)}|\.?{re.escape(INDEX_NAME)}(\.partial)?|\.manifest-.*|{re.escape(MANIFEST_NAME)}|{re.escape(FORMATS_NAME)})")

    def only_ours(folder: Path) -> bool:
        return all(
            (entry.is_file() and ours.fullmatch(entry.name))
            or (entry.is_dir() and entry.name in FORMATS and only_ours(entry))
            for entry in folder.iterdir()
        )

    return only_ours(output)


def _write_index(root: Path, listing: Listing, records: list, format_name: str) -> None:
    """One row per stored sample, in sample order: where it came from, where it is, and the
    columns only this format needs (e.g. byte offsets in a tar)."""
    kept = np.concatenate([r.kept for r in records]) if records else np.zeros(0, np.int64)
    columns = {
        "label": np.concatenate([r.labels for r in records]) if records else np.zeros(0, np.int64),
        "shard": np.concatenate([np.full(len(r.kept), r.shard, dtype=np.int64) for r in records]),
        "row": np.concatenate([np.arange(len(r.kept), dtype=np.int64) for r in records]),
        "path": pa.array(listing.paths, type=pa.string()).take(pa.array(kept)),
        "width": np.concatenate([r.width for r in records]),
        "height": np.concatenate([r.height for r in records]),
        "source_format": pa.array([f for r in records for f in r.source_format], type=pa.string()),
    }
    if "mask_path" in listing.columns:  # a segmentation folder: where each mask came from
        columns["mask_path"] = pa.array(listing.columns["mask_path"], type=pa.string()).take(pa.array(kept))
    for name in records[0].index_columns.get(format_name, {}) if records else ():
        columns[name] = np.concatenate([r.index_columns[format_name][name] for r in records])
    temporary = root / f".{INDEX_NAME}.partial"
    pq.write_table(pa.table(columns), temporary)
    os.replace(temporary, root / INDEX_NAME)
