"""The output folder of a conversion: what is already there decides what this run does.

- nothing (or an empty folder): a fresh conversion, written in place;
- an unfinished conversion of the same plan: resume it, keeping every shard whose record and files
  check out (size and sha256) and redoing the rest;
- a finished dataset of the same plan: nothing to do;
- a finished dataset of another plan, with ``overwrite``: build the new one beside it
  (``.raydsconv/build``) and swap it in at commit, so a failed or interrupted overwrite leaves the old
  dataset as it was; without ``overwrite``, or an unfinished conversion of another plan: refused,
  naming what differs.

Everything here runs under the output's lock (raydsconv.lock).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from raydsconv import layout
from raydsconv.errors import InvalidArgumentError, output_error
from raydsconv.formats import FORMATS
from raydsconv.plan import ConversionPlan
from raydsconv.shards import ShardRecord, file_checks_out, load_record

logger = logging.getLogger(__name__)


@dataclass
class Workspace:
    output: Path
    root: Path  # where the new dataset is built: ``output``, or ``.raydsconv/build`` beside an old one
    done: dict[int, ShardRecord] = field(default_factory=dict)  # shards kept from an earlier run
    complete: bool = False  # the output already holds this very conversion

    @property
    def work(self) -> Path:
        return self.output / layout.WORK_DIR

    @property
    def records(self) -> Path:
        return self.work / layout.RECORDS_DIR

    @property
    def replacing(self) -> bool:
        return self.root != self.output


def work_dir(output: Path) -> Path:
    return output / layout.WORK_DIR


def open_workspace(output: Path, plan: ConversionPlan, *, overwrite: bool) -> Workspace:
    """Decide what this run does with ``output`` and make the folder ready for it (lock held)."""
    work = work_dir(output)
    build = work / layout.BUILD_DIR
    if layout.completion_marker(build, plan.several).exists():
        finish_swap(output, build, plan.several)  # an overwrite interrupted while swapping in
    finished, finished_plan = _finished_dataset(output, plan.several)
    in_progress = _recorded_plan(work)
    if finished:
        differences = _differences(plan, finished_plan)
        if not differences:
            _remove_work_state(work)  # whatever an earlier overwrite left unfinished is moot now
            return Workspace(output, output, complete=True)
        if not overwrite:
            raise InvalidArgumentError(
                f"output {str(output)!r} is not empty: it holds a finished dataset of another conversion "
                f"({'; '.join(differences)}); pass overwrite=True (--overwrite) to replace it, or choose another output"
            )
        workspace = Workspace(output, build)
        if in_progress is None or _differences(plan, in_progress) or not build.is_dir():
            _remove_work_state(work)
    elif in_progress is not None:
        differences = _differences(plan, in_progress)
        if differences and not overwrite:
            raise InvalidArgumentError(
                f"output {str(output)!r} is not empty: it holds an unfinished conversion of another plan "
                f"({'; '.join(differences)}); pass overwrite=True (--overwrite) to discard it, or choose another output"
            )
        if differences:
            _remove_our_files(output)
        workspace = Workspace(output, output)
    else:
        if any(entry.name != layout.WORK_DIR for entry in output.iterdir()):
            if not overwrite:
                raise InvalidArgumentError(
                    f"output {str(output)!r} is not empty; pass overwrite=True (--overwrite) to replace it")
            _remove_our_files(output)
        workspace = Workspace(output, output)
    workspace.records.mkdir(parents=True, exist_ok=True)
    workspace.root.mkdir(parents=True, exist_ok=True)
    _write_plan(work, plan)
    workspace.done = _kept_shards(workspace, plan)
    return workspace


def _differences(plan: ConversionPlan, recorded: dict | None) -> list[str]:
    if recorded is None:
        return ["it records no conversion plan (written by an older raydsconv)"]
    return plan.differences(recorded)


def _finished_dataset(output: Path, several: bool) -> tuple[bool, dict | None]:
    """Whether ``output`` holds a finished dataset, and the plan its manifest records (None: none)."""
    manifest = layout.manifest_path(output)
    formats = output / layout.FORMATS_NAME
    if not manifest.exists() and not formats.exists():
        return False, None
    try:
        if formats.exists():  # several formats: every sub-folder's manifest records the same plan
            folder = next(iter(layout.read_formats(output).values()))
            manifest = layout.manifest_path(output / folder)
        return True, json.loads(manifest.read_text()).get("plan")
    except (OSError, ValueError, KeyError, StopIteration, AttributeError):
        return True, None


def _recorded_plan(work: Path) -> dict | None:
    """The plan of the unfinished conversion in ``work``; None when there is none."""
    path = work / layout.PLAN_NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"version": "unreadable"}  # differs from every plan


def _write_plan(work: Path, plan: ConversionPlan) -> None:
    text = json.dumps(plan.to_dict(), indent=1) + "\n"
    layout.write_atomically(work / layout.PLAN_NAME, lambda temporary: temporary.write_text(text))


def _kept_shards(workspace: Workspace, plan: ConversionPlan) -> dict[int, ShardRecord]:
    """The shards an earlier run of this plan committed and whose files still check out; every other
    file of a shard (and every temporary file) is removed, to be written again."""
    records = {}
    for path in sorted(workspace.records.iterdir()):
        record = load_record(path) if not layout.is_partial(path.name) else None
        if record is None or record.shard >= plan.num_shards or path.name != layout.record_name(record.shard):
            path.unlink()
        else:
            records[record.shard] = record
    roots = {fmt.name: layout.dataset_root(workspace.root, fmt.name, plan.several) for fmt in plan.formats}
    checks = [(shard, roots[name], f) for shard, record in records.items()
              for name, files in record.files.items() if name in roots for f in files.values()]
    with ThreadPoolExecutor(max_workers=4) as pool:  # hashing releases the GIL; reading overlaps it
        good = list(pool.map(lambda check: file_checks_out(check[1], check[2]), checks))
    broken = {shard for (shard, _, _), ok in zip(checks, good) if not ok}
    broken |= {shard for shard, record in records.items() if set(record.files) != set(roots)}
    for shard in broken:
        logger.warning("shard %d of the earlier run does not check out; writing it again", shard)
        (workspace.records / layout.record_name(shard)).unlink()
        del records[shard]
    keep = {(roots[name], f.name) for record in records.values() for name, files in record.files.items()
            for f in files.values()}
    for name, root in roots.items():
        pattern = layout.ours_pattern([FORMATS[name].file_pattern])
        if root.is_dir():
            for entry in root.iterdir():
                if entry.is_file() and (layout.is_partial(entry.name) or pattern.fullmatch(entry.name)) \
                        and (root, entry.name) not in keep:
                    entry.unlink()
    return records


def finish_swap(output: Path, build: Path, several: bool) -> None:
    """Replace the dataset at ``output`` by the finished one in ``build``; safe to call again after an
    interruption at any point (a journal file says whether the old dataset is already out of the way)."""
    work = work_dir(output)
    retired = work / layout.RETIRED_DIR
    swapping = work / "swapping"
    if not swapping.exists():
        retired.mkdir(exist_ok=True)
        marker = _top_entry(output, layout.completion_marker(output, several))
        old = sorted((e for e in output.iterdir() if e.name != layout.WORK_DIR), key=lambda e: e.name != marker)
        for entry in old:  # the old completion marker first: from then on the old dataset is not claimed
            os.replace(entry, retired / entry.name)
        swapping.touch()
    marker = _top_entry(build, layout.completion_marker(build, several))
    for entry in sorted(build.iterdir(), key=lambda e: e.name == marker):  # the new marker (or its folder) last
        os.replace(entry, output / entry.name)
    shutil.rmtree(retired, ignore_errors=True)
    build.rmdir()
    swapping.unlink()


def _top_entry(root: Path, path: Path) -> str:
    """The name of the entry of ``root`` that holds ``path`` (the manifest's: META_DIR, or itself)."""
    return path.relative_to(root).parts[0]


def discard(workspace: Workspace) -> None:
    """Remove what this conversion wrote (a dataset not worth keeping); an old dataset it was to replace
    stays, and so does anything raydsconv did not write."""
    _remove_work_state(workspace.work)
    if workspace.replacing:
        return  # the build folder went with the work state
    ours = layout.ours_pattern([fmt.file_pattern for fmt in FORMATS.values()])
    for folder in [workspace.output, *(workspace.output / name for name in FORMATS)]:
        if folder.is_dir():
            shutil.rmtree(folder / layout.META_DIR, ignore_errors=True)
            for entry in folder.iterdir():
                if entry.is_file() and ours.fullmatch(entry.name):
                    entry.unlink()
            if folder != workspace.output and not any(folder.iterdir()):
                folder.rmdir()


def remove_temporary_files(root: Path) -> None:
    """Temporary files at the top of a dataset and in its META_DIR (the index's, the manifest's)."""
    for folder in (root, root / layout.META_DIR):
        if folder.is_dir():
            for entry in folder.iterdir():
                if layout.is_partial(entry.name):
                    entry.unlink(missing_ok=True)


def remove_work_state(output: Path) -> None:
    """After commit: the plan and shard records are in the manifest now (the lock goes last)."""
    _remove_work_state(work_dir(output))


def _remove_work_state(work: Path) -> None:
    for name in (layout.RECORDS_DIR, layout.BUILD_DIR, layout.RETIRED_DIR):
        shutil.rmtree(work / name, ignore_errors=True)
    for name in (layout.PLAN_NAME, "swapping"):
        (work / name).unlink(missing_ok=True)


def _remove_our_files(output: Path) -> None:
    """Clear an output for a new conversion, refusing if it holds anything raydsconv did not write."""
    ours = layout.ours_pattern([fmt.file_pattern for fmt in FORMATS.values()])

    def only_ours(folder: Path) -> bool:
        return all(
            layout.is_ours(entry, ours) or (entry.is_dir() and entry.name in FORMATS and only_ours(entry))
            for entry in folder.iterdir() if entry.name != layout.WORK_DIR
        )

    if not only_ours(output):
        raise InvalidArgumentError(
            f"output {str(output)!r} holds files raydsconv did not write; refusing to delete them even with "
            "overwrite (empty it yourself or choose another directory)"
        )
    _remove_work_state(work_dir(output))
    layout.manifest_path(output).unlink(missing_ok=True)  # first: never a half-deleted "dataset"
    (output / layout.FORMATS_NAME).unlink(missing_ok=True)
    for entry in output.iterdir():
        if entry.name == layout.WORK_DIR:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_output_path(output: Path) -> None:
    """Refuse an output that cannot be one, before any work (and before Ray starts)."""
    if output.exists() and not output.is_dir():
        raise InvalidArgumentError(f"output {str(output)!r} exists and is not a directory")
    folder = next(path for path in (output, *output.parents) if path.exists())  # the output, or where it goes
    if not os.access(folder, os.W_OK):
        read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
        raise output_error(OSError(errno.EROFS if read_only else errno.EACCES, "not writable"), folder)

