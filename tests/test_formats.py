"""One conformance suite for every registered format: add a format and it is tested here for free."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from reference import assert_matches_reference
from torch.utils.data import DataLoader

from raydsconv import convert, open_dataset
from raydsconv.formats import FORMATS
from raydsconv.layout import MANIFEST_FILE
from raydsconv.sources.folder import list_image_folder
from raydsconv.testing import FormatConformance

pytestmark = pytest.mark.usefixtures("ray_session")
SHAPE = (20, 28)
BAD = {"odd/empty.jpg", "odd/random_bytes.png", "odd/readme.txt", "odd/truncated.jpg"}


@pytest.fixture(scope="module", params=sorted(FORMATS))
def converted(request, small_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp(request.param) / "ds"
    report = convert(small_folder, output, format=request.param, shape=SHAPE, images_per_file=8, progress=False)
    return request.param, report, output


class TestConformance(FormatConformance):
    """The shipped suite over every registered format: a new format is tested here without a test edit."""

    @pytest.fixture(scope="class", params=sorted(FORMATS))
    def format(self, request):
        return request.param


def expected_samples(small_folder):
    listing = list_image_folder(small_folder)
    return [(p, label) for p, label in zip(listing.paths, listing.labels.tolist()) if p not in BAD]


def check_sample(dataset, i, path, label, small_folder):
    image, target = dataset[i]
    assert target == label, f"sample {i}: label"
    assert dataset.source_path(i) == path
    source = (small_folder / path).read_bytes()
    if dataset.reader.fixed_size:
        assert_matches_reference(np.asarray(image), source, SHAPE, what=path)
    else:
        stored = dataset.read_bytes(i)
        assert hashlib.sha256(stored).digest() == hashlib.sha256(source).digest(), f"{path}: bytes changed"
        assert image.mode == "RGB"


def test_round_trip_counts_and_skips(converted, small_folder):
    name, report, output = converted
    expected = expected_samples(small_folder)
    dataset = open_dataset(output)
    assert type(dataset).format_name == name
    assert len(dataset) == report.num_samples == len(expected)
    assert {s.path for s in report.skipped} == BAD
    assert dataset.classes == list_image_folder(small_folder).classes
    for i, (path, label) in enumerate(expected):
        check_sample(dataset, i, path, label, small_folder)


def pixel_digest(image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def as_list(batch):
    return batch


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_two_workers_shuffled_for_two_epochs(converted, context):
    _, _, output = converted
    dataset = open_dataset(output, transform=pixel_digest)
    direct = sorted(dataset[i] for i in range(len(dataset)))
    loader = DataLoader(dataset, batch_size=5, shuffle=True, num_workers=2, multiprocessing_context=context,
                        collate_fn=as_list)
    for _ in range(2):
        assert sorted(sample for batch in loader for sample in batch) == direct


def test_random_access_order_does_not_matter(converted, small_folder):
    _, _, output = converted
    expected = expected_samples(small_folder)
    dataset = open_dataset(output)
    order = list(range(len(expected))) * 2
    random.Random(1).shuffle(order)
    for i in order:
        check_sample(dataset, i, *expected[i], small_folder)


def test_format_options_are_checked_and_recorded(small_folder, tmp_path):
    from raydsconv import InvalidArgumentError

    convert(small_folder, tmp_path / "h5", format="hdf5", shape=(8, 8), progress=False,
            format_options={"hdf5": {"compression": "gzip"}})
    manifest = json.loads((tmp_path / "h5" / MANIFEST_FILE).read_text())
    assert manifest["params"]["compression"] == "gzip" and manifest["params"]["virtual_dataset"] == "dataset.h5"
    import h5py

    name = manifest["shards"][0]["files"]["images"]["name"]
    with h5py.File(tmp_path / "h5" / name, "r") as file:
        assert file["images"].compression == "gzip"
    convert(small_folder, tmp_path / "pq", format="parquet", progress=False,
            format_options={"parquet": {"row_group_size": 2}})
    assert pq.ParquetFile(next((tmp_path / "pq").glob("samples-*.parquet"))).metadata.row_group(0).num_rows == 2
    for options, message in [({"hdf5": {"compression": "zstd"}}, "compression"),
                             ({"memmap": {"x": 1}}, "takes no options"),
                             ({"tar": {}}, "does not write")]:
        with pytest.raises(InvalidArgumentError, match=message):
            convert(small_folder, tmp_path / "bad", format="hdf5" if "hdf5" in options else "memmap",
                    shape=(8, 8), format_options=options, progress=False)


def test_header_only_validation_is_faster_and_blind_to_truncation(small_folder, tmp_path):
    full = convert(small_folder, tmp_path / "full", format="tar", progress=False)
    header = convert(small_folder, tmp_path / "header", format="tar", validation="header", progress=False)
    assert "odd/truncated.jpg" in {s.path for s in full.skipped}
    assert "odd/truncated.jpg" not in {s.path for s in header.skipped}  # only a decode finds it
    assert {s.path for s in header.skipped} == BAD - {"odd/truncated.jpg"}
    assert json.loads((tmp_path / "header" / MANIFEST_FILE).read_text())["params"]["validation"] == "header"
