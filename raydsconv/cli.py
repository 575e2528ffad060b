"""`raydsconv convert | info | verify | migrate | bench | demo`. Wrong arguments print one line and exit with code 2."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

from raydsconv import __version__
from raydsconv.errors import ConversionInterrupted, InvalidArgumentError, ManifestError, RaydsconvError

# The library's messages name its parameters; the CLI's name its flags.
_FLAG_WORDS = [
    (re.compile(r"\bshape must be two positive integers \(height, width\), got \((\S+), (\S+)\)"),
     r"--shape H W must be two positive integers, got \1 \2"),
    (re.compile(r"\bshape=\(height, width\)"), "--shape H W"),
    (re.compile(r"\bformat=<one of them>"), "--format NAME"),
    (re.compile(r"^format_options for hdf5, which this conversion does not write$"),
     "--hdf5-compression is for --format hdf5, which this conversion does not write"),
    (re.compile(r"(?<![\w/.-])(images_per_file|batch_size|num_workers|mask_mode|mask_pad_value|root_in_archive)(?![\w/.])"),
     lambda match: "--" + match.group(1).replace("_", "-")),
]


def in_flag_words(message: str) -> str:
    """An error message of the library as the CLI's user reads it: ``--shape H W``, not ``shape=``."""
    for pattern, replacement in _FLAG_WORDS:
        message = pattern.sub(replacement, message)
    return message


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes print one line (and the usage on --help), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="raydsconv", description=__doc__)
    parser.add_argument("--version", action="version", version=f"raydsconv {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    convert = commands.add_parser("convert", help="convert an image folder into a sharded dataset")
    convert.add_argument("source", help="image folder with one sub-folder per class, or an (uncompressed) tar of one; "
                         "with --dense a folder of images/ and masks/ (or VOC's JPEGImages/ and SegmentationClass/)")
    convert.add_argument("output", help="dataset directory to create")
    convert.add_argument("--format", default="memmap",
                         help="output format(s): memmap (the default), hdf5 (both store pixels resized to --shape), "
                         "parquet, ipc, tar (these keep the original files); several as memmap,parquet")
    convert.add_argument("--shape", nargs=2, type=int, metavar=("H", "W"),
                         help="stored image height and width (memmap, hdf5: required)")
    convert.add_argument("--mode", default="RGB", help="RGB or L (default: RGB)")
    convert.add_argument("--resize", default="stretch", help="stretch, crop or pad (default: stretch)")
    convert.add_argument("--images-per-file", type=int, default=1000, help="samples per shard (default: 1000)")
    convert.add_argument("--batch-size", type=int, default=32, help="images per prepare call (default: 32)")
    convert.add_argument("--num-workers", type=int, help="max concurrent tasks (default: all CPUs)")
    convert.add_argument("--address", help="Ray cluster address (default: embedded Ray, or RAY_ADDRESS)")
    convert.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    convert.add_argument("--strict", action="store_true", help="fail on the first unreadable input")
    convert.add_argument("--draft", action="store_true", help="reduced-scale JPEG decoding (faster, approximate)")
    convert.add_argument("--validate", default="full", choices=["full", "header"],
                         help="flexible formats: decode every image (full, default) or check headers only")
    convert.add_argument("--root-in-archive", help="tar source: the folder inside the archive holding the classes")
    convert.add_argument("--hdf5-compression", choices=["gzip", "lzf"], help="compress hdf5 shards")
    convert.add_argument("--target", choices=["class", "mask", "none"],
                         help="what each image carries: a class label (class, default: its sub-folder or --labels), "
                              "a mask (mask, as --dense) or nothing (none: any folder of images, unlabeled)")
    convert.add_argument("--labels", metavar="TABLE", help="a CSV or Parquet file of (file, class) rows labelling "
                         "the images of SOURCE, a folder without class sub-folders (e.g. ImageNet's validation set)")
    convert.add_argument("--label-columns", nargs=2, metavar=("FILE", "LABEL"),
                         help="with --labels: the table's columns (default: found by name, e.g. path/id and label/class)")
    convert.add_argument("--dense", action="store_true", help="segmentation: every image has a mask, matched by name "
                         "(the same as --target mask)")
    convert.add_argument("--split", help="with --dense: a file naming the samples to take, one per line (VOC's "
                         "ImageSets), relative to the working directory or to SOURCE")
    convert.add_argument("--mask-mode", choices=["L", "I;16", "RGB"],
                         help="with --dense: uint8 class indices (L, default), uint16 ones (I;16) or colours (RGB)")
    convert.add_argument("--mask-pad-value", type=int,
                         help="with --dense and --resize pad: the masks' letterbox value (default: 255)")
    convert.add_argument("--no-progress", action="store_true",
                         help="print only the summary: no phases, no progress bar")
    convert.add_argument("--verbose", action="store_true",
                         help="also show Ray's own log lines and its workers' output (by default they go to a "
                         "file that the summary names)")

    info = commands.add_parser("info", help="describe a converted dataset")
    info.add_argument("dataset")
    info.add_argument("--json", action="store_true", help="print the description as JSON")

    verify = commands.add_parser("verify", help="check a converted dataset's files, hashes and index; exit 1 on any problem")
    verify.add_argument("dataset")
    verify.add_argument("--deep", action="store_true", help="also decode every stored image and mask")
    verify.add_argument("--format", help="only this format, for the output of a several-formats conversion")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")

    migrate = commands.add_parser("migrate", help="turn a dataset written by hpc_pytorch_loader into a raydsconv dataset")
    migrate.add_argument("old", help="the hpc_pytorch_loader output folder (metadata/, images/, labels/); only read")
    migrate.add_argument("new", help="dataset directory to create")
    migrate.add_argument("--overwrite", action="store_true", help="replace a raydsconv dataset already in NEW")

    bench = commands.add_parser("bench", help="measure reading speed of a converted dataset on this machine")
    bench.add_argument("dataset")
    bench.add_argument("--format", help="which format, for the output of a several-formats conversion")
    bench.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256])
    bench.add_argument("--max-workers", type=int, help="largest num_workers tried (default: the CPUs available)")
    bench.add_argument("--samples", type=int, default=2000, help="samples read per measurement (default: 2000)")
    bench.add_argument("--plot", metavar="FILE.png", help="draw images/s against num_workers (needs matplotlib)")
    bench.add_argument("--json", action="store_true", help="print the measurements as JSON")

    demo = commands.add_parser("demo", help="convert generated sample images and read them back")
    demo.add_argument("--workdir", help="where to write the sample folder and the dataset, and keep them "
                      "(default: a temporary folder, removed at the end)")
    demo.add_argument("--num-images", type=int, default=300)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "verbose", False):
        logging.getLogger("raydsconv").setLevel(logging.INFO)
    try:
        if args.command == "convert":
            return _convert(args)
        if args.command == "info":
            return _info(args)
        if args.command == "verify":
            return _verify(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "migrate":
            from raydsconv.migration import migrate

            print(migrate(args.old, args.new, overwrite=args.overwrite).summary())
            return 0
        from raydsconv.demo import run_demo

        return run_demo(args.workdir, num_images=args.num_images, say=print)
    except (InvalidArgumentError, ManifestError) as error:
        print(f"raydsconv: error: {in_flag_words(str(error))}", file=sys.stderr)
        return 2
    except OSError as error:  # permissions, a full disk, a vanished path, a Ray address that answers not
        print(f"raydsconv: error: {error}", file=sys.stderr)
        _log_traceback(error)
        return 2
    except (RaydsconvError, ConnectionError) as error:
        print(f"raydsconv: error: {in_flag_words(str(error))}", file=sys.stderr)
        _log_traceback(error)
        return 1
    except ConversionInterrupted as interrupted:
        print(f"raydsconv: {interrupted}", file=sys.stderr)
        return interrupted.exit_code


def _log_traceback(error: BaseException) -> None:
    """The terminal gets one line; the full traceback (with a Ray task's, for an error from one) is
    appended to ``raydsconv.log`` in the logs folder of this process's Ray session, if Ray ran."""
    from raydsconv.cluster import session_log

    log = session_log()
    if log is None:
        return
    try:
        with open(log, "a") as file:  # not through logging: it would print its own failures to stderr
            file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} raydsconv {' '.join(sys.argv[1:])}\n")
            file.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    except Exception:  # Ray's internals moved, or that disk is full too: the one line stands
        pass


def _convert(args: argparse.Namespace) -> int:
    from raydsconv.conversion import convert
    from raydsconv.formats import FORMATS, get_format
    from raydsconv.sources import SegmentationFolder

    if args.shape and not any(get_format(name.strip()).fixed_size for name in args.format.split(",") if name.strip()):
        fixed = " and ".join(name for name, fmt in FORMATS.items() if fmt.fixed_size)
        raise InvalidArgumentError(f"--shape is for the formats that store resized pixels ({fixed}); --format "
                                   f"{args.format} keeps the original images: leave out --shape")

    masks = args.dense or args.target == "mask"
    for option, value in (("--split", args.split), ("--mask-mode", args.mask_mode),
                          ("--mask-pad-value", args.mask_pad_value)):
        if value is not None and not masks:
            raise InvalidArgumentError(f"{option} needs --target mask (or --dense)")
    if args.label_columns and not args.labels:
        raise InvalidArgumentError("--label-columns needs --labels")
    mask_options = {name: value for name, value in (("mask_mode", args.mask_mode),
                                                    ("mask_pad_value", args.mask_pad_value)) if value is not None}
    report = convert(
        SegmentationFolder(args.source, split=args.split) if args.split else args.source,
        args.output,
        format=args.format,
        shape=tuple(args.shape) if args.shape else None,
        mode=args.mode,
        resize=args.resize,
        images_per_file=args.images_per_file,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        address=args.address,
        overwrite=args.overwrite,
        strict=args.strict,
        draft=args.draft,
        validation=args.validate,
        root_in_archive=args.root_in_archive,
        format_options={"hdf5": {"compression": args.hdf5_compression}} if args.hdf5_compression else None,
        verbose=args.verbose,
        progress=not args.no_progress,
        target=args.target,
        labels=args.labels,
        label_columns=tuple(args.label_columns) if args.label_columns else None,
        dense=args.dense,
        **mask_options,
    )
    print(report.summary())
    return 0


def _verify(args: argparse.Namespace) -> int:
    from raydsconv.verification import verify

    report = verify(args.dataset, deep=args.deep, format=args.format)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        for problem in report.problems:
            print(f"{'warning' if problem.warning else 'problem'}: {problem}")
        print(report.summary())
    return 0 if report.ok else 1


def _bench(args: argparse.Namespace) -> int:
    from raydsconv import bench

    if any(size <= 0 for size in args.batch_sizes) or args.samples <= 0:
        raise InvalidArgumentError("--batch-sizes and --samples must be positive")
    results = bench.run_bench(args.dataset, format=args.format, batch_sizes=tuple(args.batch_sizes),
                              max_workers=args.max_workers, samples=args.samples)
    if args.json:
        print(json.dumps({"measurements": bench.as_dicts(results), "recommendation": bench.recommendation(results)}))
    else:
        print(bench.table(results))
        print("\n" + bench.recommendation(results))
    if args.plot:
        print(f"plot written to {bench.plot(results, args.plot)}", file=sys.stderr)
    return 0


def describe(dataset: str) -> dict:
    from raydsconv.layout import read_formats
    from raydsconv.manifest import load_manifest

    folders = read_formats(Path(dataset))
    if folders is not None:  # several formats from one pass: describe each
        return {"path": str(dataset), "formats": {name: describe(str(Path(dataset) / folder))
                                                  for name, folder in folders.items()}}
    manifest = load_manifest(dataset)
    data = manifest.to_dict()
    return {
        "path": str(dataset),
        "format": manifest.format,
        "params": manifest.params,
        "num_samples": manifest.num_samples,
        "classes": manifest.classes,
        "num_shards": len(manifest.shards),
        "bytes": sum(f.bytes for s in manifest.shards for f in s.files.values()),
        "shards": data["shards"],
        "skipped": manifest.skipped,
        "source": manifest.source,
        "settings": manifest.settings,
        "library_version": manifest.library_version,
        "format_version": manifest.format_version,
        "index_file": manifest.index_file,  # relative to path: .raydsconv-dataset/index.parquet since version 3
    }


def _info(args: argparse.Namespace) -> int:
    info = describe(args.dataset)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for part in info["formats"].values() if "formats" in info else [info]:
        _print_info(part)
    return 0


def _print_info(info: dict) -> None:
    params = info["params"]
    print(f"{info['path']}: {info['format']} dataset, {info['num_samples']} samples in {info['num_shards']} shards, "
          f"{info['bytes'] / 1e6:.1f} MB")
    if "shape" in params:
        print(f"  images: {params['shape'][0]}x{params['shape'][1]} (height x width) {params['mode']}, resize={params['resize']}")
    if params.get("dense"):
        print(f"  targets: masks of mode {params['mask_mode']}")
    elif params.get("target"):
        print(f"  targets: {params['target']}")
    names = ", ".join(info["classes"][:10]) + (", ..." if len(info["classes"]) > 10 else "")
    print(f"  classes ({len(info['classes'])}): {names}")
    print(f"  source: {info['source'].get('kind')} {info['source'].get('root', '')}")
    print(f"  skipped inputs: {len(info['skipped'])}")
    for skipped in info["skipped"][:10]:
        print(f"    {skipped['path']}: {skipped['reason']}")


if __name__ == "__main__":
    sys.exit(main())
