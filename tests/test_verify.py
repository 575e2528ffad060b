"""`raydsconv verify` and the readers' own checks, against damage planted in every format."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from torch.utils.data import DataLoader

from raydsconv import convert, open_dataset, verify
from raydsconv.cli import main
from raydsconv.errors import CorruptDatasetError, ManifestError
from raydsconv.formats import FORMATS
from raydsconv.layout import INDEX_FILE, MANIFEST_FILE, META_DIR

pytestmark = pytest.mark.usefixtures("ray_session")
SHAPE = (16, 20)


@pytest.fixture(scope="module", params=sorted(FORMATS))
def converted(request, small_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp(request.param) / "ds"
    convert(small_folder, output, format=request.param, shape=SHAPE, images_per_file=4, progress=False)
    return output


@pytest.fixture
def copy(converted, tmp_path):
    """A copy of the dataset to damage."""
    return shutil.copytree(converted, tmp_path / "ds")


def manifest_of(root):
    return json.loads((root / MANIFEST_FILE).read_text())


def shard_file(root, shard):
    """The (first) file of a shard, e.g. images-00001.npy or samples-00001.tar."""
    return next(iter(manifest_of(root)["shards"][shard]["files"].values()))["name"]


def problems_of(root, **options):
    report = verify(root, **options)
    return report, [str(p) for p in report.errors], [str(p) for p in report.problems if p.warning]


def test_a_clean_dataset_verifies_with_exit_0(converted, capsys):
    report, errors, warnings = problems_of(converted, deep=True)
    assert report.ok and errors == [] and warnings == []
    assert report.samples == report.samples_decoded == len(open_dataset(converted))
    assert report.files_hashed == sum(len(s["files"]) for s in manifest_of(converted)["shards"])
    assert main(["verify", str(converted)]) == 0
    assert ": ok: " in capsys.readouterr().out


def test_a_flipped_byte_is_found_by_its_hash(copy, capsys):
    name = shard_file(copy, 1)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(data)
    _, errors, _ = problems_of(copy)
    assert errors == [f"{name}: sha256 differs from the manifest's: the file's contents changed"]
    assert main(["verify", str(copy), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and report["problems"][0]["file"] == name
    open_dataset(copy)  # sizes and headers are intact: only hashing can tell
    with pytest.raises(CorruptDatasetError, match=rf"{name}: sha256 differs"):
        open_dataset(copy, verify=True)


def test_a_truncated_shard_is_named_on_open(copy):
    name = shard_file(copy, 2)
    path = copy / name
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.truncate(size - 100)
    _, errors, _ = problems_of(copy)
    assert errors == [f"{name}: has {size - 100} bytes, the manifest says {size}: the file was truncated or replaced"]
    with pytest.raises(CorruptDatasetError, match=rf"{copy}: {name}: has {size - 100} bytes"):
        open_dataset(copy)


def test_a_deleted_shard_is_named_on_open(copy):
    name = shard_file(copy, 0)
    (copy / name).unlink()
    _, errors, _ = problems_of(copy)
    assert errors == [f"{name}: is missing (a file of shard 0)"]
    with pytest.raises(CorruptDatasetError, match=rf"{name}: is missing"):
        open_dataset(copy)


def test_a_stray_file_is_a_warning(copy):
    (copy / "notes.txt").write_text("hello")
    report, errors, warnings = problems_of(copy)
    assert report.ok and errors == [] and warnings == ["notes.txt: is not part of the dataset"]
    assert main(["verify", str(copy)]) == 0
    assert len(open_dataset(copy)) > 0


def test_a_stray_file_beside_the_manifest_is_named_with_its_folder(copy):
    (copy / META_DIR / "notes.txt").write_text("hello")
    report, errors, warnings = problems_of(copy)
    assert report.ok and errors == [] and warnings == [f"{META_DIR}/notes.txt: is not part of the dataset"]


def to_previous_layout(root):
    """Make ``root`` what raydsconv wrote before manifest version 3: manifest.json and index.parquet
    beside the shards (the shards' bytes are the same)."""
    manifest = manifest_of(root)
    (root / INDEX_FILE).rename(root / "index.parquet")
    (root / "manifest.json").write_text(json.dumps({**manifest, "format_version": 2, "index_file": "index.parquet"}))
    shutil.rmtree(root / META_DIR)


def test_a_dataset_of_the_previous_layout_opens_and_verifies(copy, converted, capsys):
    to_previous_layout(copy)
    report, errors, warnings = problems_of(copy, deep=True)
    assert report.ok and errors == [] and warnings == [] and report.samples_decoded == report.samples
    old, new = open_dataset(copy, output="numpy"), open_dataset(converted, output="numpy")
    assert old.manifest.format_version == 2 and old.manifest.index_file == "index.parquet" and len(old) == len(new)
    for i in range(len(new)):
        assert old.source_path(i) == new.source_path(i) and old[i][1] == new[i][1]
        assert np.array_equal(old[i][0], new[i][0])
    assert main(["info", str(copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["index_file"] == "index.parquet"
    (copy / "notes.txt").write_text("hello")
    (copy / "index.parquet").write_bytes(b"\0" * (copy / "index.parquet").stat().st_size)
    _, errors, warnings = problems_of(copy)
    assert warnings == ["notes.txt: is not part of the dataset"]
    assert len(errors) == 1 and errors[0].startswith("index.parquet: cannot be read")
    with pytest.raises(CorruptDatasetError, match=rf"{copy}: index.parquet: cannot be read"):
        open_dataset(copy)


def test_samples_moved_between_shards_in_the_manifest(copy):
    """Counts edited so that the total stays the same: the index and the shard files disagree."""
    manifest = manifest_of(copy)
    manifest["shards"][0]["num_samples"] -= 2
    manifest["shards"][1]["num_samples"] += 2
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    _, errors, _ = problems_of(copy)
    assert any(e.startswith(f"{INDEX_FILE}: sample 2: column 'shard' disagrees") for e in errors)
    dataset = open_dataset(copy)  # cheap checks only: the shard's own header tells at the first read
    with pytest.raises(CorruptDatasetError, match=rf"{copy}: [a-z]+-00000\.\w+: holds"):
        for _ in dataset:  # never a silent stop, never a bare IndexError
            pass


def test_a_shard_file_with_a_count_other_than_the_manifests(copy):
    """Manifest and index edited alike, as a careful forger would: the shard's own header disagrees."""
    manifest = manifest_of(copy)
    manifest["shards"][0]["num_samples"] -= 1
    manifest["shards"][1]["num_samples"] += 1
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    index = pq.read_table(copy / INDEX_FILE)
    counts = [s["num_samples"] for s in manifest["shards"]]
    shard = np.repeat(np.arange(len(counts)), counts)
    row = np.concatenate([np.arange(c) for c in counts])
    index = index.set_column(index.schema.get_field_index("shard"), "shard", [shard])
    index = index.set_column(index.schema.get_field_index("row"), "row", [row])
    pq.write_table(index, copy / INDEX_FILE)
    report, errors, _ = problems_of(copy)
    assert not report.ok
    name = shard_file(copy, 0)
    if manifest["format"] == "tar":  # a tar has no count of its own: its members are walked instead
        assert f"{name}: holds members beyond the manifest's 3 samples" in errors
    else:
        assert any(e.startswith(f"{name}: holds 4 ") and "the manifest says 3 samples" in e for e in errors), errors
    dataset = open_dataset(copy)
    with pytest.raises(CorruptDatasetError, match=rf"{copy}"):
        for _ in dataset:  # never a silent stop, never a bare IndexError
            pass


def test_a_corrupted_index(copy):
    size = (copy / INDEX_FILE).stat().st_size
    (copy / INDEX_FILE).write_bytes(b"\0" * size)
    _, errors, _ = problems_of(copy)
    assert len(errors) == 1 and errors[0].startswith(f"{INDEX_FILE}: cannot be read")
    with pytest.raises(CorruptDatasetError, match=r"index.parquet: cannot be read"):
        open_dataset(copy)


def test_two_swapped_shard_entries(copy):
    manifest = manifest_of(copy)
    shards = manifest["shards"]
    shards[0]["files"], shards[1]["files"] = shards[1]["files"], shards[0]["files"]
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    _, errors, _ = problems_of(copy)
    assert len(errors) == 1 and "shard 0 lists" in errors[0] and "a file of another shard" in errors[0]
    with pytest.raises(ManifestError, match="a file of another shard"):
        open_dataset(copy)


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.npy", "sub/../../x-00000.npy"])
def test_shard_paths_outside_the_dataset_are_refused(copy, name):
    manifest = manifest_of(copy)
    next(iter(manifest["shards"][0]["files"].values()))["name"] = name
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="not a relative path inside the dataset"):
        open_dataset(copy)
    assert not verify(copy).ok


def test_a_flipped_label_is_caught_when_read(small_folder, tmp_path):
    """A memmap label with a flipped high byte (a label of about 4 billion) never reaches a DataLoader."""
    output = tmp_path / "ds"
    convert(small_folder, output, format="memmap", shape=SHAPE, images_per_file=4, progress=False)
    labels = output / manifest_of(output)["shards"][1]["files"]["labels"]["name"]
    array = np.load(labels)
    header = labels.stat().st_size - array.nbytes
    data = bytearray(labels.read_bytes())
    data[header + 8 * 2 + 3] ^= 0xFF  # row 2 of shard 1 = sample 6
    labels.write_bytes(data)
    assert problems_of(output)[1] == [f"{labels.name}: sha256 differs from the manifest's: the file's contents changed"]
    dataset = open_dataset(output, output="numpy")
    with pytest.raises(CorruptDatasetError, match=r"sample 6 \(images-00001.npy, row 2\): label \d+ is outside 0\.\.\d+"):
        dataset[6]
    with pytest.raises(CorruptDatasetError, match="sample 6"):
        for _ in DataLoader(dataset, batch_size=4, num_workers=2):
            pass


def test_undecodable_image_bytes_name_the_sample(small_folder, tmp_path):
    output = tmp_path / "ds"
    convert(small_folder, output, format="tar", images_per_file=4, progress=False)
    index = pq.read_table(output / INDEX_FILE).to_pydict()
    sample = 5
    offset, size = index["data_offset"][sample], index["data_size"][sample]
    name = shard_file(output, index["shard"][sample])
    with open(output / name, "r+b") as file:
        file.seek(offset)
        file.write(b"\0" * size)
    problems = [str(p) for p in verify(output, deep=True).errors]
    assert f"{name}: sha256 differs from the manifest's: the file's contents changed" in problems
    with pytest.raises(CorruptDatasetError, match=rf"sample {sample} \({name}, row {index['row'][sample]}\) cannot be read"):
        open_dataset(output)[sample]
    data = bytearray((output / MANIFEST_FILE).read_bytes())  # forget the hash: --deep still finds it
    manifest = json.loads(data)
    files = manifest["shards"][index["shard"][sample]]["files"]["samples"]
    files["sha256"] = __import__("hashlib").sha256((output / name).read_bytes()).hexdigest()
    (output / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert verify(output).ok
    problems = [str(p) for p in verify(output, deep=True).errors]
    assert problems and problems[0].startswith(f"{name}: sample {sample}: cannot be decoded")


def test_several_formats_verify_each_and_formats_json(small_folder, tmp_path):
    output = tmp_path / "ds"
    convert(small_folder, output, format="memmap,parquet", shape=SHAPE, images_per_file=4, progress=False)
    assert verify(output, deep=True).ok
    (output / "parquet" / "samples-00000.parquet").unlink()
    errors = [str(p) for p in verify(output).errors]
    assert errors == ["parquet/samples-00000.parquet: is missing (a file of shard 0)"]
    assert verify(output, format="memmap").ok
    (output / "formats.json").write_text("{")
    assert [str(p) for p in verify(output).errors][0].startswith("formats.json: cannot be read")


def test_hdf5_virtual_dataset_is_checked(small_folder, tmp_path):
    output = tmp_path / "ds"
    convert(small_folder, output, format="hdf5", shape=SHAPE, images_per_file=4, progress=False)
    (output / "dataset.h5").write_bytes(b"garbage")
    errors = [str(p) for p in verify(output).errors]
    assert len(errors) == 1 and errors[0].startswith("dataset.h5: not a readable HDF5 file")
