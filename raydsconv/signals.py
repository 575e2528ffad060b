"""SIGINT and SIGTERM during a conversion: stop cleanly instead of dying mid-write.

Inside ``with stop_on_signals() as stopped:`` either signal raises ``Stop`` in the main thread
(a BaseException, so that no ``except Exception`` on the way swallows it) and records which one came;
the caller then stops its work and reports. Outside the main thread signals cannot be caught, and
nothing changes.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop(BaseException):
    """Raised by the handler; carries the signal number."""


class Stopped:
    """Which signal came (None: none yet)."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._deferring = False
        self._handler = None

    def reinstall(self) -> None:
        """Take the signals back: Ray's core installs a SIGTERM handler of its own when it starts in
        this process (it prints a stack dump and exits)."""
        if self._handler is not None:
            for number in SIGNALS:
                signal.signal(number, self._handler)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A signal inside this block is only recorded: the block finishes."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False


@contextmanager
def stop_on_signals() -> Iterator[Stopped]:
    stopped = Stopped()
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return

    def handler(signal_number: int, frame) -> None:
        first = stopped.signal_number is None
        stopped.signal_number = signal_number
        if first and not stopped._deferring:  # a second signal must not interrupt the clean-up
            raise Stop(signal_number)

    stopped._handler = handler
    previous = {number: signal.signal(number, handler) for number in SIGNALS}
    try:
        yield stopped
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
