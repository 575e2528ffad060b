"""Every name in an output folder, in one place.

A finished dataset::

    OUTPUT/<format's shard files>   named by shard_file_name, e.g. images-00042.npy
    OUTPUT/.raydsconv-dataset/      raydsconv's own files, in a hidden folder (META_DIR) that the tools
        manifest.json               people point at the folder skip by their own rules (pyarrow.dataset,
        index.parquet               Ray Data, Hugging Face datasets, globs like OUTPUT/*.parquet);
                                    manifest.json written last: no manifest, no dataset; index.parquet:
                                    one row per stored sample
    OUTPUT/<format>/...             several formats from one pass: one dataset per sub-folder,
    OUTPUT/formats.json             and this file (written last) says which

Manifests before version 3 (META_SINCE) sit at OUTPUT/manifest.json with OUTPUT/index.parquet beside
the shards; readers still read them (manifest_path finds either).

While a conversion runs, its state lives beside the shards in a work folder that commit removes::

    OUTPUT/.raydsconv/lock          one conversion at a time (raydsconv.lock)
    OUTPUT/.raydsconv/plan.json     the plan being carried out: a re-run of the same plan resumes
    OUTPUT/.raydsconv/shards/       one record per committed shard (raydsconv.shards)
    OUTPUT/.raydsconv/build/        an --overwrite builds the new dataset here, beside the old one
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Callable

from raydsconv.errors import writing

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.parquet"
META_DIR = ".raydsconv-dataset"  # the dataset's own files (manifest, index), hidden from other tools
META_SINCE = 3  # the manifest version from which manifest and index sit in META_DIR (before: beside the shards)
MANIFEST_FILE = f"{META_DIR}/{MANIFEST_NAME}"  # relative to the dataset root
INDEX_FILE = f"{META_DIR}/{INDEX_NAME}"
FORMATS_NAME = "formats.json"  # at the top of a several-formats conversion: format -> sub-folder
MANIFEST_TEMPORARY_PREFIX = ".manifest-"  # of manifests written by raydsconv 0.1 (now: partial_path)

WORK_DIR = ".raydsconv"
LOCK_NAME = "lock"
PLAN_NAME = "plan.json"
RECORDS_DIR = "shards"
BUILD_DIR = "build"
RETIRED_DIR = "retired"  # the old dataset's files, moved aside while an overwrite is swapped in
PARTIAL_SUFFIX = ".partial"


def shard_file_name(stem: str, shard: int, suffix: str) -> str:
    """Deterministic names, e.g. images-00042.npy; the manifest lists them, readers never listdir."""
    return f"{stem}-{shard:05d}{suffix}"


def partial_path(final: Path) -> Path:
    """A temporary name for ``final`` that no other writer uses (a retried or orphaned task may still
    be writing the same shard), hidden, and recognisable as ours: ``.NAME.<pid>-<random>.partial``."""
    return final.with_name(f".{final.name}.{os.getpid()}-{os.urandom(4).hex()}{PARTIAL_SUFFIX}")


def write_atomically(final: Path, write: Callable[[Path], None], *, make_folder: bool = False) -> None:
    """``write(temporary)``, then rename it to ``final``: the file is there whole, or not at all. With
    ``make_folder``, a missing folder of ``final`` (META_DIR) is made. A failure removes the temporary
    file (and a folder made for it), and an OSError (a full disk) becomes an OutputWriteError naming
    ``final``."""
    temporary = partial_path(final)
    made = False
    try:
        with writing(final):
            if make_folder and not final.parent.is_dir():
                final.parent.mkdir()
                made = True
            write(temporary)
            os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        if made:
            with contextlib.suppress(OSError):
                final.parent.rmdir()
        raise


def is_partial(name: str) -> bool:
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX)


def record_name(shard: int) -> str:
    return f"{shard:05d}.json"


def dataset_root(top: Path, format_name: str, several: bool) -> Path:
    """Where one format's dataset goes: the top itself, or its sub-folder when several are written."""
    return top / format_name if several else top


def write_formats(top: Path, folders: dict[str, str]) -> None:
    """Several formats from one pass: ``formats.json`` says which sub-folder holds which format."""
    text = json.dumps({"formats": folders}, indent=1) + "\n"
    write_atomically(top / FORMATS_NAME, lambda temporary: temporary.write_text(text))


def read_formats(top: Path) -> dict[str, str] | None:
    """format -> sub-folder of a several-formats output; None where ``top`` holds one format. Raises
    ValueError ("cannot be read (why)") when the file is there but unreadable."""
    path = Path(top) / FORMATS_NAME
    if not path.is_file():
        return None
    try:
        folders = json.loads(path.read_text())["formats"]
        return {str(name): str(folder) for name, folder in folders.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"cannot be read ({error})") from None


def manifest_file_for(format_version: int) -> str:
    """Where a manifest of this version sits, relative to its dataset's root."""
    return MANIFEST_FILE if format_version >= META_SINCE else MANIFEST_NAME


def index_file_for(format_version: int) -> str:
    """Where the index of a manifest of this version sits when the manifest does not say."""
    return INDEX_FILE if format_version >= META_SINCE else INDEX_NAME


def manifest_path(root: Path) -> Path:
    """The manifest of the dataset at ``root``: in META_DIR, or at the root (before version 3); where a
    new one goes when there is none."""
    path = root / MANIFEST_FILE
    if not path.exists() and (root / MANIFEST_NAME).exists():
        return root / MANIFEST_NAME
    return path


def completion_marker(top: Path, several: bool) -> Path:
    """The file whose presence means the dataset at ``top`` is finished (written last by commit)."""
    return top / FORMATS_NAME if several else manifest_path(top)


def ours_pattern(shard_file_patterns: list[str]) -> re.Pattern:
    """Every top-level file name a conversion may leave behind, given the formats' shard patterns
    (the index and manifest: where manifests before version 3 put them)."""
    dataset_files = "|".join(re.escape(name) for name in (INDEX_NAME, MANIFEST_NAME, FORMATS_NAME))
    return re.compile(
        rf"({'|'.join(shard_file_patterns)}|{dataset_files}|{re.escape(MANIFEST_TEMPORARY_PREFIX)}.*"
        rf"|\..*{re.escape(PARTIAL_SUFFIX)})"
    )


def is_ours(entry: Path, pattern: re.Pattern) -> bool:
    """``entry`` (at the top of a dataset) is something a conversion writes: a file ``ours_pattern``
    matches, or the META_DIR folder."""
    if entry.is_dir():
        return entry.name == META_DIR
    return entry.is_file() and pattern.fullmatch(entry.name) is not None
