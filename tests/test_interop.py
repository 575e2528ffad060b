"""Each format is read by the tools people already use, not only by us."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raydsconv import convert, open_dataset
from raydsconv.layout import INDEX_FILE, MANIFEST_FILE

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def outputs(small_folder, tmp_path_factory):
    """One pass writing every format: also the several-formats test."""
    root = tmp_path_factory.mktemp("all") / "ds"
    convert(small_folder, root, format="memmap,hdf5,parquet,ipc,tar", shape=(12, 16), images_per_file=10,
            progress=False)
    return root


def test_one_pass_writes_the_same_samples_in_every_format(outputs, small_folder):
    folders = json.loads((outputs / "formats.json").read_text())["formats"]
    assert sorted(folders) == ["hdf5", "ipc", "memmap", "parquet", "tar"]
    datasets = {name: open_dataset(outputs, format=name) for name in folders}
    reference = datasets["memmap"]
    for name, dataset in datasets.items():
        assert len(dataset) == len(reference)
        for i in range(len(dataset)):
            assert dataset.source_path(i) == reference.source_path(i), name
            assert dataset[i][1] == reference[i][1], name
    assert all(np.array_equal(np.asarray(datasets["hdf5"][i][0]), np.asarray(reference[i][0])) for i in range(len(reference)))
    for i in range(len(reference)):
        source = (small_folder / reference.source_path(i)).read_bytes()
        assert {datasets[n].read_bytes(i) for n in ("parquet", "ipc", "tar")} == {source}


def test_memmap_with_numpy(outputs):
    manifest = json.loads((outputs / "memmap" / MANIFEST_FILE).read_text())
    images = np.concatenate([np.load(outputs / "memmap" / s["files"]["images"]["name"], mmap_mode="r")
                             for s in manifest["shards"]])
    assert images.shape == (manifest["num_samples"], 12, 16, 3)


def test_hdf5_with_h5py_and_the_virtual_dataset(outputs, tmp_path, monkeypatch):
    import h5py

    ours = open_dataset(outputs, format="hdf5")
    monkeypatch.chdir(tmp_path)  # the virtual dataset must resolve its shards beside itself
    with h5py.File(outputs / "hdf5" / "dataset.h5", "r") as file:
        images, labels = file["images"], file["labels"]
        assert images.shape == (len(ours), 12, 16, 3) and images.dtype == np.uint8
        assert images.is_virtual
        for i in (0, len(ours) // 2, len(ours) - 1):
            assert np.array_equal(images[i], np.asarray(ours[i][0])) and labels[i] == ours[i][1]
    manifest = json.loads((outputs / "hdf5" / MANIFEST_FILE).read_text())
    with h5py.File(outputs / "hdf5" / manifest["shards"][0]["files"]["images"]["name"], "r") as shard:
        assert shard["images"].chunks == (1, 12, 16, 3)  # one image per chunk
        assert shard["labels"].dtype == np.int64


def test_parquet_with_pyarrow_duckdb_and_ray(outputs, ray_session):
    import duckdb

    ours = open_dataset(outputs, format="parquet")
    files = sorted(str(p) for p in (outputs / "parquet").glob("samples-*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.num_rows == len(ours)
    assert table.column("label").to_pylist() == [ours[i][1] for i in range(len(ours))]
    first = table.column("image")[0].as_py()
    assert first["bytes"] == ours.read_bytes(0) and first["path"] == ours.source_path(0).rsplit("/", 1)[-1]
    assert pq.ParquetFile(files[0]).metadata.num_row_groups > 1  # small row groups for random reads
    pattern = str(outputs / "parquet" / "samples-*.parquet")
    count, labels = duckdb.sql(f"select count(*), sum(label) from read_parquet('{pattern}')").fetchall()[0]
    assert (count, labels) == (len(ours), sum(ours[i][1] for i in range(len(ours))))
    assert ray_session.data.read_parquet(files).count() == len(ours)


def test_parquet_with_hugging_face_datasets(outputs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    ours = open_dataset(outputs, format="parquet")
    files = sorted(str(p) for p in (outputs / "parquet").glob("samples-*.parquet"))
    loaded = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(loaded.features["image"], datasets.Image)
    assert loaded.features["label"].names == ours.classes
    assert len(loaded) == len(ours)
    sample = loaded[3]
    assert isinstance(sample["image"], Image.Image)
    assert np.array_equal(np.asarray(sample["image"].convert("RGB")), np.asarray(ours[3][0]))
    assert sample["label"] == ours[3][1]


def test_ipc_with_pyarrow_memory_map(outputs):
    ours = open_dataset(outputs, format="ipc")
    rows = 0
    for path in sorted((outputs / "ipc").glob("samples-*.arrow")):
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            table = reader.read_all()
            assert reader.num_record_batches < max(table.num_rows, 2)  # many rows per batch
            rows += table.num_rows
    assert rows == len(ours)


def test_tar_with_webdataset_ray_and_the_tar_command(outputs, ray_session):
    import webdataset as wds

    ours = open_dataset(outputs, format="tar")
    files = sorted(str(p) for p in (outputs / "tar").glob("samples-*.tar"))
    samples = list(wds.WebDataset(files, shardshuffle=False, empty_check=False))
    assert len(samples) == len(ours)
    index = pq.read_table(outputs / "tar" / INDEX_FILE).to_pydict()
    for i, sample in enumerate(samples):
        image_key = next(k for k in sample if k not in ("__key__", "__url__", "__local_path__", "cls", "json"))
        assert sample[image_key] == ours.read_bytes(i)
        assert int(sample["cls"]) == ours[i][1]
        assert json.loads(sample["json"])["path"] == index["path"][i]
    assert samples[0]["__key__"].isdigit() and len(samples[0]["__key__"]) == 9
    assert {k for s in samples for k in s} >= {"png", "jpg", "gif", "webp", "tiff", "bmp"}
    rows = ray_session.data.read_webdataset(files, decoder=None).take_all()  # raw bytes: sizes differ
    assert [int(row["cls"]) for row in rows] == [ours[i][1] for i in range(len(ours))]
    listing = subprocess.run(["tar", "-tf", files[0]], capture_output=True, text=True, check=True).stdout.split()
    keys = [name.split(".")[0] for name in listing]
    assert keys == sorted(keys) and len(listing) % 3 == 0  # a sample's members are adjacent
