"""`raydsconv migrate`: datasets written by hpc_pytorch_loader become raydsconv datasets (no Ray)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from predecessor_layout import CLASSES, write_predecessor

import raydsconv
from raydsconv import open_dataset, verify
from raydsconv.cli import main
from raydsconv.errors import InvalidArgumentError, ManifestError
from raydsconv.layout import INDEX_FILE, META_DIR
from raydsconv.migration import predecessor_layout

# (the predecessor's format, generator options) -> raydsconv's format
CASES = {
    "memmap": ("memmap", {}),
    "memmap-L": ("memmap", {"mode": "L"}),
    "memmap-dense": ("memmap", {"dense": True}),
    "memmap-dense-L": ("memmap", {"dense": True, "mode": "L"}),
    "hdf5": ("hdf5", {}),
    "hdf5-dense": ("hdf5", {"dense": True}),
    "parquet-v2": ("parquet", {}),
    "parquet-v1": ("parquet", {"variant": "rows"}),
    "pyarrow_ipc": ("pyarrow_ipc", {}),
    "pyarrow_ipc-batches": ("pyarrow_ipc", {"variant": "batches"}),
    "pyarrow_ipc-dense": ("pyarrow_ipc", {"dense": True, "variant": "batches"}),
    "tar": ("tar", {}),
}
NEW_FORMAT = {"memmap": "memmap", "hdf5": "hdf5", "parquet": "parquet", "pyarrow_ipc": "ipc", "tar": "tar"}


@pytest.fixture(params=sorted(CASES))
def migrated(request, tmp_path):
    old_format, options = CASES[request.param]
    written = write_predecessor(tmp_path / "old", old_format, **options)
    report = raydsconv.migrate(tmp_path / "old", tmp_path / "new")
    return written, report, tmp_path / "new"


def test_each_format_migrates_and_verifies_deep(migrated):
    written, report, new = migrated
    result = verify(new, deep=True)
    assert result.ok and not result.problems, [str(p) for p in result.problems]
    manifest = report.manifest
    assert manifest.format == NEW_FORMAT[written.format]
    assert manifest.num_samples == len(written.images) == result.samples
    assert [shard.num_samples for shard in manifest.shards] == [3, 3, 1]  # shard k stays shard k
    assert manifest.source["kind"] == "hpc_pytorch_loader" and manifest.source["format"] == written.format
    assert ("re-encodes" in manifest.source.get("note", "")) == (written.format not in ("memmap", "hdf5"))
    assert not report.skipped
    index = pq.read_table(new / INDEX_FILE).to_pydict()
    assert index["path"][:4] == ["images_0/0", "images_0/1", "images_0/2", "images_1/0"]


def test_pixels_labels_and_masks_are_exactly_the_old_ones(migrated):
    written, _, new = migrated
    fixed = written.format in ("memmap", "hdf5")
    dataset = open_dataset(new, output="numpy" if fixed else "bytes")
    dense = bool(written.masks)
    assert dataset.dense == dense
    if not dense:
        assert dataset.classes == list(CLASSES)
    for i, (image, target) in enumerate(dataset[j] for j in range(len(dataset))):
        if fixed:
            np.testing.assert_array_equal(image, written.images[i])
        else:
            assert image == written.images[i]  # the stored bytes, unchanged
        if dense:
            if fixed:
                np.testing.assert_array_equal(target, written.masks[i])
            else:
                assert target == written.masks[i]
        else:
            assert target == written.labels[i]
    if dense and not fixed:  # the mask bytes decode to the old values
        masks = open_dataset(new, output="numpy")
        for i in range(len(masks)):
            np.testing.assert_array_equal(masks[i][1], written.mask_arrays[i])


@pytest.mark.parametrize("old_format", ["memmap", "hdf5", "parquet", "pyarrow_ipc", "tar"])
def test_opening_the_old_folder_names_the_layout_and_migrate(tmp_path, old_format):
    write_predecessor(tmp_path / "old", old_format)
    assert predecessor_layout(tmp_path / "old") == old_format
    with pytest.raises(ManifestError, match=rf"hpc_pytorch_loader \({old_format} layout\).*raydsconv migrate"):
        open_dataset(tmp_path / "old")


def test_cli_prints_a_summary_and_exits_0(tmp_path, capsys):
    write_predecessor(tmp_path / "old", "tar")
    assert main(["migrate", str(tmp_path / "old"), str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "migrated" in out and "tar dataset, 7 samples in 3 shards" in out
    assert main(["info", str(tmp_path / "new")]) == 0
    assert "hpc_pytorch_loader" in capsys.readouterr().out


def test_a_non_empty_output_is_refused_unless_overwrite(tmp_path, capsys):
    written = write_predecessor(tmp_path / "old", "memmap")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="not empty"):
        raydsconv.migrate(tmp_path / "old", tmp_path / "new")
    assert main(["migrate", str(tmp_path / "old"), str(tmp_path / "new")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(InvalidArgumentError, match="did not write"):  # not ours to delete, even so
        raydsconv.migrate(tmp_path / "old", tmp_path / "new", overwrite=True)
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["notes.txt"]

    (tmp_path / "new" / "notes.txt").unlink()
    raydsconv.migrate(tmp_path / "old", tmp_path / "new")
    report = raydsconv.migrate(tmp_path / "old", tmp_path / "new", overwrite=True)  # a dataset: replaced
    assert report.manifest.num_samples == len(written.images) and verify(tmp_path / "new").ok
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(
        [META_DIR, *(f"{role}-0000{k}.npy" for role in ("images", "labels") for k in range(3))])


def test_the_old_dataset_is_only_read(tmp_path):
    write_predecessor(tmp_path / "old", "parquet")
    before = {p: p.read_bytes() for p in (tmp_path / "old").rglob("*") if p.is_file()}
    raydsconv.migrate(tmp_path / "old", tmp_path / "new")
    assert {p: p.read_bytes() for p in (tmp_path / "old").rglob("*") if p.is_file()} == before
    with pytest.raises(InvalidArgumentError, match="would hold the dataset"):
        raydsconv.migrate(tmp_path / "old", tmp_path, overwrite=True)


def test_a_damaged_old_file_is_named_and_nothing_is_left(tmp_path):
    write_predecessor(tmp_path / "old", "memmap")
    raw = tmp_path / "old" / "images" / "images_1.npy"
    raw.write_bytes(raw.read_bytes()[:-5])
    with pytest.raises(ManifestError, match=r"images_1\.npy: .* bytes"):
        raydsconv.migrate(tmp_path / "old", tmp_path / "new")
    assert not list((tmp_path / "new").iterdir())


def test_an_undecodable_image_is_skipped_with_its_reason(tmp_path):
    write_predecessor(tmp_path / "old", "tar", num_images=4, images_per_file=4)
    labels = json.loads((tmp_path / "old" / "labels" / "labels_0.json").read_text())
    with tarfile.open(tmp_path / "old" / "images" / "images_0.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tmp_path / "old" / "images" / "images_0.tar", "w") as tar:
        for member, data in members:
            data = b"not an image" if member.name == "image_2" else data
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    report = raydsconv.migrate(tmp_path / "old", tmp_path / "new")
    assert [s["path"] for s in report.skipped] == ["images_0/2"]
    assert report.manifest.num_samples == 3 and verify(tmp_path / "new", deep=True).ok
    assert [open_dataset(tmp_path / "new", output="bytes")[i][1] for i in range(3)] == labels[:2] + labels[3:]


def test_dense_class_names_are_kept(tmp_path):
    write_predecessor(tmp_path / "old", "memmap", dense=True)
    names = {"background": 0, "road": 1, "car": 2, "tree": 3}
    (tmp_path / "old" / "metadata" / "class_to_integer_mapping.json").write_text(json.dumps(names))
    raydsconv.migrate(tmp_path / "old", tmp_path / "new")
    assert open_dataset(tmp_path / "new").classes == list(names)
    assert verify(tmp_path / "new", deep=True).ok  # labels are -1 with masks, whatever the classes


def test_caltech_style_index_to_name_mapping(tmp_path):
    write_predecessor(tmp_path / "old", "hdf5")
    (tmp_path / "old" / "metadata" / "class_to_integer_mapping.json").write_text(
        json.dumps({str(i): name for i, name in enumerate(CLASSES)}))  # {index: name}, as for `categories`
    raydsconv.migrate(tmp_path / "old", tmp_path / "new")
    assert open_dataset(tmp_path / "new").classes == list(CLASSES)
