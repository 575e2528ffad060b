"""A folder of images without class sub-folders: every regular file below it, in sorted path order
(as ``raydsconv.sources.folder`` walks a class). Unlabeled (target ``none``), or labeled by a table
(``labels=``): a CSV or Parquet file mapping each file to its class, as ImageNet's validation set and
most Kaggle sets ship.

A table row names its file by path relative to the folder (``val/img1.jpg``) or by that path without
its extension (``val/img1``, e.g. ImageNet's ``ILSVRC2012_val_00000001``). Its class is a name
(classes: the sorted distinct names, as ImageFolder sorts folders) or an index (classes "0" ... "N").
Files the table does not mention, and rows whose file is missing, are skipped with the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from raydsconv.errors import InvalidArgumentError
from raydsconv.sources.folder import FolderLoader, relative_files
from raydsconv.sources.listing import PATH_BYTES, Listing, Skipped, files_fingerprint, path_text, recorded_paths

KEY_COLUMNS = ("path", "file", "filename", "file_name", "image", "image_id", "id", "name")
LABEL_COLUMNS = ("label", "class", "class_name", "category", "target")


@dataclass(frozen=True)
class LabelsTable:
    """A table of (file, class) rows. ``key_column`` / ``label_column`` name its columns; by default
    the first of KEY_COLUMNS / LABEL_COLUMNS it has, or its only two columns in order."""

    path: str
    key_column: str | None = None
    label_column: str | None = None

    def read(self) -> tuple[list[str], list]:
        """(keys, labels) of every row; a table that cannot be used raises one line naming it."""
        table = _read_table(Path(self.path))
        key, label = self._columns(table.column_names)
        if not str(table.schema.field(key).type).endswith("string"):  # a CSV's "0001" must stay "0001"
            table = _read_table(Path(self.path), text_column=key)
        keys = [_normal_key(str(k)) for k in table.column(key).to_pylist()]
        labels = table.column(label).to_pylist()
        if any(value is None for value in labels) or any(k == "None" for k in keys):
            raise InvalidArgumentError(f"labels table {self.path}: empty cells in columns {key!r}/{label!r}")
        return keys, labels

    def _columns(self, names: list[str]) -> tuple[str, str]:
        def pick(given: str | None, known: tuple[str, ...], what: str, position: int) -> str:
            if given is not None:
                if given not in names:
                    raise InvalidArgumentError(f"labels table {self.path} has no column {given!r}; its columns: "
                                               f"{', '.join(names)}")
                return given
            found = next((name for name in known if name in names), None)
            if found is None and len(names) == 2:
                found = names[position]
            if found is None:
                raise InvalidArgumentError(f"labels table {self.path}: which column holds the {what}? Its columns: "
                                           f"{', '.join(names)}; name it with label_columns=(FILE, LABEL) "
                                           "(CLI: --label-columns FILE LABEL)")
            return found

        return pick(self.key_column, KEY_COLUMNS, "file names", 0), pick(self.label_column, LABEL_COLUMNS, "labels", 1)


def _read_table(path: Path, text_column: str | None = None):
    import pyarrow as pa
    import pyarrow.csv as csv
    import pyarrow.parquet as pq

    if not path.is_file():
        raise InvalidArgumentError(f"labels table {path} does not exist")
    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        # file names are text whatever they look like (e.g. "0001")
        types = {text_column: pa.string()} if text_column else {}
        return csv.read_csv(path, convert_options=csv.ConvertOptions(strings_can_be_null=False, column_types=types))
    except Exception as error:
        raise InvalidArgumentError(f"labels table {path} cannot be read as {'Parquet' if path.suffix == '.parquet' else 'CSV'} "
                                   f"({type(error).__name__}: {error})") from None


def _normal_key(key: str) -> str:
    return key.replace("\\", "/").removeprefix("./")


def list_files(root: str | os.PathLike) -> tuple[Path, list[str], list[Skipped]]:
    """Every regular file below ``root`` (relative, sorted walk order), and the odd entries."""
    root = Path(root).absolute()
    paths, skipped = relative_files(root, root)
    if not paths:
        raise InvalidArgumentError(f"source folder {str(root)!r} contains no files")
    return root, paths, skipped


def list_unlabeled_folder(root: str | os.PathLike) -> Listing:
    """Every file below ``root`` as an unlabeled candidate."""
    root, paths, skipped = list_files(root)
    return _listing(root, paths, np.full(len(paths), -1, dtype=np.int64), [], skipped,
                    {"kind": "files", "root": str(root), "num_candidates": len(paths)}, [])


def list_labeled_files(root: str | os.PathLike, table: LabelsTable) -> Listing:
    """The files below ``root`` that ``table`` labels, with their classes."""
    root, paths, skipped = list_files(root)
    keys, values = table.read()
    classes, indices = _classes(table.path, values)
    by_key: dict[str, list[int]] = {}
    for row, key in enumerate(keys):
        by_key.setdefault(key, []).append(row)
    name = Path(table.path).name
    kept, labels = [], []
    for path in paths:
        stem = str(PurePosixPath(path).with_suffix(""))
        rows = by_key.get(path) or by_key.get(stem)
        if rows is None:
            skipped.append(Skipped(path, f"not in the labels table {name}"))
        elif len({indices[r] for r in rows}) > 1:
            skipped.append(Skipped(path, f"the labels table {name} gives it {len(rows)} different labels"))
        else:
            kept.append(path)
            labels.append(indices[rows[0]])
    found = set(paths) | {str(PurePosixPath(path).with_suffix("")) for path in paths}
    skipped += [Skipped(key, f"in the labels table {name}, but no such file in the source") for key in by_key
                if key not in found]
    if not kept:
        raise InvalidArgumentError(f"no file of {str(root)!r} is in the labels table {table.path} (e.g. the table "
                                   f"names {keys[0]!r}, the folder holds {paths[0]!r})")
    description = {"kind": "files_with_labels", "root": str(root), "labels": str(Path(table.path).absolute()),
                   "num_candidates": len(kept)}
    return _listing(root, kept, np.asarray(labels, dtype=np.int64), classes, skipped, description,
                    [str(Path(table.path).absolute())])


def _classes(where: str, values: list) -> tuple[list[str], list[int]]:
    """Class names (sorted distinct names, or "0".."N" for indices) and each row's index."""
    if all(isinstance(value, (int, np.integer)) and not isinstance(value, bool) for value in values):
        if min(values) < 0:
            raise InvalidArgumentError(f"labels table {where}: label {min(values)} is not a class index (>= 0)")
        return [str(i) for i in range(max(values) + 1)], [int(value) for value in values]
    names = [str(value) for value in values]
    classes = sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    return classes, [index[name] for name in names]


def _listing(root: Path, paths: list[str], labels: np.ndarray, classes: list[str], skipped: list[Skipped],
             description: dict, also_fingerprinted: list[str]) -> Listing:
    texts, exact = recorded_paths(paths)
    return Listing(
        classes=classes,
        paths=texts,
        labels=labels,
        loader=FolderLoader(str(root)),
        description=description,
        skipped=sorted((item.as_text() for item in skipped), key=lambda item: item.path),
        columns={} if exact is None else {PATH_BYTES: exact},
        fingerprint=files_fingerprint(str(root), [*paths, *also_fingerprinted], skipped),
    )


__all__ = ["LabelsTable", "list_labeled_files", "list_unlabeled_folder", "path_text"]
