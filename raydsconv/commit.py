"""Commit: gather the shard records into the dataset-level files — index, the format's own files
(e.g. HDF5's virtual dataset), the manifest last — then, for an overwrite, swap the new dataset in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import raydsconv
from raydsconv import layout
from raydsconv.errors import ConversionError, writing
from raydsconv.manifest import Manifest, Shard
from raydsconv.plan import ConversionPlan
from raydsconv.shards import ShardRecord, Target
from raydsconv.sources import Listing, Skipped
from raydsconv.workspace import Workspace, discard, finish_swap, remove_temporary_files, remove_work_state


def skipped_inputs(listing: Listing, records: list[ShardRecord]) -> list[Skipped]:
    """Every input that did not become a sample, with its reason, in path order."""
    return sorted(
        [Skipped(listing.paths[candidate], reason) for record in records for candidate, reason in record.skipped]
        + listing.skipped,
        key=lambda s: s.path,
    )


def commit(workspace: Workspace, plan: ConversionPlan, listing: Listing, targets: list[Target],
           records: list[ShardRecord], *, strict: bool) -> dict[str, Manifest]:
    """Write the dataset-level files of every target; the manifests (and formats.json) last."""
    skipped = skipped_inputs(listing, records)
    if not any(len(record.kept) for record in records):
        discard(workspace)
        examples = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
        raise ConversionError(
            f"none of the {len(listing) + len(listing.skipped)} inputs became a sample, so no dataset was written "
            f"(e.g. {examples}); check the source and the options"
        )
    if listing.labels_from_items and not listing.classes:  # no class names given: name them by index
        top = max((int(r.labels.max()) for r in records if len(r.labels)), default=-1)
        listing.classes = [str(i) for i in range(top + 1)]
    manifests = {}
    for target in targets:
        remove_temporary_files(target.root)  # e.g. of a task killed with its node
        try:
            manifests[target.format.name] = _commit_target(target, plan, listing, records, skipped, strict=strict)
        except BaseException:
            remove_temporary_files(target.root)  # what a failure (a full disk) left half-written
            raise
    if plan.several:
        layout.write_formats(workspace.root, {t.format.name: t.root.name for t in targets})
    if workspace.replacing:
        finish_swap(workspace.output, workspace.root, plan.several)
    remove_work_state(workspace.output)
    return manifests


def _commit_target(target: Target, plan: ConversionPlan, listing: Listing, records: list[ShardRecord],
                   skipped: list[Skipped], *, strict: bool) -> Manifest:
    return write_dataset(target, listing, records, skipped,
                         settings={"images_per_file": plan.images_per_file, "strict": strict}, plan=plan.to_dict())


def write_dataset(target: Target, listing: Listing, records: list[ShardRecord], skipped: list[Skipped], *,
                  settings: dict, plan: dict | None) -> Manifest:
    """One format's index, its own dataset-level files, and its manifest, last (also raydsconv.migration's)."""
    fmt = target.format
    _write_index(target.root, listing, records, fmt.name)
    shards = [Shard(r.shard, len(r.kept), r.files[fmt.name]) for r in records]
    params = dict(target.params)
    if fmt.finalize is not None:
        with writing(target.root):  # the format's own files (e.g. HDF5's dataset.h5) name themselves if they can
            params.update(fmt.finalize(target.root, shards, params))
    manifest = Manifest(
        format=fmt.name,
        params=params,
        num_samples=sum(shard.num_samples for shard in shards),
        classes=listing.classes,
        shards=shards,
        skipped=[s.to_dict() for s in skipped],
        source=listing.description,
        settings=settings,
        library_version=raydsconv.__version__,
        plan=plan,
    )
    manifest.write(target.root)
    return manifest


def _write_index(root: Path, listing: Listing, records: list[ShardRecord], format_name: str) -> None:
    """One row per stored sample, in sample order: where it came from, where it is, and the
    columns only this format needs (e.g. byte offsets in a tar)."""
    kept = np.concatenate([r.kept for r in records])
    columns = {
        "label": np.concatenate([r.labels for r in records]),
        "shard": np.concatenate([np.full(len(r.kept), r.shard, dtype=np.int64) for r in records]),
        "row": np.concatenate([np.arange(len(r.kept), dtype=np.int64) for r in records]),
        "path": pa.array(listing.paths, type=pa.string()).take(pa.array(kept)),
        "width": np.concatenate([r.width for r in records]),
        "height": np.concatenate([r.height for r in records]),
        "source_format": pa.array([f for r in records for f in r.source_format], type=pa.string()),
    }
    if "mask_path" in listing.columns:  # a segmentation folder: where each mask came from
        columns["mask_path"] = pa.array(listing.columns["mask_path"], type=pa.string()).take(pa.array(kept))
    for name in ("path_bytes", "mask_path_bytes"):  # only when a name is not UTF-8: its exact bytes
        if name in listing.columns:
            columns[name] = pa.array(listing.columns[name], type=pa.binary()).take(pa.array(kept))
    for name in records[0].index_columns.get(format_name, {}):
        columns[name] = np.concatenate([r.index_columns[format_name][name] for r in records])
    layout.write_atomically(root / layout.INDEX_FILE, lambda temporary: pq.write_table(pa.table(columns), temporary),
                            make_folder=True)
