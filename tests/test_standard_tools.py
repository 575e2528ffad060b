"""Standard tools pointed at an output folder (not at a list of shard files) see exactly the samples:
DuckDB, polars, pyarrow.dataset, Ray Data and Hugging Face datasets on parquet, pyarrow.dataset on ipc,
webdataset and ray.data.read_webdataset (the call the README documents) on tar. The index and the
manifest sit in the hidden ``.raydsconv-dataset/``, which each of them skips by its own rules.

Both a one-format output and a format's sub-folder of a several-formats output (beside ``formats.json``)
are tried. The source holds what real folders hold and Ray's default webdataset decoder cannot take: a
grayscale JPEG beside RGB ones, and a PNG beside JPEGs.
"""

from __future__ import annotations

import glob
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from raydsconv import convert, open_dataset, read_ray
from raydsconv.layout import META_DIR
from raydsconv.samples import write_image_folder

pytestmark = pytest.mark.usefixtures("ray_session")
FORMATS = ("parquet", "ipc", "tar")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools") / "images"
    write_image_folder(root, num_images=9, num_classes=3, sizes=((64, 48), (48, 64), (40, 40)))
    gray = (np.arange(48 * 64) % 251).astype(np.uint8).reshape(48, 64)
    Image.fromarray(gray, "L").save(root / "class_000" / "gray.jpg", quality=90)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(root / "class_001" / "flat.png")
    return root


@pytest.fixture(scope="module", params=["one format", "several formats"])
def folders(request, source, tmp_path_factory) -> dict:
    """format -> the folder a user points a tool at."""
    top = tmp_path_factory.mktemp("out")
    if request.param == "one format":
        for name in FORMATS:
            convert(source, top / name, format=name, images_per_file=4, progress=False)
        return {name: top / name for name in FORMATS}
    convert(source, top / "all", format=",".join(FORMATS), images_per_file=4, progress=False)
    assert (top / "all" / "formats.json").is_file()
    return {name: top / "all" / name for name in FORMATS}


def expected(folder) -> dict[str, int]:
    """What our reader says the dataset holds: source path -> label."""
    dataset = open_dataset(folder)
    return {dataset.source_path(i): dataset[i][1] for i in range(len(dataset))}


def test_only_shards_are_visible_at_the_top(folders):
    for name, folder in folders.items():
        manifest = open_dataset(folder).manifest
        shards = sorted(f.name for shard in manifest.shards for f in shard.files.values())
        assert sorted(p.name for p in folder.iterdir()) == sorted([META_DIR, *shards])
        assert sorted(p.name for p in (folder / META_DIR).iterdir()) == ["index.parquet", "manifest.json"]
        assert manifest.format_version == 3 and manifest.index_file == f"{META_DIR}/index.parquet"


def test_duckdb_on_the_folders_parquet_files(folders):
    import duckdb

    folder = folders["parquet"]
    pattern = f"{folder}/*.parquet"
    count, images = duckdb.sql(f"select count(*), count(image) from read_parquet('{pattern}')").fetchall()[0]
    rows = duckdb.sql(f"select path, label from read_parquet('{pattern}')").fetchall()
    assert count == images == len(rows) == len(expected(folder))
    assert dict(rows) == expected(folder)


def test_polars_on_the_folders_parquet_files(folders):
    import polars as pl

    folder = folders["parquet"]
    table = pl.scan_parquet(f"{folder}/*.parquet").select("path", "label", "image").collect()
    assert table.height == len(expected(folder)) and table["image"].null_count() == 0
    assert dict(zip(table["path"], table["label"])) == expected(folder)


def test_ray_read_parquet_on_the_folder(folders, ray_session):
    folder = folders["parquet"]
    dataset = ray_session.data.read_parquet(str(folder))
    assert dataset.count() == len(expected(folder))
    rows = dataset.take_all()
    assert all(row["image"] is not None and row["image"]["bytes"] for row in rows)
    assert {row["path"]: row["label"] for row in rows} == expected(folder)


def test_pyarrow_dataset_on_the_folder(folders):
    import pyarrow.dataset as ds

    for name, formats in (("parquet", ["parquet"]), ("ipc", ["arrow", "ipc", "feather"])):
        folder = folders[name]
        for fmt in formats:
            table = ds.dataset(folder, format=fmt).to_table(columns=["path", "label"])
            assert dict(zip(table["path"].to_pylist(), table["label"].to_pylist())) == expected(folder), fmt


def test_hugging_face_datasets_with_data_dir(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    folder = folders["parquet"]
    ours = open_dataset(folder, output="numpy")
    loaded = datasets.load_dataset("parquet", data_dir=str(folder), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(loaded) == len(ours)
    assert isinstance(loaded.features["image"], datasets.Image)
    assert isinstance(loaded.features["label"], datasets.ClassLabel) and loaded.features["label"].names == ours.classes
    position = {ours.source_path(i): i for i in range(len(ours))}
    modes = set()
    for sample in loaded:
        i = position[sample["path"]]
        assert sample["label"] == ours[i][1]
        assert isinstance(sample["image"], Image.Image)
        modes.add(sample["image"].mode)
        assert np.array_equal(np.asarray(sample["image"].convert("RGB")), ours[i][0])
    assert modes == {"RGB", "L"}


def test_webdataset_on_the_folders_tar_files(folders):
    import webdataset as wds

    folder = folders["tar"]
    samples = list(wds.WebDataset(sorted(glob.glob(f"{folder}/*.tar")), shardshuffle=False, empty_check=False))
    ours = open_dataset(folder)
    assert len(samples) == len(ours)
    for i, sample in enumerate(samples):
        image = next(sample[key] for key in sample if key not in ("__key__", "__url__", "__local_path__", "cls", "json"))
        assert image == ours.read_bytes(i) and int(sample["cls"]) == ours[i][1]
    assert {key for sample in samples for key in sample} >= {"jpg", "png"}


def decode(sample: dict) -> dict:
    """README's decoder for ray.data.read_webdataset: each image as displayed, in RGB, in one column
    whatever its file type; the label from ``.cls``."""
    name = next(key for key in sample if key not in ("__key__", "__url__", "cls", "json"))
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(sample[name]))).convert("RGB")
    return {"image": np.asarray(image), "label": int(sample["cls"])}


def test_ray_read_webdataset_with_the_documented_decoder(folders, ray_session):
    folder = folders["tar"]
    ours = open_dataset(folder, output="numpy")
    rows = ray_session.data.read_webdataset(str(folder), decoder=decode).take_all()
    assert len(rows) == len(ours)
    assert all(row["image"].ndim == 3 and row["image"].shape[2] == 3 for row in rows)
    got = sorted((row["label"], row["image"].tobytes()) for row in rows)
    assert got == sorted((ours[i][1], ours[i][0].tobytes()) for i in range(len(ours)))


@pytest.mark.parametrize("name", FORMATS)
def test_read_ray_on_the_folder(folders, name):
    folder = folders[name]
    ours = open_dataset(folder, output="numpy")
    rows = read_ray(folder).take_all()
    assert [row["label"] for row in rows] == [ours[i][1] for i in range(len(ours))]
    assert all(np.array_equal(row["image"], ours[i][0]) for i, row in enumerate(rows))
