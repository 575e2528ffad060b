"""The row layout shared by the Arrow-based formats (parquet, ipc): one row per sample.

``image`` is the struct ``{bytes, path}`` that Hugging Face ``datasets`` uses for its ``Image``
feature, holding the original file bytes; the schema metadata declares ``image`` as an Image and
``label`` as a ClassLabel with the class names, so ``datasets`` returns PIL images and names."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def sample_schema(classes: list[str]) -> pa.Schema:
    features = {
        "image": {"_type": "Image"},
        # Class names unknown while writing (a torch Dataset without them): a plain integer.
        "label": {"_type": "ClassLabel", "names": list(classes)} if classes else {"dtype": "int64", "_type": "Value"},
        "path": {"dtype": "string", "_type": "Value"},
        "width": {"dtype": "int32", "_type": "Value"},
        "height": {"dtype": "int32", "_type": "Value"},
        "source_format": {"dtype": "string", "_type": "Value"},
    }
    return pa.schema(
        [("image", IMAGE_TYPE), ("label", pa.int64()), ("path", pa.string()), ("width", pa.int32()),
         ("height", pa.int32()), ("source_format", pa.string())],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )


def batch_to_table(batch: dict[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    """Rows of a pipeline batch as a table of ``schema`` (the bytes are copied once, into Arrow)."""
    paths = pa.array([str(p) for p in batch["path"]], type=pa.string())
    names = pa.array([str(p).rsplit("/", 1)[-1] for p in batch["path"]], type=pa.string())
    image = pa.StructArray.from_arrays([pa.array(list(batch["data"]), type=pa.binary()), names],
                                       fields=list(IMAGE_TYPE))
    return pa.Table.from_arrays(
        [image, pa.array(batch["label"], type=pa.int64()), paths, pa.array(batch["width"], type=pa.int32()),
         pa.array(batch["height"], type=pa.int32()),
         pa.array([str(f) for f in batch["source_format"]], type=pa.string())],
        schema=schema,
    )


def row_bytes_and_label(rows: pa.Table | pa.RecordBatch, row: int) -> tuple[bytes, int]:
    image = rows.column("image")
    if isinstance(image, pa.ChunkedArray):
        image = image.combine_chunks()
    return image.field("bytes")[row].as_py(), int(rows.column("label")[row].as_py())
