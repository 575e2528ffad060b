"""Builds and runs the Ray Data plan; the only module that composes Ray Data.

    range(shards to write), a block each ──map_batches(write those shards)──▶ records

The candidates (paths, labels, loader columns) are shipped to the workers once, through the object
store; each block names one shard (several when there are many more shards than CPUs). The task that
gets it reads, prepares and writes each of its shards whole (``raydsconv.shards.ShardJob``) and saves
each shard's record, so a shard is written by exactly one task, whatever Ray fuses, splits or
retries, and pixels never travel through the object store or the driver. Only the shards' records (a
few numbers per sample) come back.

When there are fewer shards than CPUs (a small dataset, a large cluster), a shard's task takes the
CPUs that would be idle, as many as a node has, and prepares its batches on that many threads
(``ShardJob.write``); it still writes every batch in order, so the bytes are the same. Before the
tasks start, as many workers as will run them are warmed: the decode path's imports overlap with
Ray Data starting its executor (``_warm_workers``).

A task whose worker dies (a decoder's segfault on a malicious file, an out-of-memory kill, a lost
node) is retried ``SHARD_TASK_RETRIES`` times (Ray Data's own default is forever, which loops on an
input that crashes every time); then Ray Data drops it and the other shards go on. Every shard that
did not come back is written once more by a task of its own that prepares each input in a child
process (``raydsconv.isolation``): an input that crashes it is skipped with the signal as its reason,
or fails the conversion in strict mode; a shard whose task still dies fails the conversion.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import pickle
import traceback
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from raydsconv.errors import ConversionError, InvalidArgumentError, RaydsconvError
from raydsconv.shards import ShardJob, ShardRecord
from raydsconv.sources import Listing

logger = logging.getLogger(__name__)

TASKS_PER_SLOT = 4  # at most this many tasks per task slot (CPUs / threads): several shards to a task beyond
SHARD_TASK_RETRIES = 1  # retries of a shard's task whose worker died, before it is written in isolation
ISOLATED_TASK_RETRIES = 1  # the same for the isolated write (its worker only dies of a lost node or the writer)

_SHIPPED: dict[Any, Any] = {}


def _shipped(value: Any) -> Any:
    """The value itself, or the one behind an ObjectRef: fetched once per worker process."""
    import ray

    if not isinstance(value, ray.ObjectRef):
        return value
    if value not in _SHIPPED:
        if len(_SHIPPED) > 8:
            _SHIPPED.clear()  # refs of earlier conversions
        _SHIPPED[value] = ray.get(value)
    return _SHIPPED[value]


def _write_shards(batch: dict[str, np.ndarray], *, job: Any, loader: Any, candidates: Any, images_per_file: int,
                  todo: np.ndarray, threads: int = 1) -> dict[str, np.ndarray]:
    """A task's work: the shards ``todo[i]`` for each ``i`` of the batch, each written whole, prepared
    on ``threads`` threads. A shard already recorded was written by an earlier attempt of this task:
    it is not written again."""
    job, loader, candidates = _shipped(job), _shipped(loader), _shipped(candidates)
    results = []
    for shard in todo[batch["id"]].tolist():
        written = job.recorded(shard)
        results.append(_result(written) if written else _write_shard(
            job, shard, shard_rows(candidates, shard, images_per_file), loader, isolated=False, threads=threads))
        if results[-1]["error"]:
            break
    return {key: np.asarray([result[key] for result in results], dtype=object) for key in results[0]}


def _warm(batch: dict[str, np.ndarray], refs: list[Any]) -> None:
    import ray.data  # noqa: F401  (what Ray Data's tasks run: ~1 s to import in a fresh worker)

    with contextlib.suppress(Exception):
        _shipped(refs[0]).prepare(batch, _shipped(refs[1]))


@functools.cache
def _warm_task() -> Any:
    import ray

    return ray.remote(num_cpus=1, max_retries=0)(_warm)


def _write_shard(job: ShardJob, shard: int, rows: dict[str, np.ndarray], loader: Any, *,
                 isolated: bool, threads: int = 1) -> dict[str, Any]:
    """One shard written: its record as JSON, or what stopped it: the message, and the exception
    itself (pickled with its traceback) for the driver to raise as it was. Errors are returned, not
    raised, because Ray Data drops the blocks of failed tasks (see ``_data_context``)."""
    import ray

    try:
        record = job.write(shard, rows, loader, isolated=isolated, threads=threads)
    except RaydsconvError as error:  # ours (strict mode, a full disk): raised as it is, not as Ray's task failure
        return {"record": "", "error": str(error), "exception": _pickled(error)}
    except Exception as error:
        return {"record": "", "error": f"shard {shard}: {type(error).__name__}: {error}",
                "exception": _pickled(error)}
    record.node = ray.get_runtime_context().get_node_id()
    return _result(record)


def _result(record: ShardRecord) -> dict[str, Any]:
    return {"record": json.dumps(record.to_dict()), "error": "", "exception": b""}


def _pickled(error: Exception) -> bytes:
    import ray

    try:
        return ray.cloudpickle.dumps((error, traceback.format_exc()))
    except Exception:  # an exception that cannot be pickled: its message will do
        return b""


class _RemoteTraceback(Exception):
    """Where a worker's exception came from, shown as its cause (as concurrent.futures does)."""

    def __str__(self) -> str:
        return "\n" + self.args[0]


def _record(result: dict[str, Any]) -> ShardRecord:
    """The record of a task's result, or the task's error raised."""
    if not result["error"]:
        return ShardRecord.from_dict(json.loads(result["record"]))
    if result["exception"]:
        try:
            error, trace = pickle.loads(result["exception"])
        except Exception:  # its class cannot be imported here: the message instead
            pass
        else:
            error.__cause__ = _RemoteTraceback(trace)
            raise error
    raise ConversionError(result["error"])


def candidate_table(listing: Listing, images_per_file: int) -> pa.Table:
    """Every candidate, in order, with what the loader needs: shipped to the workers once."""
    candidate = np.arange(len(listing), dtype=np.int64)
    return pa.table({
        "candidate": candidate,
        "path": pa.array(listing.paths, type=pa.string()),
        "label": listing.labels,
        "shard": candidate // images_per_file,
        **listing.columns,
    })


def shard_rows(candidates: pa.Table, shard: int, images_per_file: int) -> dict[str, np.ndarray]:
    """The candidates of one shard, as the columns ShardJob.write takes."""
    block = candidates.slice(shard * images_per_file, images_per_file)
    return {name: block.column(name).to_numpy(zero_copy_only=False) for name in block.column_names}


def run_shards(listing: Listing, shards: list[int], job: ShardJob, *, images_per_file: int,
               concurrency: int | None) -> Iterator[ShardRecord]:
    """Write ``shards`` of ``listing`` on Ray; yield each shard's record as it is committed. Closing
    the iterator early (an interrupt) stops the tasks still running. Ray Data shows no progress of its
    own: the caller counts images (records as they come, and each task's ``ProgressNote``)."""
    import ray

    if not shards:
        return
    try:  # shipped once through the object store, not with every task
        ray.cloudpickle.dumps(listing.loader)
        loader = ray.put(listing.loader)
    except Exception as error:
        raise InvalidArgumentError(
            f"the source cannot be sent to Ray workers ({type(error).__name__}: {error}); make it picklable "
            "(e.g. no open file handles, locks or lambdas holding local state)"
        ) from None
    candidates = candidate_table(listing, images_per_file)
    shipped = {"job": ray.put(job), "loader": loader, "candidates": ray.put(candidates),
               "images_per_file": images_per_file}
    threads = _threads_per_task(len(shards), concurrency)
    slots = max(1, _cpus(concurrency) // threads)  # shard tasks that run at once
    if len([node for node in ray.nodes() if node["Alive"]]) == 1:
        _warm_workers(shipped, shard_rows(candidates, shards[0], images_per_file), min(len(shards), slots))
    written = set()
    for record in _stream(shards, shipped, concurrency, threads, slots):
        written.add(record.shard)
        yield record
    lost = [shard for shard in shards if shard not in written]
    for record in filter(None, map(job.recorded, lost)):
        lost.remove(record.shard)  # written and recorded before its task's worker died on a later shard
        yield record
    if lost:
        yield from _write_isolated(lost, shipped, concurrency)


def _cpus(concurrency: int | None) -> int:
    import ray

    return concurrency or int(ray.cluster_resources().get("CPU", 1))


def _threads_per_task(num_shards: int, concurrency: int | None) -> int:
    """CPUs (and threads) per shard task: those that one task per shard would leave idle, shared
    out, no more than the largest node has (a task needing more could never be scheduled)."""
    import ray

    largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=1)
    return int(max(1, min(_cpus(concurrency) // num_shards, largest)))


def _warm_workers(shipped: dict[str, Any], rows: dict[str, np.ndarray], count: int) -> None:
    """Start ``count`` workers on what the conversion's tasks will do first: fetch the job and the
    loader, and prepare the first input (its result is dropped). A fresh worker's first input pays
    for the imports of the decode path (torch's ~2 CPU-s for the JPEG fast path, none for inputs
    that do not take it); done here, that overlaps with Ray Data starting its executor, and the
    tasks then reuse the warm workers. Failures are ignored: the input fails again
    in its shard's task, which handles it. On one node only: on several, where a warm task lands is
    up to Ray, and a node whose worker is still warming gets no shard of a small conversion."""
    first = {key: values[:1] for key, values in rows.items()}
    for _ in range(count):
        _warm_task().remote(first, [shipped["job"], shipped["loader"]])


def _stream(shards: list[int], shipped: dict[str, Any], concurrency: int | None, threads: int,
            slots: int) -> Iterator[ShardRecord]:
    """The shards through Ray Data, each record as it comes; the shards whose task kept dying are
    left out (the caller writes them in isolation)."""
    import ray

    with _data_context():
        # Each block holds positions in ``shards`` only: the candidates travel once, in ``shipped``, so
        # the driver's memory does not grow with the number of shards. A block per shard, unless that
        # is more than TASKS_PER_SLOT tasks per slot: Ray Data costs the driver ~22 ms of CPU per task,
        # which on a large cluster is more than the tasks take (ImageNet-1k's 1282 shards: 28 s).
        blocks = min(len(shards), TASKS_PER_SLOT * slots)
        dataset = ray.data.range(len(shards), override_num_blocks=blocks)
        with warnings.catch_warnings():  # max_retries has no named parameter yet (Ray 2.60 deprecates the others)
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            dataset = dataset.map_batches(
                _write_shards,
                fn_kwargs={**shipped, "todo": np.asarray(shards, dtype=np.int64), "threads": threads},
                batch_size=None,  # a whole block per call
                batch_format="numpy",
                num_cpus=threads,
                compute=ray.data.TaskPoolStrategy(size=concurrency),
                max_retries=SHARD_TASK_RETRIES,
            )
        rows = iter(dataset.iter_rows())
        try:
            for row in rows:
                yield _record(row)
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()  # shuts Ray Data's executor down: tasks still running are cancelled


def _write_isolated(shards: list[int], shipped: dict[str, Any], concurrency: int | None) -> Iterator[ShardRecord]:
    """Write ``shards`` again, a task each, every input prepared in a child process; yield each
    record as it comes. Closing the iterator early cancels the tasks still running."""
    import ray

    logger.warning("the task of shard%s %s died %d times; writing %s again with every input in a separate "
                   "process, to skip the inputs that crash it", "s" if len(shards) > 1 else "",
                   ", ".join(map(str, shards)), SHARD_TASK_RETRIES + 1, "them" if len(shards) > 1 else "it")
    candidates = ray.get(shipped["candidates"])
    waiting, running = list(shards), {}
    try:
        while waiting or running:
            while waiting and len(running) < (concurrency or len(shards)):
                shard = waiting.pop(0)
                rows = shard_rows(candidates, shard, shipped["images_per_file"])
                running[_isolated_task().remote(shipped["job"], shard, rows, shipped["loader"])] = shard
            ready, _ = ray.wait(list(running), num_returns=1)
            shard = running.pop(ready[0])
            yield _record(_isolated_result(ready[0], shard))
    finally:
        for ref in running:
            ray.cancel(ref, force=True)


def _isolated_result(ref: Any, shard: int) -> dict[str, Any]:
    """The isolated task's result; its worker dying again is no single input's doing."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError:
        raise  # an error of ours, raised as such
    except ray.exceptions.RayError as error:
        raise ConversionError(
            f"shard {shard}: its task died {SHARD_TASK_RETRIES + 1} times, then {ISOLATED_TASK_RETRIES + 1} "
            f"more with every input prepared in a separate process ({type(error).__name__}): no single input "
            "is to blame (a lost node, too little memory, or a crash while writing); run the same command "
            "again to resume"
        ) from None


def _write_shard_isolated(job: ShardJob, shard: int, rows: dict[str, np.ndarray], loader: Any) -> dict[str, Any]:
    return _write_shard(job, shard, rows, loader, isolated=True)


@functools.cache
def _isolated_task() -> Any:
    import ray

    return ray.remote(num_cpus=1, max_retries=ISOLATED_TASK_RETRIES)(_write_shard_isolated)


@contextmanager
def _data_context():
    """Our settings for Ray Data, restored afterwards so the caller's session is left as it was.

    Ray Data reserves part of the CPUs for each operator of a plan; ours is a single
    operator, and on a small node the reservation left a CPU idle while the first tasks ran
    (measured on 2 CPUs: 530 -> 700 images/s, parity with a multiprocessing.Pool).
    Its progress bars count blocks (shards here), so they are off: the conversion shows one bar
    counting images. Its log lines go where ``raydsconv.cluster.ray_logs_to_file`` sends them.
    """
    from ray.util.debug import log_once

    from raydsconv.cluster import data_context, fixed_size_data

    log_once("ray_data_progress_manager_disabled")  # Ray Data's warning that its bars are off: on purpose
    context = data_context()
    settings = {
        # A task that fails for good (its worker died SHARD_TASK_RETRIES + 1 times) is dropped, not
        # fatal: the other shards go on, and run_shards writes the dropped ones in isolation. Our own
        # errors never fail a task: _write_shard returns them.
        "max_errored_blocks": -1,
        "enable_progress_bars": False,
        "op_resource_reservation_enabled": False,
    }
    saved = {name: getattr(context, name) for name in settings}
    try:
        for name, value in settings.items():
            setattr(context, name, value)
        with fixed_size_data():
            yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
