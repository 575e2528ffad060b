"""`convert()`: plan, then run (only the shards not yet written), then commit.

    plan (raydsconv.plan) ─▶ lock and workspace (raydsconv.lock, raydsconv.workspace: fresh, resume,
    already complete, or build beside an old dataset) ─▶ shards on Ray (raydsconv.pipeline, each
    saved with its record by raydsconv.shards) ─▶ commit (raydsconv.commit: index, manifest last)
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from raydsconv.cluster import check_address
from raydsconv.commit import commit, skipped_inputs
from raydsconv.errors import ConversionError, ConversionInterrupted, InvalidArgumentError, writing
from raydsconv.images import DEFAULT_MAX_PIXELS
from raydsconv.layout import LOCK_NAME, MANIFEST_FILE, PLAN_NAME, RECORDS_DIR, dataset_root
from raydsconv.lock import OutputLock
from raydsconv.manifest import Manifest, load_manifest
from raydsconv.plan import ConversionPlan, SourcePlan, check_arguments
from raydsconv.prepare import Preparation
from raydsconv.progress import Progress, counted
from raydsconv.shards import ShardJob, Target, read_progress_notes
from raydsconv.signals import Stopped, stop_on_signals
from raydsconv.slurm import Driver, driving, serve, this_step
from raydsconv.targets import Mask, TargetKind
from raydsconv.sources import LabelsTable, Listing, SegmentationFolder, Skipped, list_source
from raydsconv.sources.torch_dataset import check_masks_untransformed
from raydsconv.workspace import Workspace, check_output_path, open_workspace, remove_temporary_files, work_dir

logger = logging.getLogger(__name__)


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
    nodes: int  # Ray nodes that wrote shards (in this run)
    manifests: dict[str, Manifest] = field(repr=False)  # by format
    resumed_shards: int = 0  # shards an earlier, interrupted run of the same plan had written
    already_complete: bool = False  # the output held this very conversion: nothing was done
    ray_log: Path | None = None  # where Ray's log lines of this run went (None: to the terminal, or no Ray)
    ray_log_warnings: int = 0  # how many of them were warnings or worse

    @property
    def manifest(self) -> Manifest:
        """The manifest of the (first) format written."""
        return next(iter(self.manifests.values()))

    @property
    def images_per_second(self) -> float:
        return self.num_candidates / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        if self.already_complete:
            return (f"already complete: {self.output} holds this conversion ({counted(self.num_samples, 'sample')} in "
                    f"{counted(self.num_shards, 'shard')} of {self.format}); nothing to do")
        lines = [
            f"converted {self.num_samples:,} of {counted(self.num_candidates, 'input')} into "
            f"{counted(self.num_shards, 'shard')} of {self.format} at {self.output}",
            f"{self.seconds:.1f} s ({self.images_per_second:,.0f} images/s; Ray start-up "
            f"{self.ray_startup_seconds:.1f} s more), {self.bytes_written / 1e6:,.1f} MB written "
            f"by {counted(self.nodes, 'Ray node')}",
        ]
        if self.resumed_shards:
            lines.append(f"resumed: {self.resumed_shards:,} of {self.num_shards:,} shards were already written")
        if self.skipped:
            lines.append(f"skipped {counted(len(self.skipped), 'input')}:")
            lines.extend(f"  {s.path}: {s.reason}" for s in self.skipped[:20])
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20:,} more (see {MANIFEST_FILE})")
        if self.ray_log is not None:
            warned = f" ({counted(self.ray_log_warnings, 'warning')})" if self.ray_log_warnings else ""
            lines.append(f"Ray's log{warned}: {self.ray_log}")
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
    verbose: bool = False,
    progress: bool = True,
    target: str | TargetKind | None = None,
    labels: str | os.PathLike | None = None,
    label_columns: tuple[str, str] | None = None,
    dense: bool = False,
    mask_mode: str = "L",
    mask_pad_value: int = 255,
) -> ConversionReport:
    """Convert an image folder into a sharded dataset at ``output``.

    Args:
        source: an ImageNet-style folder (one sub-folder per class), an uncompressed tar of one
            (or of one tar per class, as ImageNet's training archive), or a map-style torch Dataset
            of (image, target) items; for masks a segmentation folder (images/ and masks/, see
            ``raydsconv.SegmentationFolder``) or a torch Dataset of (image, mask); for unlabeled
            images or with ``labels``, a folder of images (any layout below it).
        output: the dataset directory to create. Running the same conversion again resumes an
            unfinished one (keeping the shards it wrote) and does nothing for a finished one; an output
            holding anything else is refused unless ``overwrite``.
        format: the output format (``raydsconv.formats.FORMATS`` lists them; default ``"memmap"``), or
            several (a list, or "memmap,parquet"): one read of the source writes each into ``output/<format>``.
        shape: ``(height, width)`` of every stored image (fixed-size formats; flexible ones keep the
            original images, and ignore it with a warning).
        mode: ``"RGB"`` or ``"L"``.
        resize: ``"stretch"``, ``"crop"`` (short side, centre crop) or ``"pad"`` (letterbox).
        images_per_file: samples per shard (inputs per shard; skipped inputs make a shard shorter).
        batch_size: images prepared per call inside a task; tunes memory, never the output.
        num_workers: at most this many tasks at once (and the CPUs of an embedded Ray); None = all;
            0 (a DataLoader's in-process loading, the predecessor's default) = one task at a time.
        address: a Ray cluster to join from one of its nodes (``"auto"``, ``"HEAD:6379"``); None =
            embedded, or RAY_ADDRESS. Ray Client (``ray://``) does not carry Ray Data conversions.
        overwrite: replace what ``output`` holds: a dataset of another conversion is replaced only
            once the new one is complete (a failed or interrupted run leaves it as it was).
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
        verbose: let Ray's own log lines (and its workers' output) through to the terminal; by default
            they go to a file in Ray's session logs, named by ``report.ray_log`` and the summary.
        progress: show, on stderr, what is happening (starting Ray, ...) and one progress bar counting
            images (tqdm in a terminal or Jupyter, a line every 30 s elsewhere); False: print nothing.
        target: what each sample carries besides its image (``raydsconv.targets``): ``"class"``
            (default: an int label), ``"mask"`` (segmentation), ``"none"`` (unlabeled images:
            readers give the image alone), or a TargetKind of your own (docs/extending.md).
        labels: a CSV or Parquet table of (file, class) rows labelling the files of a folder source
            (files by relative path, or that path without its extension; classes by name or index).
        label_columns: the table's (file, class) column names; default: found by name (path/file/
            id..., label/class/...), or its only two columns.
        dense: the predecessor's name for ``target="mask"``.
        mask_mode: what a mask holds: ``"L"`` uint8 class indices, ``"I;16"`` uint16 ones, or
            ``"RGB"`` colours (see ``raydsconv.masks``).
        mask_pad_value: fills the masks' letterbox for ``resize="pad"`` (255: the usual ignore index).

    Returns:
        A ConversionReport; bad inputs are listed in ``report.skipped`` and in the manifest.

    Raises:
        ConversionInterrupted (a KeyboardInterrupt) on SIGINT/SIGTERM: the shards written so far are
        kept, and the same call resumes. OutputLockedError while another conversion writes ``output``.

    Inside a SLURM step of several tasks (``srun -n N python script.py``), without ``address`` or
    RAY_ADDRESS, the ranks form one Ray cluster and convert once: rank 0 drives, the others run a Ray
    worker node each (one per node) until it ends, and every rank returns rank 0's report or raises its
    error (``raydsconv.slurm``; RAYDSCONV_SLURM_RANKS=0: each rank converts alone).
    """
    output = Path(output).absolute()
    voice = Progress(progress)
    step = this_step(address)
    if step is not None and step.rank > 0:
        return serve(step, output, voice)
    with stop_on_signals() as stopped, driving(step, output, voice, stopped) as ranks:
        try:
            plan, listing = make_plan(
                source, format=format, shape=shape, mode=mode, resize=resize, images_per_file=images_per_file,
                batch_size=batch_size, num_workers=num_workers, strict=strict, draft=draft, background=background,
                pad_value=pad_value, max_pixels=max_pixels, validation=validation, root_in_archive=root_in_archive,
                format_options=format_options, target=target, labels=labels, label_columns=label_columns,
                dense=dense, mask_mode=mask_mode, mask_pad_value=mask_pad_value,
            )
            if shape is not None and plan.image is None:
                logger.warning("shape=%r is ignored: %s keep%s the original images", shape,
                               " and ".join(fmt.name for fmt in plan.formats), "s" if len(plan.formats) == 1 else "")
            if listing.description.get("root"):
                _check_output_location(output, Path(listing.description["root"]))
            check_output_path(output)
            check_address(address)  # a cluster that cannot answer fails now, before the output is touched
            work = work_dir(output)
            with writing(output):
                work.mkdir(parents=True, exist_ok=True)
            try:
                with OutputLock(work / LOCK_NAME) as lock:
                    workspace = open_workspace(output, plan, overwrite=overwrite)
                    if workspace.complete:
                        report = _complete_report(output, plan)
                    else:
                        report = _run(plan, listing, workspace, stopped, lock, batch_size=batch_size,
                                      num_workers=1 if num_workers == 0 else num_workers, address=address,
                                      strict=strict, progress=voice, verbose=verbose, ranks=ranks)
                    return ranks.finished(report) if ranks is not None else report
            finally:
                with contextlib.suppress(OSError):
                    work.rmdir()  # gone once committed; an unfinished conversion keeps its state there
        except BaseException:
            if stopped.signal_number is None:
                raise
            raise ConversionInterrupted(_interruption(output), stopped.signal_number) from None


def _interruption(output: Path) -> str:
    """What an interrupted conversion leaves: how many shards are kept for the next run."""
    try:
        plan = json.loads((work_dir(output) / PLAN_NAME).read_text())
    except (OSError, ValueError):
        return "interrupted before any shard was written"
    total = -(-plan["source"]["num_candidates"] // plan["images_per_file"])
    written = sum(1 for _ in (work_dir(output) / RECORDS_DIR).glob("[0-9]*.json"))
    return f"interrupted after {written} of {total} shards; run the same command again to resume"


def make_plan(source: Any, *, root_in_archive: str | None, strict: bool, target: str | TargetKind | None = None,
              labels: str | os.PathLike | None = None, label_columns: tuple[str, str] | None = None,
              dense: bool = False, **options: Any) -> tuple[ConversionPlan, Listing]:
    """Check every argument, then list the source: the plan, and the candidates it converts."""
    if target is None and isinstance(source, SegmentationFolder):
        target = "mask"
    formats, image, kind = check_arguments(target=target, dense=dense, **options)
    table = None
    if labels is not None:
        key_column, label_column = label_columns if label_columns is not None else (None, None)
        table = LabelsTable(os.fspath(labels), key_column, label_column)
    elif label_columns is not None:
        raise InvalidArgumentError("label_columns names the columns of a labels table: give labels=TABLE too")
    listing = list_source(source, root_in_archive=root_in_archive, target=kind, labels=table)
    if isinstance(kind, Mask) and listing.description.get("kind") == "torch_dataset":
        check_masks_untransformed(source, kind.spec)  # the predecessor's VOC recipe: every mask made an RGB image
    if strict and listing.skipped:
        first = listing.skipped[0]
        raise ConversionError(f"{first.path}: {first.reason} (strict mode)")
    plan = ConversionPlan(
        source=SourcePlan(listing.description, len(listing), listing.fingerprint),
        formats=formats, image=image, target=kind, validation=options["validation"],
        max_pixels=options["max_pixels"], images_per_file=options["images_per_file"],
    )
    return plan, listing


def _run(plan: ConversionPlan, listing: Listing, workspace: Workspace, stopped: Stopped, lock: OutputLock, *,
         batch_size: int, num_workers: int | None, address: str | None, strict: bool, progress: Progress,
         verbose: bool, ranks: Driver | None = None) -> ConversionReport:
    """Write the shards that are missing, then commit. ``ranks``: Ray is the cluster it starts over
    the ranks of a SLURM step, else ``ensure_ray``'s."""
    from raydsconv.cluster import ensure_ray, ray_logs_to_file
    from raydsconv.pipeline import run_shards

    targets = [Target(fmt.format, dataset_root(workspace.root, fmt.name, plan.several), plan.params(fmt))
               for fmt in plan.formats]
    for target in targets:
        target.root.mkdir(parents=True, exist_ok=True)
    job = ShardJob(
        targets=tuple(targets),
        preparation=Preparation(
            plan.image, keep_bytes=any(not fmt.format.fixed_size for fmt in plan.formats), validation=plan.validation,
            max_pixels=plan.max_pixels, target=plan.target,
            num_classes=len(listing.classes) if listing.labels_from_items and listing.classes else None),
        classes=listing.classes, strict=strict, batch_size=batch_size, records=workspace.records,
        lock=lock.path, token=lock.token,
    )
    records = dict(workspace.done)
    todo = [shard for shard in range(plan.num_shards) if shard not in records]
    nodes = set()
    progress.say(f"listed {counted(len(listing), 'input')}"
                 + (f" in {counted(len(listing.classes), 'class', 'classes')}" if listing.classes else ""))
    if records:
        progress.say(f"resuming: {len(records):,} of {counted(plan.num_shards, 'shard')} were written by an earlier run")
    with ray_logs_to_file(enabled=bool(todo) and not verbose) as ray_log:
        if not todo:
            ray_seconds = 0.0
        elif ranks is not None:
            ray_seconds = ranks.start_cluster(say=progress.say, log_to_driver=verbose)
        else:
            ray_seconds = ensure_ray(address, num_cpus=num_workers, say=progress.say, log_to_driver=verbose)
        stopped.reinstall()
        started = time.perf_counter()
        kept = list(records.values())
        bar = progress.images(len(listing), done=sum(len(r.kept) + len(r.skipped) for r in kept),
                              skipped=len(listing.skipped) + sum(len(r.skipped) for r in kept),
                              poll=functools.partial(read_progress_notes, workspace.records))
        try:
            with bar:
                for record in run_shards(listing, todo, job, images_per_file=plan.images_per_file,
                                         concurrency=num_workers):
                    records[record.shard] = record
                    if record.node:  # not known for a shard recovered from its record alone
                        nodes.add(record.node)
                    bar.finished(record.shard, len(record.kept) + len(record.skipped), len(record.skipped))
        except BaseException:
            for folder in [*(target.root for target in targets), workspace.records]:
                with contextlib.suppress(OSError):  # never hide the error itself
                    remove_temporary_files(folder)  # of tasks cancelled mid-shard (a failed one removes its own)
            raise
    ordered = [records[shard] for shard in range(plan.num_shards)]
    with stopped.deferred():  # a signal now waits: commit is short, and leaves a finished dataset
        manifests = commit(workspace, plan, listing, targets, ordered, strict=strict)
    return ConversionReport(
        output=workspace.output,
        format=",".join(manifests),
        num_candidates=len(listing),
        num_samples=sum(len(r.kept) for r in ordered),
        num_shards=len(ordered),
        skipped=skipped_inputs(listing, ordered),
        seconds=time.perf_counter() - started,
        ray_startup_seconds=ray_seconds,
        bytes_written=sum(f.bytes for r in ordered for f in r.all_files()),
        nodes=len(nodes),
        manifests=manifests,
        resumed_shards=len(workspace.done),
        ray_log=ray_log.path,
        ray_log_warnings=ray_log.warnings,
    )


def _complete_report(output: Path, plan: ConversionPlan) -> ConversionReport:
    manifests = {fmt.name: load_manifest(dataset_root(output, fmt.name, plan.several)) for fmt in plan.formats}
    first = next(iter(manifests.values()))
    return ConversionReport(
        output=output, format=",".join(manifests), num_candidates=plan.source.num_candidates,
        num_samples=first.num_samples, num_shards=len(first.shards),
        skipped=[Skipped(s["path"], s["reason"]) for s in first.skipped], seconds=0.0, ray_startup_seconds=0.0,
        bytes_written=0, nodes=0, manifests=manifests, already_complete=True,
    )


def _check_output_location(output: Path, source_root: Path) -> None:
    output_real, source_real = output.resolve(), source_root.resolve()
    if output_real == source_real or source_real in output_real.parents:
        raise InvalidArgumentError(f"output {str(output)!r} is inside the source {str(source_root)!r}; choose another place")
    if output_real in source_real.parents:
        raise InvalidArgumentError(f"output {str(output)!r} contains the source {str(source_root)!r}; choose another place")
