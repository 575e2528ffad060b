"""The row layout shared by the Arrow-based formats (parquet, ipc): one row per sample.

``image`` is the struct ``{bytes, path}`` that Hugging Face ``datasets`` uses for its ``Image``
feature, holding the original file bytes. Then a column per field of the target kind
(``raydsconv.targets``): class labels ``label`` int64, declared a ClassLabel with the class names;
masks ``mask``, the mask file's bytes, also an Image; an array field of shape (n,) a fixed-size
list; unlabeled images none. The schema metadata declares these features, so ``datasets`` returns
PIL images and class names."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa

from raydsconv.targets import Field

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _field_column(item: Field, classes: list[str]) -> tuple[pa.DataType, dict[str, Any]]:
    """A field's Arrow type and its ``datasets`` feature."""
    if item.encoded:
        return IMAGE_TYPE, item.feature or {"_type": "Image"}
    value = {"dtype": np.dtype(item.dtype).name, "_type": "Value"}
    if item.shape:
        length = math.prod(item.shape)
        return pa.list_(pa.from_numpy_dtype(np.dtype(item.dtype)), length), \
            item.feature or {"feature": value, "length": length, "_type": "List"}
    if item.indexed and classes:
        return pa.from_numpy_dtype(np.dtype(item.dtype)), {"_type": "ClassLabel", "names": list(classes)}
    # class names unknown while writing (a torch Dataset without them): a plain integer
    return pa.from_numpy_dtype(np.dtype(item.dtype)), item.feature or value


def sample_schema(classes: list[str], fields: tuple[Field, ...]) -> pa.Schema:
    columns = {item.name: _field_column(item, classes) for item in fields}
    features = {
        "image": {"_type": "Image"},
        **{name: feature for name, (_, feature) in columns.items()},
        "path": {"dtype": "string", "_type": "Value"},
        "width": {"dtype": "int32", "_type": "Value"},
        "height": {"dtype": "int32", "_type": "Value"},
        "source_format": {"dtype": "string", "_type": "Value"},
    }
    return pa.schema(
        [("image", IMAGE_TYPE), *((name, kind) for name, (kind, _) in columns.items()), ("path", pa.string()),
         ("width", pa.int32()), ("height", pa.int32()), ("source_format", pa.string())],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )


def batch_to_table(batch: dict[str, np.ndarray], schema: pa.Schema, fields: tuple[Field, ...]) -> pa.Table:
    """Rows of a pipeline batch as a table of ``schema`` (the bytes are copied once, into Arrow)."""
    paths = [str(p) for p in batch["path"]]
    names = [p.rsplit("/", 1)[-1] for p in paths]
    columns = []
    for item in fields:
        kind = schema.field(item.name).type
        if item.encoded:  # named like the image, e.g. 2007_000032.mask.png
            file_names = [f"{name.rsplit('.', 1)[0]}.{item.name}.{ext}"
                          for name, ext in zip(names, batch[item.extension_column])]
            columns.append(_image_struct(batch[item.data_column], file_names))
        elif item.shape:
            values = np.ascontiguousarray(batch[item.name], dtype=item.dtype).reshape(-1)
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(values, type=kind.value_type), kind.list_size))
        else:
            columns.append(pa.array(batch[item.name], type=kind))
    return pa.Table.from_arrays(
        [_image_struct(batch["data"], names), *columns, pa.array(paths, type=pa.string()),
         pa.array(batch["width"], type=pa.int32()), pa.array(batch["height"], type=pa.int32()),
         pa.array([str(f) for f in batch["source_format"]], type=pa.string())],
        schema=schema,
    )


def _image_struct(data: np.ndarray, names: list[str]) -> pa.StructArray:
    return pa.StructArray.from_arrays([pa.array(list(data), type=pa.binary()), pa.array(names, type=pa.string())],
                                      fields=list(IMAGE_TYPE))


def row_image_and_fields(rows: pa.Table | pa.RecordBatch, row: int, fields: tuple[Field, ...]
                         ) -> tuple[bytes, dict[str, Any]]:
    """The image bytes of ``row`` and its fields' values (an encoded field's bytes)."""
    image = _column(rows, "image").field("bytes")[row].as_py()
    values = {}
    for item in fields:
        column = _column(rows, item.name)
        if item.encoded:
            values[item.name] = column.field("bytes")[row].as_py()
        elif item.shape:
            values[item.name] = column[row].values.to_numpy(zero_copy_only=False).reshape(item.shape)
        else:
            values[item.name] = column[row].as_py()
    return image, values


def _column(rows: pa.Table | pa.RecordBatch, name: str) -> pa.Array:
    column = rows.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
