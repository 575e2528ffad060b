"""The issue-15 tar baseline as a whole command: a plain multiprocessing.Pool reads and validates each
file as raydsconv's --validate full does (Pillow: header, EXIF orientation, JPEGs decoded at 1/8
scale), and webdataset's ShardWriter in the parent writes {key}.jpg + {key}.cls, 1000 samples per
shard, in ImageFolder order (sorted; class index from the folder). Bad files are skipped. No Ray.

    .venv/bin/python benchmarks/webdataset_convert.py SOURCE OUTPUT [--processes N]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import sys
import warnings
from pathlib import Path

import webdataset as wds
from PIL import ExifTags, Image

IMAGES_PER_FILE = 1000


def validate(data: bytes) -> bool:
    """The Pillow calls of raydsconv.images.inspect_image(validation="full")."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            image.getexif().get(ExifTags.Base.Orientation, 1)
            if image.format == "JPEG":
                image.draft(None, (max(1, width // 8), max(1, height // 8)))
            image.load()
        return True
    except Exception:
        return False


def read(path: str) -> bytes | None:
    with open(path, "rb") as file:
        data = file.read()
    return data if validate(data) else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    classes = sorted(p.name for p in args.source.iterdir() if p.is_dir())
    samples = [(str(path), label) for label, name in enumerate(classes)
               for path in sorted((args.source / name).iterdir()) if path.is_file()]
    args.output.mkdir(parents=True)
    written = 0
    with multiprocessing.Pool(args.processes) as pool, \
            wds.ShardWriter(str(args.output / "samples-%05d.tar"), maxcount=IMAGES_PER_FILE, verbose=0) as sink:
        for key, data in enumerate(pool.imap(read, [path for path, _ in samples], chunksize=16)):
            if data is not None:
                sink.write({"__key__": f"{key:09d}", "jpg": data, "cls": samples[key][1]})
                written += 1
    print(f"{written} of {len(samples)} images into {-(-written // IMAGES_PER_FILE)} shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
