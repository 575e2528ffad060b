"""What stays serial on the driver as a dataset grows (issue 15), and ImageNet-1k projected on a large
cluster from the measured per-image and per-shard costs.

Run by hand, alone on the machine (each part starts a ray.cluster_utils.Cluster of its own):

    flock /tmp/rdc-bench.lock .venv/bin/python benchmarks/driver_scale.py \
        [--sizes 10000,100000,1281167] [--run-sizes 10000,100000] [--nodes 4] [--workdir /tmp/rdc-driver-scale]

  * Sources, built once in --workdir: ImageNet-like folders of 1000 class folders (n00000000 ...)
    holding SIZE files in all, each a hard link to its class's one tiny JPEG (64x48): a listing of
    1.28 M files costs ~100 MB of directory entries, not 140 GB.
  * Per size, a fresh process on a fresh cluster of --nodes nodes of 1 CPU each (400 MB object store
    each, no dashboard, its own temp dir): for --run-sizes the real conversion (``raydsconv.convert``,
    memmap 16x16, 1000 per shard), its driver phases timed by wrapping the library's own functions;
    for the other sizes the same driver phases alone (listing, plan, lock and workspace, shipping the
    candidates to the object store, decoding one record per shard, commit from synthetic records of
    the real shape). Seconds, driver CPU seconds and the driver's peak RSS per phase (VmHWM, reset at
    each phase through /proc/self/clear_refs).
  * Costs, on a fresh cluster too: the per-image CPU cost from --realistic ImageNet-like JPEGs
    (~110 KB, 500x375 ... 1024x768) to memmap 224x224; the per-shard cost from the tiny 10 k folder
    at 625 and 20 images per shard (16 vs 500 shards); Ray Data's dispatch of S no-op shard tasks.
  * The projection of ImageNet-1k (1,281,167 images, 1000 per shard: 1282 shards) on --project-nodes
    x --project-cores CPUs: driver serial work (measured at the largest size) + N x per-image cost /
    CPUs + S x per-shard cost / CPUs, and the share of the driver's serial work in it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import imagenet_like_folder

from raydsconv.pipeline import TASKS_PER_SLOT

HERE = Path(__file__).resolve().parent
CLASSES = 1000
IMAGENET = 1_281_167
TINY = (64, 48)
TINY_SHAPE = (16, 16)


# ---------------------------------------------------------------- sources


def tiny_folder(workdir: Path, size: int) -> Path:
    """``size`` files in CLASSES class folders (the first ``size % CLASSES`` one more), each a hard link
    to its class's tiny JPEG; built once."""
    from raydsconv.samples import jpeg_bytes, photo_like

    root = workdir / f"tiny-{size}"
    if (root / ".complete").exists():
        return root
    base = workdir / "tiny-base"
    if not (base / ".complete").exists():
        base.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for c in range(CLASSES):
            (base / f"{c}.JPEG").write_bytes(jpeg_bytes(photo_like(rng, *TINY)))
        (base / ".complete").touch()
    print(f"linking {size:,} files into {root} ...", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    per_class, extra = divmod(size, CLASSES)
    for c in range(CLASSES):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True)
        source = str(base / f"{c}.JPEG")
        for i in range(per_class + (c < extra)):
            os.link(source, folder / f"n{c:08d}_{i}.JPEG")
    (root / ".complete").touch()  # a dot-file: not listed
    return root


def realistic_folder(workdir: Path, images: int) -> Path:
    """The benchmarks' ImageNet-like JPEGs (benchmarks/common.py): hard links to /tmp/rdc-bench's
    copy when there is one, else generated."""
    shared = Path("/tmp/rdc-bench") / f"imagenet-like-{images}"
    mine = workdir / f"imagenet-like-{images}"
    if not mine.exists() and shared.is_dir():
        partial = mine.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        for path in shared.rglob("*"):
            if path.is_file():
                (partial / path.relative_to(shared)).parent.mkdir(parents=True, exist_ok=True)
                os.link(path, partial / path.relative_to(shared))
        partial.rename(mine)
    return imagenet_like_folder(workdir, images)


# ---------------------------------------------------------------- measuring phases


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class Phases:
    """Wall seconds, process CPU seconds and peak RSS of named driver phases. Top-level phases reset
    the process's peak RSS (VmHWM) when they start and read it when they end; nested ones only time."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.peak: dict[str, int] = {}
        self.rss_after: dict[str, int] = {}
        self.depth = 0

    @contextlib.contextmanager
    def __call__(self, name: str):
        top = self.depth == 0
        if top:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")
        self.depth += 1
        started, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.depth -= 1
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu
            if top:
                self.peak[name] = max(self.peak.get(name, 0), _status("VmHWM"))
                self.rss_after[name] = _status("VmRSS")

    def reset(self) -> None:
        for values in (self.seconds, self.cpu, self.peak, self.rss_after):
            values.clear()

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def wrap(self, module, attribute: str, name: str) -> None:
        original = getattr(module, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            with self(name):
                return original(*args, **kwargs)

        setattr(module, attribute, timed)

    def as_dict(self) -> dict:
        return {"seconds": self.seconds, "cpu": self.cpu, "peak": self.peak, "rss_after": self.rss_after}


def instrument(phases: Phases) -> None:
    """Wrap the library's driver steps, where convert() looks them up."""
    import raydsconv.commit
    import raydsconv.conversion
    import raydsconv.manifest
    import raydsconv.pipeline
    import raydsconv.progress
    import raydsconv.sources.folder

    phases.wrap(raydsconv.conversion, "make_plan", "plan")
    phases.wrap(raydsconv.conversion, "list_source", "plan: list")
    phases.wrap(raydsconv.sources.folder, "files_fingerprint", "plan: list: fingerprint")
    phases.wrap(raydsconv.conversion.OutputLock, "acquire", "lock")
    phases.wrap(raydsconv.conversion, "open_workspace", "workspace")
    phases.wrap(raydsconv.conversion, "commit", "commit")
    phases.wrap(raydsconv.commit, "_write_index", "commit: index")
    phases.wrap(raydsconv.manifest.Manifest, "write", "commit: manifest")
    phases.wrap(raydsconv.pipeline, "candidate_table", "run: ship: table")
    phases.wrap(raydsconv.pipeline, "_record", "run: records")
    phases.wrap(raydsconv.progress.ImagesBar, "finished", "run: bar")

    run_shards, stream = raydsconv.pipeline.run_shards, raydsconv.pipeline._stream
    marks: dict[str, float] = {}

    def timed_stream(*args, **kwargs):
        marks["stream"] = time.perf_counter()
        phases.add("run: ship", marks["stream"] - marks["run"])
        first = True
        for record in stream(*args, **kwargs):
            if first:
                phases.add("run: first record", time.perf_counter() - marks["stream"])
                first = False
            yield record

    def timed_run(*args, **kwargs):
        with phases("run"):
            marks["run"] = time.perf_counter()
            yield from run_shards(*args, **kwargs)
        marks["run end"] = time.perf_counter()

    raydsconv.pipeline._stream = timed_stream
    raydsconv.pipeline.run_shards = timed_run

    commit = raydsconv.conversion.commit

    def after_commit(*args, **kwargs):
        try:
            return commit(*args, **kwargs)
        finally:
            marks["commit end"] = time.perf_counter()

    raydsconv.conversion.commit = after_commit
    phases.marks = marks


# ---------------------------------------------------------------- the cluster


@contextlib.contextmanager
def cluster(nodes: int):
    """A local multi-node Ray cluster (1 CPU per node), joined by this process; shut down after."""
    import ray
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="rdc-ds-")
    node_args = {"num_cpus": 1, "object_store_memory": 400 << 20}
    started = time.perf_counter()
    local = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False, "temp_dir": temp_dir})
    try:
        for _ in range(nodes - 1):
            local.add_node(**node_args)
        local.wait_for_nodes()
        ray.init(address=local.address, logging_level="WARNING", log_to_driver=False)
        print(f"cluster of {nodes} nodes up in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        local.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def warm_up(workdir: Path, nodes: int) -> None:
    """Start and warm a worker on every node (imports, the decode path), outside the measurements."""
    from raydsconv import convert

    output = workdir / "out-warm"
    shutil.rmtree(output, ignore_errors=True)
    convert(tiny_folder(workdir, 10_000), output, shape=TINY_SHAPE, images_per_file=10_000 // (4 * nodes),
            progress=False)
    shutil.rmtree(output, ignore_errors=True)


# ---------------------------------------------------------------- one size (child process)


def measure_size(workdir: Path, size: int, nodes: int, run: bool) -> dict:
    from raydsconv import convert

    source = tiny_folder(workdir, size)
    output = workdir / f"out-{size}"
    shutil.rmtree(output, ignore_errors=True)
    phases = Phases()
    instrument(phases)
    with cluster(nodes):
        if run:
            warm_up(workdir, nodes)
            phases.reset()
        started, cpu = time.perf_counter(), time.process_time()
        if run:
            report = convert(source, output, shape=TINY_SHAPE, images_per_file=1000, progress=True)
            shards, samples = report.num_shards, report.num_samples
            phases.add("report", time.perf_counter() - phases.marks["commit end"])
        else:
            shards, samples = driver_only(source, output, phases)
        phases.add("total", time.perf_counter() - started)
        phases.cpu["total"] = time.process_time() - cpu
    shutil.rmtree(output, ignore_errors=True)
    return {"size": size, "run": run, "shards": shards, "samples": samples, **phases.as_dict()}


def driver_only(source: Path, output: Path, phases: Phases) -> tuple[int, int]:
    """convert()'s driver steps without the workers: every step of raydsconv.conversion._run but the
    tasks, whose records are made here (not timed) as a worker makes them, then decoded as the
    driver decodes them (timed)."""
    import ray

    import raydsconv.conversion as conversion
    import raydsconv.pipeline as pipeline
    from raydsconv.commit import skipped_inputs
    from raydsconv.images import DEFAULT_MAX_PIXELS
    from raydsconv.layout import LOCK_NAME, dataset_root
    from raydsconv.manifest import ShardFile
    from raydsconv.progress import Progress
    from raydsconv.shards import ShardRecord, Target
    from raydsconv.workspace import work_dir

    plan, listing = conversion.make_plan(
        source, format="memmap", shape=TINY_SHAPE, mode="RGB", resize="stretch", images_per_file=1000, batch_size=32,
        num_workers=None, strict=False, draft=False, background=(255, 255, 255), pad_value=0,
        max_pixels=DEFAULT_MAX_PIXELS, validation="full", root_in_archive=None, format_options=None,
        mask_mode="L", mask_pad_value=255)
    work = work_dir(output)
    work.mkdir(parents=True, exist_ok=True)
    with conversion.OutputLock(work / LOCK_NAME):
        workspace = conversion.open_workspace(output, plan, overwrite=False)
        targets = [Target(fmt.format, dataset_root(workspace.root, fmt.name, plan.several), plan.params(fmt))
                   for fmt in plan.formats]
        for target in targets:
            target.root.mkdir(parents=True, exist_ok=True)
        results = []
        ipf, height, width = plan.images_per_file, *TINY_SHAPE
        for shard in range(plan.num_shards):  # what each task sends back (made outside the timings)
            start, stop = plan.shard_range(shard)
            record = ShardRecord(
                shard=shard,
                files={"memmap": {"images": ShardFile(f"images-{shard:05d}.npy", 128 + (stop - start) * height * width * 3,
                                                      "0" * 64),
                                  "labels": ShardFile(f"labels-{shard:05d}.npy", 128 + (stop - start) * 8, "1" * 64)}},
                kept=np.arange(start, stop, dtype=np.int64), labels=listing.labels[start:stop],
                width=np.full(stop - start, TINY[0], dtype=np.int32),
                height=np.full(stop - start, TINY[1], dtype=np.int32), source_format=["JPEG"] * (stop - start),
                node="0" * 56)
            results.append({"record": json.dumps(record.to_dict()), "error": "", "exception": b""})
        bar = Progress(True, open(os.devnull, "w")).images(len(listing))
        with phases("run"):
            with phases("run: ship"):  # as run_shards ships the source's loader and the candidates
                ray.put(listing.loader)
                ray.put(pipeline.candidate_table(listing, ipf))
            records = {}
            with bar:
                for result in results:
                    record = pipeline._record(result)
                    records[record.shard] = record
                    bar.finished(record.shard, len(record.kept) + len(record.skipped), len(record.skipped))
        ordered = [records[shard] for shard in range(plan.num_shards)]
        conversion.commit(workspace, plan, listing, targets, ordered, strict=False)
        with phases("report"):  # what _run computes for the ConversionReport after commit
            skipped_inputs(listing, ordered)
            sum(len(r.kept) for r in ordered)
            sum(f.bytes for r in ordered for f in r.all_files())
    with contextlib.suppress(OSError):
        work.rmdir()
    return plan.num_shards, sum(len(r.kept) for r in ordered)


# ---------------------------------------------------------------- per-image and per-shard costs (child process)


def measure_costs(workdir: Path, nodes: int, realistic: int, repeats: int) -> dict:
    """Per-image CPU cost (ImageNet-like JPEGs to memmap 224x224), per-shard cost (the tiny 10 k
    folder in 16 vs 500 shards) and Ray Data's dispatch of S no-op shard tasks, on a warm cluster."""
    from raydsconv import convert

    realistic_source, tiny = realistic_folder(workdir, realistic), tiny_folder(workdir, 10_000)
    output = workdir / "out-costs"
    times: dict[str, list[float]] = {}

    def seconds(source: Path, **options) -> float:
        shutil.rmtree(output, ignore_errors=True)
        report = convert(source, output, progress=False, **options)
        shutil.rmtree(output, ignore_errors=True)
        return report.seconds

    realistic_per_file = realistic // (3 * nodes)  # three shards per CPU
    with cluster(nodes):
        warm_up(workdir, nodes)
        seconds(realistic_source, shape=(224, 224), images_per_file=realistic_per_file)  # warm at 224x224 too
        for _ in range(repeats):
            times.setdefault("realistic", []).append(
                seconds(realistic_source, shape=(224, 224), images_per_file=realistic_per_file))
            for per_file in (625, 20):
                times.setdefault(f"tiny {per_file}", []).append(
                    seconds(tiny, shape=TINY_SHAPE, images_per_file=per_file))
        dispatch = {blocks: statistics.median(noop_dispatch(blocks) for _ in range(repeats))
                    for blocks in (16, 128, 1282)}
    return {"times": times, "realistic": realistic, "realistic_shards": -(-realistic // realistic_per_file),
            "dispatch": dispatch}


def _noop(batch: dict, **_) -> dict:
    return {"record": np.asarray([""] * len(batch["id"]), dtype=object)}


def noop_dispatch(blocks: int) -> float:
    """Wall seconds of ``blocks`` shard tasks that do nothing, through run_shards' Ray Data settings."""
    import ray

    from raydsconv.pipeline import SHARD_TASK_RETRIES, _data_context

    started = time.perf_counter()
    with _data_context():
        dataset = ray.data.range(blocks, override_num_blocks=blocks).map_batches(
            _noop, batch_size=None, batch_format="numpy", compute=ray.data.TaskPoolStrategy(size=None),
            max_retries=SHARD_TASK_RETRIES)
        count = sum(1 for _ in dataset.iter_rows())
    assert count == blocks
    return time.perf_counter() - started


# ---------------------------------------------------------------- the report

SERIAL = [  # (label, phase, minus these phases)
    ("plan: walk the folders", "plan: list", ["plan: list: fingerprint"]),
    ("plan: fingerprint (a stat per file)", "plan: list: fingerprint", []),
    ("plan: the rest", "plan", ["plan: list"]),
    ("lock", "lock", []),
    ("workspace", "workspace", []),
    ("run: ship the candidates", "run: ship", []),
    ("commit: index.parquet", "commit: index", []),
    ("commit: manifest", "commit: manifest", []),
    ("commit: the rest", "commit", ["commit: index", "commit: manifest"]),
    ("report", "report", []),
]
OVERLAPPED = [  # driver work while the tasks run
    ("run: decode the records", "run: records", []),
    ("run: progress bar", "run: bar", []),
]
TOP = ["plan", "lock", "workspace", "run", "commit", "report"]


def seconds_of(result: dict, phase: str, minus: list[str]) -> float:
    seconds = result["seconds"]
    return seconds.get(phase, 0.0) - sum(seconds.get(name, 0.0) for name in minus)


def serial_seconds(result: dict) -> float:
    return sum(seconds_of(result, phase, minus) for _, phase, minus in SERIAL)


def print_table(results: list[dict]) -> None:
    sizes = [r["size"] for r in results]
    head = "".join(f"{f'{s:,}' + ('' if r['run'] else '*'):>12}" for s, r in zip(sizes, results))
    growth = "".join(f"{f'{a // 1000:,}k->{b // 1000:,}k':>15}" for a, b in zip(sizes, sizes[1:]))
    print("\ndriver seconds per phase (* = driver phases alone, no tasks); growth = time ratio / size ratio "
          "(1.00 = linear)")
    print(f"{'phase':<38}{head}{growth}")
    for rows in (SERIAL, [("serial total", None, None)], OVERLAPPED):
        for label, phase, minus in rows:
            values = [serial_seconds(r) if phase is None else seconds_of(r, phase, minus) for r in results]
            ratios = "".join(f"{(b / a) / (nb / na) if a > 0 else float('nan'):>15.2f}"
                             for a, b, na, nb in zip(values, values[1:], sizes, sizes[1:]))
            print(f"{label:<38}{''.join(f'{v:>12.3f}' for v in values)}{ratios}")
        print()
    print("driver peak RSS per phase, MB (VmHWM during the phase; after it: VmRSS)")
    for phase in TOP:
        cells = "".join(f"{r['peak'].get(phase, 0) / 1e6:>7.0f} ({r['rss_after'].get(phase, 0) / 1e6:>4.0f})"
                        for r in results)
        print(f"{phase:<38}{cells}")
    for r in results:
        if r["run"]:
            s = r["seconds"]
            print(f"real run of {r['size']:,} ({r['shards']:,} shards): run {s['run']:.2f} s wall, first record after "
                  f"{s.get('run: first record', 0):.2f} s, driver CPU {r['cpu']['run']:.2f} s during the run; "
                  f"convert() {s['total']:.2f} s")


def project(results: list[dict], costs: dict, *, nodes: int, cores: int, local_nodes: int, local_cores: int) -> None:
    times = {name: statistics.median(values) for name, values in costs["times"].items()}
    shards_small, shards_large = 10_000 // 625, 10_000 // 20
    c_shard = (times["tiny 20"] - times["tiny 625"]) * local_cores / (shards_large - shards_small)
    n_real, s_real = costs["realistic"], costs["realistic_shards"]
    c_image = (times["realistic"] * local_cores - s_real * max(c_shard, 0.0)) / n_real
    dispatch = {int(blocks): seconds for blocks, seconds in costs["dispatch"].items()}
    d_blocks = sorted(dispatch)
    per_block = (dispatch[d_blocks[-1]] - dispatch[d_blocks[0]]) / (d_blocks[-1] - d_blocks[0])
    largest = max(results, key=lambda r: r["size"])
    scale = IMAGENET / largest["size"]
    serial = serial_seconds(largest) * scale
    overlapped = sum(seconds_of(largest, phase, minus) for _, phase, minus in OVERLAPPED) * scale
    shards = -(-IMAGENET // 1000)
    cpus = nodes * cores
    images = IMAGENET * c_image / cpus
    per_shard = shards * c_shard / cpus
    total = serial + images + per_shard
    waves = -(-shards // cpus) * (1000 * c_image + c_shard)
    tasks = min(shards, TASKS_PER_SLOT * cpus)  # run_shards' tasks: several shards to a task beyond that
    print(f"\nmeasured on {local_cores} cores ({costs['realistic']:,} ImageNet-like JPEGs -> memmap 224x224, "
          f"medians of {len(costs['times']['realistic'])}):")
    print(f"  per image  {c_image * 1e3:.2f} CPU-ms ({1 / c_image:,.0f} images/s per core; "
          f"{n_real / times['realistic'] / local_nodes:,.0f} per Ray CPU of this {local_nodes}-node cluster)")
    print(f"  per shard  {c_shard * 1e3:.1f} CPU-ms (10 k tiny images in {shards_small} vs {shards_large} shards: "
          f"{times['tiny 625']:.2f} vs {times['tiny 20']:.2f} s)")
    print("  Ray Data dispatch of no-op shard tasks: " + ", ".join(f"{b:,} in {s:.2f} s" for b, s in dispatch.items())
          + f" ({per_block * 1e3:.2f} ms per task)")
    print(f"\nImageNet-1k ({IMAGENET:,} images, 1000 per shard: {shards:,} shards) on {nodes} x {cores} = {cpus} CPUs:")
    print(f"  driver serial work      {serial:8.2f} s   (measured at {largest['size']:,})")
    print(f"  images / CPUs           {images:8.2f} s")
    print(f"  shards / CPUs           {per_shard:8.2f} s")
    print(f"  projected wall          {total:8.2f} s   driver serial {100 * serial / total:.1f} % of it")
    print(f"  (whole shards per CPU: {-(-shards // cpus)} waves of {1000 * c_image + c_shard:.2f} s = {waves:.2f} s "
          f"of tasks instead of {images + per_shard:.2f}; driver work while tasks run, overlapped: {overlapped:.2f} s, "
          f"dispatch of {tasks:,} tasks {tasks * per_block:.2f} s; Ray start-up and storage bandwidth not included)")


# ---------------------------------------------------------------- main


def child(arguments: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *arguments], stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    if done.returncode:
        raise SystemExit(f"{' '.join(arguments)} failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=f"10000,100000,{IMAGENET}")
    parser.add_argument("--run-sizes", default="10000,100000", help="sizes converted for real (the others: driver phases alone)")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rdc-driver-scale"))
    parser.add_argument("--realistic", type=int, default=3000, help="ImageNet-like JPEGs for the per-image cost")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--project-nodes", type=int, default=8)
    parser.add_argument("--project-cores", type=int, default=64)
    parser.add_argument("--no-costs", action="store_true", help="driver phases only, no projection")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = args.workdir
    if args.child:
        kind, *rest = args.child
        if kind == "size":
            result = measure_size(workdir, int(rest[0]), args.nodes, rest[1] == "run")
        else:
            result = measure_costs(workdir, args.nodes, args.realistic, args.repeats)
        print(json.dumps(result))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    run_sizes = {int(s) for s in args.run_sizes.split(",") if s}
    for size in sizes:
        tiny_folder(workdir, size)
    common = ["--nodes", str(args.nodes), "--workdir", str(workdir), "--realistic", str(args.realistic),
              "--repeats", str(args.repeats)]
    results = []
    for size in sizes:
        print(f"{size:,}: {'converting' if size in run_sizes else 'driver phases alone'} ...", file=sys.stderr, flush=True)
        results.append(child([*common, "--child", "size", str(size), "run" if size in run_sizes else "driver"]))
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    print_table(results)
    if not args.no_costs:
        print("per-image and per-shard costs ...", file=sys.stderr, flush=True)
        costs = child([*common, "--child", "costs"])
        (workdir / "costs.json").write_text(json.dumps(costs, indent=1))
        project(results, costs, nodes=args.project_nodes, cores=args.project_cores, local_nodes=args.nodes,
                local_cores=min(args.nodes, os.cpu_count() or 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
