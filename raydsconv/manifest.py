"""The on-disk contract between writers and readers.

``manifest.json`` sits in the dataset's hidden folder ``.raydsconv-dataset/`` (raydsconv.layout) and
is written last, atomically: no manifest, no dataset. It is versioned; a reader refuses a version it
does not know. Per-sample facts (source path, label, shard, row, original size and format) live in
``index.parquet`` beside it (the manifest's ``index_file``), one row per stored sample, shared by every
format.

Paths (the index's ``path``, ``skipped`` here, class names) are UTF-8 text: a name that is not UTF-8
has each odd byte written ``\\xNN``; the index then adds ``path_bytes``, the exact bytes of such
names (null for the others), see ``raydsconv.sources.listing``.

Versions: 1 first; 2 adds ``plan``, the conversion plan that wrote the dataset (raydsconv.plan), so
that running the same conversion again recognises it as done; with it, HDF5 files are written through
a Python file object (a full disk must not crash libhdf5) and ``dataset.h5`` without timestamps, so
their bytes differ from version 1's (same datasets, same values, now the same bytes on every run);
an index may have ``path_bytes`` (names that are not UTF-8); 3 moves ``manifest.json`` and
``index.parquet`` from beside the shards into ``.raydsconv-dataset/``, so that tools pointed at the
folder (DuckDB or polars on ``*.parquet``, ``pyarrow.dataset``, ``ray.data.read_parquet``, Hugging
Face ``datasets``) see only the shards; the shards' bytes are unchanged. Readers read all three.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raydsconv.errors import ManifestError
from raydsconv.layout import (
    INDEX_FILE,
    MANIFEST_FILE,
    PLAN_NAME,
    WORK_DIR,
    index_file_for,
    manifest_file_for,
    manifest_path,
    write_atomically,
)

FORMAT_VERSION = 3


@dataclass(frozen=True)
class ShardFile:
    name: str  # relative to the dataset root
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Shard:
    index: int
    num_samples: int
    files: dict[str, ShardFile]  # role ("images", "labels", ...) -> file


@dataclass(frozen=True)
class Manifest:
    format: str
    params: dict[str, Any]  # the format's parameters (shape, mode, resize policy, ...)
    num_samples: int
    classes: list[str]
    shards: list[Shard]
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    source: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    index_file: str = INDEX_FILE  # relative to the dataset root
    library_version: str = ""
    format_version: int = FORMAT_VERSION
    plan: dict[str, Any] | None = None  # the conversion plan (raydsconv.plan) that wrote it; None before v2

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "library_version": self.library_version,
            "format": self.format,
            "params": self.params,
            "num_samples": self.num_samples,
            "classes": self.classes,
            "class_to_idx": self.class_to_idx,
            "index_file": self.index_file,
            "shards": [
                {
                    "index": shard.index,
                    "num_samples": shard.num_samples,
                    "files": {
                        role: {"name": f.name, "bytes": f.bytes, "sha256": f.sha256}
                        for role, f in shard.files.items()
                    },
                }
                for shard in self.shards
            ],
            "skipped": self.skipped,
            "source": self.source,
            "settings": self.settings,
            "plan": self.plan,
        }

    @property
    def file(self) -> str:
        """Where this manifest sits, relative to the dataset root."""
        return manifest_file_for(self.format_version)

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_FILE) -> "Manifest":
        """Validate and build; every problem raises ManifestError naming ``where`` and the field."""

        def fail(problem: str) -> ManifestError:
            return ManifestError(f"{where}: {problem}")

        if not isinstance(data, dict):
            raise fail("expected a JSON object at the top level")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise fail("missing or non-integer 'format_version'")
        if version > FORMAT_VERSION or version < 1:
            raise fail(
                f"format_version {version} is not supported by this raydsconv (it reads 1..{FORMAT_VERSION});"
                " upgrade raydsconv or re-convert the dataset"
            )
        try:
            shards = [
                Shard(
                    index=int(item["index"]),
                    num_samples=int(item["num_samples"]),
                    files={
                        role: ShardFile(str(f["name"]), int(f["bytes"]), str(f["sha256"]))
                        for role, f in item["files"].items()
                    },
                )
                for item in data["shards"]
            ]
            manifest = cls(
                format=str(data["format"]),
                params=dict(data["params"]),
                num_samples=int(data["num_samples"]),
                classes=[str(c) for c in data["classes"]],
                shards=shards,
                skipped=list(data.get("skipped", [])),
                source=dict(data.get("source", {})),
                settings=dict(data.get("settings", {})),
                index_file=str(data.get("index_file", index_file_for(version))),
                library_version=str(data.get("library_version", "")),
                format_version=version,
                plan=dict(data["plan"]) if data.get("plan") is not None else None,
            )
        except KeyError as error:
            raise fail(f"missing field {error.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise fail(f"malformed field: {error}") from None
        if [s.index for s in shards] != list(range(len(shards))):
            raise fail("shards must be listed in order 0, 1, 2, ...")
        for name in [manifest.index_file, *(f.name for s in shards for f in s.files.values())]:
            if not _inside(name):
                raise fail(f"file name {name!r} is not a relative path inside the dataset")
        for shard in shards:
            for shard_file in shard.files.values():
                if f"-{shard.index:05d}." not in Path(shard_file.name).name:  # layout.shard_file_name
                    raise fail(f"shard {shard.index} lists {shard_file.name}, a file of another shard")
        if sum(s.num_samples for s in shards) != manifest.num_samples:
            raise fail("num_samples does not equal the sum of the shards' sample counts")
        return manifest

    def write(self, root: str | os.PathLike) -> Path:
        """Write atomically (temporary file + rename), where its version puts it, so a reader never sees
        half a manifest; a failure (a full disk) leaves no temporary file."""
        root = Path(root)
        text = json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n"

        def write(temporary: Path) -> None:
            with open(temporary, "w") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o644)

        write_atomically(root / self.file, write, make_folder=True)
        return root / self.file


def _inside(name: str) -> bool:
    """A file name the manifest may hold: relative, and not climbing out of the dataset."""
    path = Path(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def load_manifest(root: str | os.PathLike, *, check_files: bool = True) -> Manifest:
    """Read and validate the manifest of the dataset at ``root`` (``.raydsconv-dataset/manifest.json``,
    or ``manifest.json`` before version 3); with ``check_files``, also the cheap checks of
    ``raydsconv.checks`` (every shard file there with its recorded size, the index's row count)."""
    root = Path(root)
    path = manifest_path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: not a directory; expected a dataset written by raydsconv")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        if (root / WORK_DIR / PLAN_NAME).exists():
            raise ManifestError(f"{path}: no manifest yet: {root} holds an unfinished conversion; run the same "
                                "convert command again to finish it") from None
        from raydsconv.migration import predecessor_hint  # a stat: is it hpc_pytorch_loader's output?

        hint = predecessor_hint(root)
        if hint is not None:
            raise ManifestError(hint) from None
        raise ManifestError(
            f"{path}: no manifest; {root} is not a finished raydsconv dataset (was the conversion interrupted?)"
        ) from None
    except (OSError, ValueError) as error:
        raise ManifestError(f"{path}: cannot read manifest: {error}") from None
    manifest = Manifest.from_dict(data, where=str(path))
    if check_files:
        from raydsconv.checks import check_on_open

        check_on_open(root, manifest)
    return manifest
