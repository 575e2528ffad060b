"""Shared by the benchmarks: their common options, the generated ImageNet-like folder and a
whole-machine memory probe."""

from __future__ import annotations

import argparse
import os
import shutil
import threading
import time
from pathlib import Path

from raydsconv.samples import write_image_folder


# The benchmarks start Ray clusters of their own; an earlier local ray.init may have left
# ~/.ray/auth_token behind, which would switch them to token auth.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def benchmark_parser(doc: str, *, images: int = 3000) -> argparse.ArgumentParser:
    """The options the conversion and reading benchmarks share (add your own to it)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--images", type=int, default=images)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rdc-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    return parser


def imagenet_like_folder(workdir: Path, images: int) -> Path:
    """Photo-like JPEGs (quality 90, ~110 KB, 500x375 ... 1024x768) in 10 classes, made once."""
    source = Path(workdir) / f"imagenet-like-{images}"
    if not source.exists():
        print(f"generating {images} photo-like JPEGs in {source} ...", flush=True)
        partial = source.with_suffix(".partial")
        write_image_folder(partial, num_images=images, num_classes=10, noise=9.0)
        partial.rename(source)
    return source


def fresh(output: Path) -> Path:
    """``output`` emptied: converting the same plan into a finished output again does nothing at all."""
    shutil.rmtree(output, ignore_errors=True)
    return output


def memory_in_use() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(fields["MemTotal"].split()[0]) - int(fields["MemAvailable"].split()[0])) * 1024


class PeakMemory:
    """Most memory in use on the machine above the level at entry, polled every 0.1 s: every
    process counts, Ray's workers included."""

    def __enter__(self):
        self.base = self.peak = memory_in_use()
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, memory_in_use())
            time.sleep(0.1)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    @property
    def megabytes(self) -> float:
        return (self.peak - self.base) / 1e6
