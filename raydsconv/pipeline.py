"""Builds and runs the Ray Data plan; the only module that composes Ray Data.

    range(shards to write), one block each ──map_batches(write that shard)──▶ records

The candidates (paths, labels, loader columns) are shipped to the workers once, through the object
store; each block names one shard. The task that gets it reads, prepares and writes that whole shard
(``raydsconv.shards.ShardJob``) and saves its record, so a shard is written by exactly one task,
whatever Ray fuses, splits or retries, and pixels never travel through the object store or the
driver. Only the shard's record (a few numbers per sample) comes back.

When there are fewer shards than CPUs (a small dataset, a large cluster), a shard's task does not
prepare alone: helper tasks on the idle CPUs prepare some of its batches (``_FannedOut``) and hand
the prepared rows back through the object store; the task writes every batch in order, so the bytes
are the same whoever prepared them.

A task whose worker dies (a decoder's segfault on a malicious file, an out-of-memory kill, a lost
node) is retried ``SHARD_TASK_RETRIES`` times (Ray Data's own default is forever, which loops on an
input that crashes every time); then Ray Data drops it and the other shards go on. Every shard that
did not come back is written once more by a task of its own that prepares each input in a child
process (``raydsconv.isolation``): an input that crashes it is skipped with the signal as its reason,
or fails the conversion in strict mode; a shard whose task still dies fails the conversion.
"""

from __future__ import annotations

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
from raydsconv.shards import ShardJob, ShardRecord, in_batches
from raydsconv.sources import Listing

logger = logging.getLogger(__name__)

MAX_HELPERS = 16  # helper tasks per shard task, when CPUs outnumber the shards to write
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
                  todo: np.ndarray, helpers: int = 0) -> dict[str, np.ndarray]:
    """A task's work: the shards ``todo[i]`` for each ``i`` of the batch (normally one), each written
    whole, with ``helpers`` helper tasks preparing some of its batches."""
    shipped = {"job": job, "loader": loader}
    job, loader, candidates = _shipped(job), _shipped(loader), _shipped(candidates)
    prepared = _FannedOut(shipped, job, loader, helpers) if helpers else None
    results = []
    for shard in todo[batch["id"]].tolist():
        results.append(_write_shard(job, shard, shard_rows(candidates, shard, images_per_file), loader,
                                    isolated=False, prepared=prepared))
        if results[-1]["error"]:
            break
    return {key: np.asarray([result[key] for result in results], dtype=object) for key in results[0]}


class _FannedOut:
    """Prepares a shard's rows on ``helpers`` helper tasks and in this task, handing the batches out
    in order. Of every ``helpers + 1`` batches the first is this task's, the others are sent to
    helpers a few batches ahead. This task never waits for a helper: while a helper's batch is not
    ready it prepares its own next batches (a few ahead, kept in memory); when it has none left it
    waits for the helper once helpers have delivered, and until then (a fresh worker still imports
    torch) prepares the helper's batch itself and drops the helper's result. So a helper slow to
    start costs nothing, and warm ones multiply the pace. Helper tasks are never cancelled: a
    cancel interrupts the worker wherever it is, and one interrupted while importing torch keeps a
    half-imported torch for every later task. Batches are
    smaller than ``batch_size`` so that a small shard still spreads.

    A helper that fails (its worker died: a crashing input, a lost node) is not retried: its batch is
    prepared here instead, so a crashing input crashes this task, which is retried and finally
    written in isolation like any other (see the module's docstring)."""

    AHEAD = 3  # batches each helper has queued

    def __init__(self, shipped: dict[str, Any], job: ShardJob, loader: Any, helpers: int):
        self.refs = [shipped["job"], shipped["loader"]]  # in a list: helpers fetch them once, not per call
        self.job, self.loader, self.helpers = job, loader, helpers
        self.helped = 0  # batches that helpers prepared

    def __call__(self, rows: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        import ray

        count = len(rows["candidate"])
        size = max(1, min(self.job.batch_size, -(-count // ((self.helpers + 1) * 4))))
        batches = list(in_batches(rows, size))
        window = self.helpers * self.AHEAD + 1
        theirs = [i for i in range(len(batches)) if i % (self.helpers + 1)]
        running: dict[int, Any] = {}
        prepared: dict[int, dict[str, np.ndarray]] = {}
        for i in range(len(batches)):
            while theirs and theirs[0] <= i + window and len(running) < self.helpers * self.AHEAD:
                j = theirs.pop(0)
                if j >= i and j not in prepared:  # not one this task took over meanwhile
                    running[j] = _prepare_task().remote(batches[j], self.refs)
            while i not in prepared:
                if i in running and ray.wait([running[i]], timeout=0)[0]:
                    prepared[i] = self._collect(running.pop(i), batches[i])
                    continue
                mine = next((k for k in range(i, min(i + window, len(batches)))
                             if k not in prepared and k not in running and k % (self.helpers + 1) == 0), None)
                if mine is None and i in running and self.helped:  # helpers are warm: worth the wait
                    prepared[i] = self._collect(running.pop(i), batches[i])
                    continue
                if mine is None:  # nothing of ours left to do meanwhile: take the helper's batch
                    mine = i
                    running.pop(i, None)  # its result is dropped (see the class's docstring)
                prepared[mine] = self.job.prepare(batches[mine], self.loader)
            yield prepared.pop(i)

    def _collect(self, ref: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import ray

        try:
            prepared = ray.get(ref)
        except ray.exceptions.RayError:
            return self.job.prepare(batch, self.loader)
        self.helped += 1
        return prepared


def _prepare_batch(batch: dict[str, np.ndarray], refs: list[Any]) -> dict[str, np.ndarray]:
    job, loader = _shipped(refs[0]), _shipped(refs[1])
    return job.prepare(batch, loader)


@functools.cache
def _prepare_task() -> Any:
    import ray

    return ray.remote(num_cpus=1, max_retries=0)(_prepare_batch)


def _write_shard(job: ShardJob, shard: int, rows: dict[str, np.ndarray], loader: Any, *,
                 isolated: bool, prepared: Any = None) -> dict[str, Any]:
    """One shard written: its record as JSON, or what stopped it: the message, and the exception
    itself (pickled with its traceback) for the driver to raise as it was. Errors are returned, not
    raised, because Ray Data drops the blocks of failed tasks (see ``_data_context``)."""
    import ray

    try:
        record = job.write(shard, rows, loader, isolated=isolated, prepared=prepared)
    except RaydsconvError as error:  # ours (strict mode, a full disk): raised as it is, not as Ray's task failure
        return {"record": "", "error": str(error), "exception": _pickled(error)}
    except Exception as error:
        return {"record": "", "error": f"shard {shard}: {type(error).__name__}: {error}",
                "exception": _pickled(error)}
    record.node = ray.get_runtime_context().get_node_id()
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
    shipped = {"job": ray.put(job), "loader": loader, "candidates": ray.put(candidate_table(listing, images_per_file)),
               "images_per_file": images_per_file}
    written = set()
    for record in _stream(shards, shipped, concurrency, _helpers(len(shards), concurrency)):
        written.add(record.shard)
        yield record
    lost = [shard for shard in shards if shard not in written]
    if lost:
        yield from _write_isolated(lost, shipped, concurrency)


def _helpers(num_shards: int, concurrency: int | None) -> int:
    """Helper tasks per shard task: the CPUs that one task per shard would leave idle, shared out."""
    import ray

    cpus = concurrency or int(ray.cluster_resources().get("CPU", 1))
    return min(MAX_HELPERS, max(0, cpus // num_shards - 1))


def _stream(shards: list[int], shipped: dict[str, Any], concurrency: int | None, helpers: int) -> Iterator[ShardRecord]:
    """The shards through Ray Data, each record as it comes; the shards whose task kept dying are
    left out (the caller writes them in isolation)."""
    import ray

    with _data_context():
        # One block per shard, holding only its position in ``shards``: the candidates travel once, in
        # ``shipped``, so the driver's memory does not grow with the number of shards.
        dataset = ray.data.range(len(shards), override_num_blocks=len(shards))
        with warnings.catch_warnings():  # max_retries has no named parameter yet (Ray 2.60 deprecates the others)
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            dataset = dataset.map_batches(
                _write_shards,
                fn_kwargs={**shipped, "todo": np.asarray(shards, dtype=np.int64), "helpers": helpers},
                batch_size=None,  # a whole block per call
                batch_format="numpy",
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

    from raydsconv.cluster import data_context

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
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
