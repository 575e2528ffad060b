"""tar with full validation against WebDataset + the same validation in a Pool, and what validation
costs per image (issue 15). Whole commands, each a fresh process, wall clock, medians of --repeats, all
in one run so that the ratios hold on a shared machine. Run by hand, alone on the machine:

    .venv/bin/python benchmarks/tar_validation.py [--small 3000] [--images 15000] [--sample 500]

  * raydsconv CLI ``--format tar`` (``--validate full``, the default) and the baseline
    benchmarks/webdataset_convert.py (a 2-process Pool validating as raydsconv does, webdataset's
    ShardWriter in the parent), on --small and --images photo-like JPEGs: the fixed cost F and the
    marginal rate of each from t = F + N / rate, and the ratios;
  * in this process, over --sample of the same JPEGs held in memory: microseconds per image of each
    check (raydsconv's full and header validation, the baseline's copy of the full one, and for
    comparison a full-scale decode, a 1/8-scale grayscale decode and a candidate cheaper check: the
    header plus a walk of the JPEG's markers through every entropy-coded byte, nothing decoded),
    against the CPU time per image of the tar conversion at its marginal rate.

libjpeg only warns on bad entropy-coded data (Pillow drops the warnings); what makes a decode fail is
data that ends unterminated (truncation, no EOI) or a bogus marker. The walk checks the markers alone,
so it rejects truncation, a missing EOI and most stray markers as the decode does, but it is not the
same check: it rejects some stray markers that libjpeg skips with a warning and does not check the
parameters of the segments after the first scan (what libjpeg checks of a stray SOS, DHT, ...).
"""

from __future__ import annotations

import io
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from common import benchmark_parser, imagenet_like_folder
from fixed_cost import fit, subset, timed
from PIL import Image
from webdataset_convert import validate as baseline_validate

from raydsconv.images import inspect_image

HERE = Path(__file__).parent
PYTHON = sys.executable


def ours(source: Path, output: Path) -> list[str]:
    return [PYTHON, "-m", "raydsconv.cli", "convert", str(source), str(output), "--format", "tar", "--no-progress"]


def webdataset(source: Path, output: Path) -> list[str]:
    return [PYTHON, str(HERE / "webdataset_convert.py"), str(source), str(output)]


def pillow_decode(data: bytes, *, scale: int = 1, mode: str | None = None) -> None:
    with Image.open(io.BytesIO(data)) as image:
        if scale > 1:
            image.draft(mode, (max(1, image.width // scale), max(1, image.height // scale)))
        image.load()


NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # not a stuffed 0xFF00, not a restart marker


def marker_walk(data: bytes) -> None:
    """Raise ValueError unless the JPEG's segments chain from SOI to EOI, each scan's entropy-coded
    data ending at a marker: every byte is looked at (for 0xFF), nothing is decoded."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("no SOI")
    position, end = 2, len(data)
    while position + 2 <= end:
        if data[position] != 0xFF:
            raise ValueError(f"no marker at byte {position}")
        marker = data[position + 1]
        if marker == 0xD9:  # EOI; what follows is ignored, as libjpeg does
            return
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte, stand-alone markers
            position += 1 if marker == 0xFF else 2
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xDA:  # SOS: its entropy-coded data runs up to the next marker
            found = NEXT_MARKER.search(data, position)
            position = found.start() if found else end
    raise ValueError("truncated: no EOI")


def header_and_walk(data: bytes) -> None:
    if inspect_image(data, validation="header").source_format == "JPEG":
        marker_walk(data)


CHECKS: dict[str, Callable[[bytes], object]] = {
    "raydsconv full (1/8-scale decode)": lambda data: inspect_image(data, validation="full"),
    "raydsconv header": lambda data: inspect_image(data, validation="header"),
    "baseline's copy of full": baseline_validate,
    "Pillow full-scale decode": pillow_decode,
    "Pillow 1/8 scale, grayscale": lambda data: pillow_decode(data, scale=8, mode="L"),
    "header + marker walk (candidate)": header_and_walk,
}


def check_costs(folder: Path, count: int, repeats: int) -> dict[str, float]:
    """Microseconds per image of each check, over the first ``count`` files: medians of ``repeats`` passes."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())[:count]
    images = [path.read_bytes() for path in files]
    costs = {}
    for name, check in CHECKS.items():
        passes = []
        for _ in range(repeats):
            started = time.perf_counter()
            for data in images:
                check(data)
            passes.append((time.perf_counter() - started) / len(images) * 1e6)
        costs[name] = statistics.median(passes)
    return costs


def main() -> int:
    parser = benchmark_parser(__doc__, images=15000)
    parser.add_argument("--small", type=int, default=3000)
    parser.add_argument("--sample", type=int, default=500, help="images for the per-check costs")
    args = parser.parse_args()
    full = imagenet_like_folder(args.workdir, args.images)
    sizes = {args.small: subset(full, args.workdir, args.small), args.images: full}
    out = args.workdir / "tar-validation-out"
    times: dict[str, list[float]] = {}
    loads = [os.getloadavg()[0]]  # others' work on a shared machine shows here
    for _ in range(args.repeats):
        for n in sizes:
            times.setdefault(f"raydsconv tar {n}", []).append(timed(ours(sizes[n], out), out))
            times.setdefault(f"webdataset {n}", []).append(timed(webdataset(sizes[n], out), out))
        loads.append(os.getloadavg()[0])
    median = {name: statistics.median(values) for name, values in times.items()}
    cpus = len(os.sched_getaffinity(0))
    print(f"\nwhole commands, wall clock, medians of {args.repeats} ({cpus} CPUs; 1-minute load average "
          f"before and after each repeat: {', '.join(f'{load:.1f}' for load in loads)})")
    for name, value in median.items():
        print(f"  {name:<24}{value:8.2f} s   {[round(v, 2) for v in times[name]]}")
    print(f"\n{'':<16}{'F (s)':>8}{'marginal img/s':>16}{f'{args.small} img/s':>12}{f'{args.images} img/s':>12}")
    rates = {}
    for tool in ("raydsconv tar", "webdataset"):
        small, large = median[f"{tool} {args.small}"], median[f"{tool} {args.images}"]
        fixed, rates[tool] = fit(args.small, args.images, small, large)
        print(f"{tool:<16}{fixed:>8.1f}{rates[tool]:>16.0f}{args.small / small:>12.0f}{args.images / large:>12.0f}")
    for n in sizes:
        print(f"raydsconv tar / webdataset at {n} images: {median[f'webdataset {n}'] / median[f'raydsconv tar {n}']:.2f}x")
    print(f"raydsconv tar / webdataset, marginal rates: {rates['raydsconv tar'] / rates['webdataset']:.2f}x")

    costs = check_costs(full, args.sample, args.repeats)
    budget = cpus * 1e6 / rates["raydsconv tar"]
    print(f"\nper-image checks in one process, {args.sample} images, medians of {args.repeats} passes; "
          f"raydsconv tar's marginal CPU time: {budget:.0f} us/image ({cpus} CPUs x {1e6 / rates['raydsconv tar']:.0f} us wall)")
    for name, cost in costs.items():
        print(f"  {name:<36}{cost:8.0f} us/image   {cost / budget:6.1%} of that")
    saved = costs["raydsconv full (1/8-scale decode)"] - costs["header + marker walk (candidate)"]
    print(f"the candidate instead of full: {saved:.0f} us/image less, {saved / budget:.1%} of the CPU time; "
          f"at {args.images} images on {cpus} CPUs about {saved * args.images / cpus / 1e6:.1f} s of wall clock")
    return 0


if __name__ == "__main__":
    sys.exit(main())
