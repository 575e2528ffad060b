"""Preparing inputs where a crash cannot take the shard down: each input in a forked child process.

An input that kills the process preparing it (a decoder's segfault on a malicious file, an
out-of-memory kill) cannot be caught as an exception: the task dies, Ray retries it, and it dies
again. For a shard whose task died that way, the pipeline writes it once more in this mode: a child
process prepares the inputs one at a time and sends each back; the parent, which never runs decoding
code, writes them. When the child dies, the input it was preparing is tried once more in a fresh
child (a coincidence, such as memory pressure from elsewhere, gets a second chance) and, if it kills
that one too, is marked bad with the signal that killed it, like any other bad input. Ray-free.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import numpy as np

from raydsconv.images import BadImage
from raydsconv.prepare import Preparation, prepare_batch

CRASH_ATTEMPTS = 2  # an input is skipped once it has killed this many fresh processes in a row
_REAP_SECONDS = 10  # a child that closed its pipe has exited, or is about to


class IsolatedPreparation:
    """``prepare(batch)`` gives what ``prepare_batch`` gives, each input prepared in a child process;
    inputs that crash it are marked bad (``ok=False``) with a reason such as
    "crashed the worker (signal 11)". A context manager: leaving it stops the child."""

    def __init__(self, loader: Any, preparation: Preparation):
        self.loader = loader
        self.preparation = preparation
        self._child: Any = None  # (process, connection) of the running child, if any

    def __enter__(self) -> "IsolatedPreparation":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def prepare(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Never empty: a shard's batches each hold at least one input."""
        prepared = [self._prepare_row({key: values[i : i + 1] for key, values in batch.items()})
                    for i in range(len(batch["candidate"]))]
        return {key: np.concatenate([row[key] for row in prepared]) for key in prepared[0]}

    def _prepare_row(self, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One input, in the child: its prepared row, or a bad row naming how it killed the child."""
        for _ in range(CRASH_ATTEMPTS):
            _, connection = self._running_child()
            try:
                connection.send(row)
                return connection.recv()
            except (EOFError, OSError):  # the child died with this input
                reason = _crash_reason(self._reap())
        return prepare_batch(row, loader=_Refused(reason), preparation=self.preparation)

    def _running_child(self) -> tuple[Any, Any]:
        if self._child is None:
            # fork: the child inherits the loader (the source) as it is, nothing is pickled or imported again
            context = multiprocessing.get_context("fork")
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_serve, args=(child_end, self.loader, self.preparation), daemon=True)
            process.start()
            child_end.close()  # so that the parent's reads end (EOFError) when the child dies
            self._child = (process, parent_end)
        return self._child

    def _reap(self) -> int | None:
        """Wait for the dead child; its exit code (negative: the signal that killed it)."""
        process, connection = self._child
        self._child = None
        connection.close()
        process.join(_REAP_SECONDS)
        if process.exitcode is None:  # closed its pipe yet lives on: do not wait for it
            process.kill()
            process.join()
        return process.exitcode

    def close(self) -> None:
        if self._child is not None:
            process, connection = self._child
            self._child = None
            connection.close()  # the child's next read ends, and it exits
            process.join(_REAP_SECONDS)
            if process.exitcode is None:
                process.kill()
                process.join()


def _crash_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"crashed the worker (signal {-exitcode})"
    if exitcode:
        return f"crashed the worker (exit code {exitcode})"
    return "crashed the worker"


def _serve(connection: Any, loader: Any, preparation: Preparation) -> None:
    """The child: prepare each row received and send it back, until the parent closes the pipe."""
    while True:
        try:
            row = connection.recv()
        except (EOFError, OSError):
            return
        connection.send(prepare_batch(row, loader=loader, preparation=preparation))


class _Refused:
    """A loader for an input known to crash: prepare_batch then marks it bad with ``reason``."""

    def __init__(self, reason: str):
        self.reason = reason

    def read(self, row: dict) -> Any:
        raise BadImage(self.reason)
