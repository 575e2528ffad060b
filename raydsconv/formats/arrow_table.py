"""The row layout shared by the Arrow-based formats (parquet, ipc): one row per sample.

``image`` is the struct ``{bytes, path}`` that Hugging Face ``datasets`` uses for its ``Image``
feature, holding the original file bytes; the schema metadata declares ``image`` as an Image and
``label`` as a ClassLabel with the class names, so ``datasets`` returns PIL images and names.
With dense labels ``mask`` (the mask file's bytes, also an Image) takes the place of ``label``."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def sample_schema(classes: list[str], dense: bool = False) -> pa.Schema:
    if dense:
        target = ("mask", IMAGE_TYPE, {"_type": "Image"})
    elif classes:
        target = ("label", pa.int64(), {"_type": "ClassLabel", "names": list(classes)})
    else:  # class names unknown while writing (a torch Dataset without them): a plain integer
        target = ("label", pa.int64(), {"dtype": "int64", "_type": "Value"})
    features = {
        "image": {"_type": "Image"},
        target[0]: target[2],
        "path": {"dtype": "string", "_type": "Value"},
        "width": {"dtype": "int32", "_type": "Value"},
        "height": {"dtype": "int32", "_type": "Value"},
        "source_format": {"dtype": "string", "_type": "Value"},
    }
    return pa.schema(
        [("image", IMAGE_TYPE), target[:2], ("path", pa.string()), ("width", pa.int32()),
         ("height", pa.int32()), ("source_format", pa.string())],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )


def batch_to_table(batch: dict[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    """Rows of a pipeline batch as a table of ``schema`` (the bytes are copied once, into Arrow)."""
    paths = [str(p) for p in batch["path"]]
    names = [p.rsplit("/", 1)[-1] for p in paths]
    if "mask" in schema.names:
        mask_names = [f"{name.rsplit('.', 1)[0]}.mask.{ext}" for name, ext in zip(names, batch["mask_extension"])]
        target = _image_struct(batch["mask_data"], mask_names)
    else:
        target = pa.array(batch["label"], type=pa.int64())
    return pa.Table.from_arrays(
        [_image_struct(batch["data"], names), target, pa.array(paths, type=pa.string()),
         pa.array(batch["width"], type=pa.int32()), pa.array(batch["height"], type=pa.int32()),
         pa.array([str(f) for f in batch["source_format"]], type=pa.string())],
        schema=schema,
    )


def _image_struct(data: np.ndarray, names: list[str]) -> pa.StructArray:
    return pa.StructArray.from_arrays([pa.array(list(data), type=pa.binary()), pa.array(names, type=pa.string())],
                                      fields=list(IMAGE_TYPE))


def row_image_and_target(rows: pa.Table | pa.RecordBatch, row: int) -> tuple[bytes, int | bytes]:
    """The image bytes of ``row`` and its label, or its mask bytes with dense labels."""
    image = _column(rows, "image").field("bytes")[row].as_py()
    if "mask" in rows.schema.names:
        return image, _column(rows, "mask").field("bytes")[row].as_py()
    return image, int(rows.column("label")[row].as_py())


def _column(rows: pa.Table | pa.RecordBatch, name: str) -> pa.Array:
    column = rows.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
