"""Converting from ImageNet's archive layout (a tar of per-class tars) vs from the extracted folder.

    .venv/bin/python benchmarks/archive_input.py [--images 3000] [--workdir /tmp/rdc-bench] [--repeats 3]

Same run, same images, medians of --repeats, Ray start-up excluded: memmap 224x224 (decode-bound)
and parquet (full validation, I/O-bound), from the folder and from the archive.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from common import benchmark_parser, fresh, imagenet_like_folder

import raydsconv
from raydsconv.samples import write_tar_of_tars


def tar_of_tars(source: Path, archive: Path) -> Path:
    if archive.exists():
        return archive
    partial = archive.with_suffix(".partial")
    write_tar_of_tars(source, partial)
    partial.rename(archive)
    return archive


def main() -> int:
    parser = benchmark_parser(__doc__)
    args = parser.parse_args()
    workdir = args.workdir
    folder = imagenet_like_folder(workdir, args.images)
    archive = tar_of_tars(folder, workdir / f"imagenet-like-{args.images}.tar")
    from raydsconv.cluster import ensure_ray

    ensure_ray()
    runs = {(fmt, name): [] for fmt in ("memmap", "parquet") for name in ("folder", "tar of tars")}
    options = {"shape": (224, 224), "images_per_file": 500, "progress": False}
    raydsconv.convert(folder, fresh(workdir / "arch-warm"), **options)
    for _ in range(args.repeats):
        for (fmt, name), rates in runs.items():
            source = folder if name == "folder" else archive
            rates.append(raydsconv.convert(source, fresh(workdir / f"arch-{fmt}"), format=fmt, **options).images_per_second)
    print(f"\n{args.images} JPEGs; images/s, medians of {args.repeats}")
    for fmt in ("memmap", "parquet"):
        from_folder, from_tar = (statistics.median(runs[(fmt, n)]) for n in ("folder", "tar of tars"))
        print(f"{fmt:<8} folder {from_folder:>6.0f}   tar of tars {from_tar:>6.0f}   ratio {from_tar / from_folder:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
