"""What a person sees while a conversion runs, on stderr: a line per phase ("starting Ray (2 CPUs)…"),
then one progress bar counting images, with images/s, the time left and the inputs skipped so far.

In a terminal or a Jupyter notebook the bar is tqdm's (``tqdm.auto``: a widget where ipywidgets is
installed); anywhere else (a SLURM log, a pipe) it is a plain line every ``PLAIN_EVERY_S`` seconds.
``enabled=False`` shows nothing at all. No Ray here: the conversion feeds the counts in.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from typing import Callable, Mapping, TextIO

from tqdm import tqdm

PLAIN_EVERY_S = 30.0  # a line this often where no bar can be drawn
POLL_EVERY_S = 0.5  # how often the bar asks for the counts of the shards being written

# shard -> (inputs done, inputs skipped) of the shards being written, leaving out those in ``finished``
Poll = Callable[[set], Mapping[int, tuple[int, int]]]


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:
        return False


def counted(number: int, noun: str, plural: str = "") -> str:
    """``1 shard``, ``1,282 shards``; ``counted(5, "class", "classes")``."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


class Progress:
    """The voice of one conversion: ``say`` a phase, ``images`` for the bar."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr

    @property
    def interactive(self) -> bool:
        """A bar can be drawn: a terminal, or a notebook."""
        try:
            return self.stream.isatty() or _in_notebook()
        except (AttributeError, ValueError):  # a closed or odd stream
            return False

    def say(self, line: str) -> None:
        if self.enabled:
            self.stream.write(line + "\n")
            self.stream.flush()

    def images(self, total: int, *, done: int = 0, skipped: int = 0, poll: Poll | None = None) -> "ImagesBar":
        """The bar over ``total`` inputs, ``done`` of them (``skipped`` of those) already converted
        before; ``poll`` tells how far the shards being written have come."""
        return ImagesBar(self, total, done=done, skipped=skipped, poll=poll)


class ImagesBar:
    """Counts inputs (images) converted: whole shards as their records come back (``finished``), and
    in between what ``poll`` reports for the shards still being written. A context manager."""

    def __init__(self, progress: Progress, total: int, *, done: int, skipped: int, poll: Poll | None):
        self.progress, self.total, self.poll = progress, total, poll
        self.base = (done, skipped)
        self.done_shards: dict[int, tuple[int, int]] = {}
        self.finished_counts = (0, 0)  # the sums over done_shards, kept as they come (not summed per shard)
        self.partial: Mapping[int, tuple[int, int]] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.bar = None
        self.started = self.last_line = 0.0

    def __enter__(self) -> "ImagesBar":
        if not self.progress.enabled:
            return self
        self.started = self.last_line = time.monotonic()
        if self.progress.interactive:
            with warnings.catch_warnings():  # in Jupyter without ipywidgets: tqdm's text bar, without its advice
                warnings.simplefilter("ignore")
                from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.base[0], desc="converting", unit=" images",
                            file=self.progress.stream, dynamic_ncols=True, smoothing=0.1,
                            postfix=f"{self.base[1]:,} skipped")
        else:
            self.progress.say(f"converting: {self.base[0]:,} of {counted(self.total, 'image')}")
        if self.poll is not None:
            self.thread = threading.Thread(target=self._poll, name="raydsconv-progress", daemon=True)
            self.thread.start()
        return self

    def finished(self, shard: int, inputs: int, skipped: int) -> None:
        """Shard ``shard`` is written: ``inputs`` inputs, ``skipped`` of them skipped."""
        with self.lock:
            before = self.done_shards.get(shard, (0, 0))
            self.done_shards[shard] = (inputs, skipped)
            done, bad = self.finished_counts
            self.finished_counts = (done + inputs - before[0], bad + skipped - before[1])
            self._show()

    def counts(self) -> tuple[int, int]:
        """(inputs done, inputs skipped) so far: the finished shards' sums, and the notes of the shards
        still being written (as many as run at once), so a count costs the same at the last shard as
        at the first."""
        done, skipped = self.base[0] + self.finished_counts[0], self.base[1] + self.finished_counts[1]
        for shard, (inputs, bad) in self.partial.items():
            if shard not in self.done_shards:
                done, skipped = done + inputs, skipped + bad
        return min(done, self.total), skipped

    def _poll(self) -> None:
        while not self.stopped.wait(POLL_EVERY_S):
            with self.lock:
                finished = set(self.done_shards)
            try:
                partial = self.poll(finished)
            except Exception:  # a count is not worth failing a conversion for
                continue
            with self.lock:
                self.partial = partial
                self._show()

    def _show(self) -> None:
        if not self.progress.enabled:
            return
        done, skipped = self.counts()
        if self.bar is not None:
            if done >= self.bar.n:
                self.bar.set_postfix_str(f"{skipped:,} skipped", refresh=False)
                self.bar.update(done - self.bar.n)  # tqdm's rate and time left follow the increments
            return
        now = time.monotonic()
        if now - self.last_line < PLAIN_EVERY_S:
            return
        self.last_line = now
        rate = (done - self.base[0]) / max(now - self.started, 1e-9)
        left = f"{tqdm.format_interval((self.total - done) / rate)} left" if rate > 0 else "time left unknown"
        self.progress.say(f"converting: {done:,} of {counted(self.total, 'image')} ({100 * done / max(self.total, 1):.0f}%), "
                          f"{rate:,.0f} images/s, {left}, {skipped:,} skipped")

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
        if self.bar is not None:
            with self.lock:
                if exc_info[0] is None:
                    self._show()
                self.bar.close()
