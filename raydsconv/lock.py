"""One conversion per output: an exclusive lock file that also works on network filesystems.

``fcntl`` locks can be missing or unreliable on the NFS/Lustre/GPFS that clusters use, so the lock is
a file created with ``O_EXCL`` (atomic there too) that names its holder (host, pid, process start
time) and is touched by a heartbeat. A lock whose holder is provably dead (same host, that process is
gone) is taken over; one held from another host is reported with its heartbeat and how to break it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from raydsconv.errors import OutputLockedError, writing

HEARTBEAT_SECONDS = 30.0


def _process_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return not started or _process_start(pid) in ("", started)


class OutputLock:
    """``with OutputLock(path):`` holds the lock for the block, or raises OutputLockedError naming the holder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.token = os.urandom(8).hex()  # this run's, so that its tasks can tell it still holds the lock
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "token": self.token}
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        for _ in range(3):  # a dead holder's lock is taken over, then we try again
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_dead()
                continue
            try:
                with writing(self.path), os.fdopen(descriptor, "w") as file:
                    json.dump(self.holder, file)
            except BaseException:  # e.g. a full disk: a lock naming no holder would block the next run
                self.path.unlink(missing_ok=True)
                raise
            self._heartbeat = threading.Thread(target=self._beat, name="raydsconv-lock-heartbeat", daemon=True)
            self._heartbeat.start()
            return
        raise OutputLockedError(f"{self.path}: could not take the lock; another conversion keeps taking it")

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
            self.path.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def _take_over_if_dead(self) -> None:
        try:
            text = self.path.read_text()
            holder = json.loads(text)
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile
        except (OSError, ValueError):
            holder, text, age = {}, None, 0.0
        host, pid = holder.get("host", "?"), holder.get("pid", "?")
        if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid, holder.get("process_start", "")):
            # Move the dead holder's lock aside and check it is the one we read, not a new holder's.
            aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                return
            if aside.read_text() != text:
                os.replace(aside, self.path)
                raise OutputLockedError(f"{self.path}: another conversion took this output's lock just now")
            aside.unlink()
            return
        where = "this host" if host == socket.gethostname() else f"host {host}"
        raise OutputLockedError(
            f"{self.path.parent.parent}: another conversion is writing here (pid {pid} on {where}, since "
            f"{holder.get('since', '?')}, last heartbeat {age:.0f} s ago); wait for it, or if it is gone "
            f"(e.g. its node died), delete {self.path} and run again"
        )


def still_held(path: Path, token: str) -> bool:
    """Whether the run with ``token`` still holds the lock at ``path`` (checked by its tasks, so that a
    task of a run that died or was taken over writes nothing more)."""
    try:
        return json.loads(Path(path).read_text()).get("token") == token
    except (OSError, ValueError, AttributeError):
        return False
