"""The format conformance suite, shipped so that a plugin format's author can run it (needs pytest).

Subclass ``FormatConformance`` in a test module and name your (registered) format::

    import npz_format  # registers "npz"
    from raydsconv.testing import FormatConformance

    class TestNpz(FormatConformance):
        format_name = "npz"

pytest then converts generated photo-like images (and, if the format can store masks, a
segmentation set, and unlabeled images) into your format and checks: exact labels and pixels (fixed-size formats: what
raydsconv prepared; flexible ones: the source bytes) read back in order and at random, the manifest's
files with their sizes and sha256, the index, ``raydsconv.verify`` on a clean and a damaged copy, a
DataLoader with two workers, byte-identical output whatever the parallelism, masks and unlabeled
images. Tests a format cannot pass by design are skipped with the reason (a format whose
``Format.targets`` leaves out masks skips the mask test).

Conversion needs Ray: start it yourself (``ray.init(...)``) in a session fixture to choose its size,
or let the first conversion start an embedded one.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from raydsconv.conversion import convert
from raydsconv.formats import get_format
from raydsconv.images import ImageSpec, prepare_image
from raydsconv.layout import MANIFEST_FILE, META_DIR
from raydsconv.reading.dataset import open_dataset
from raydsconv.samples import write_image_folder, write_segmentation_folder
from raydsconv.sources.folder import list_image_folder
from raydsconv.verification import verify


class FormatConformance:
    format_name: ClassVar[str] = ""  # a registered format; or override the ``format`` fixture
    shape: ClassVar[tuple[int, int]] = (20, 28)
    images_per_file: ClassVar[int] = 4

    @pytest.fixture(scope="class")
    def format(self) -> str:
        if not self.format_name:
            pytest.fail("set format_name on your FormatConformance subclass")
        return self.format_name

    @pytest.fixture(scope="class")
    def source(self, tmp_path_factory) -> Path:
        root = tmp_path_factory.mktemp("conformance-source") / "images"
        write_image_folder(root, num_images=11, num_classes=3, sizes=((64, 48), (40, 56), (33, 47)), seed=3)
        return root

    @pytest.fixture(scope="class")
    def converted(self, format, source, tmp_path_factory) -> Path:
        output = tmp_path_factory.mktemp(f"conformance-{format}") / "ds"
        convert(source, output, format=format, shape=self.shape, images_per_file=self.images_per_file, progress=False)
        return output

    def fixed_size(self, format: str) -> bool:
        return get_format(format).fixed_size

    def check_sample(self, dataset, index: int, path: str, label: int, source: Path, fixed_size: bool) -> None:
        image, target = dataset[index]
        assert target == label, f"sample {index}: label {target}, expected {label}"
        assert dataset.source_path(index) == path
        data = (source / path).read_bytes()
        if fixed_size:
            expected = prepare_image(data, ImageSpec(shape=self.shape)).pixels
            assert np.array_equal(np.asarray(image), expected), f"sample {index} ({path}): pixels differ"
        else:
            assert dataset.read_bytes(index) == data, f"sample {index} ({path}): stored bytes differ from the source"

    def test_every_sample_round_trips_in_order_and_at_random(self, format, source, converted):
        listing = list_image_folder(source)
        dataset = open_dataset(converted)
        assert dataset.manifest.format == format and len(dataset) == len(listing.paths)
        assert dataset.classes == listing.classes
        order = list(range(len(dataset))) + random.Random(0).sample(range(len(dataset)), len(dataset))
        for index in order:
            self.check_sample(dataset, index, listing.paths[index], int(listing.labels[index]), source,
                              self.fixed_size(format))

    def test_manifest_files_and_index(self, converted):
        import pyarrow.parquet as pq

        manifest = json.loads((converted / MANIFEST_FILE).read_text())
        assert len(manifest["shards"]) == -(-manifest["num_samples"] // self.images_per_file)
        for shard in manifest["shards"]:
            for file in shard["files"].values():
                data = (converted / file["name"]).read_bytes()
                assert (len(data), hashlib.sha256(data).hexdigest()) == (file["bytes"], file["sha256"]), file["name"]
        index = pq.read_table(converted / manifest["index_file"])
        assert index.column("shard").to_pylist() == [s["index"] for s in manifest["shards"] for _ in range(s["num_samples"])]
        hidden = [p.relative_to(converted).as_posix() for p in converted.rglob(".*")]
        assert hidden == [META_DIR], f"temporary files left behind: {hidden}"

    def test_verify_passes_clean_and_names_a_damaged_file(self, converted, tmp_path):
        report = verify(converted, deep=True)
        assert report.ok, [str(p) for p in report.problems]
        copy = shutil.copytree(converted, tmp_path / "copy")
        name = next(iter(json.loads((copy / MANIFEST_FILE).read_text())["shards"][1]["files"].values()))["name"]
        data = bytearray((copy / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (copy / name).write_bytes(data)
        assert [p.file for p in verify(copy).errors] == [name]

    def test_a_dataloader_with_two_workers_sees_every_sample(self, converted):
        from torch.utils.data import DataLoader

        dataset = open_dataset(converted, transform=lambda image: hashlib.sha256(np.asarray(image).tobytes()).hexdigest())
        direct = sorted(dataset[i] for i in range(len(dataset)))
        loader = DataLoader(dataset, batch_size=3, shuffle=True, num_workers=2, collate_fn=list)
        assert sorted(sample for batch in loader for sample in batch) == direct

    def test_output_bytes_do_not_depend_on_parallelism(self, format, source, converted, tmp_path):
        again = tmp_path / "again"
        convert(source, again, format=format, shape=self.shape, images_per_file=self.images_per_file,
                num_workers=1, batch_size=3, progress=False)
        shards = [json.loads((root / MANIFEST_FILE).read_text())["shards"] for root in (converted, again)]
        assert shards[0] == shards[1]

    def test_masks_round_trip(self, format, tmp_path):
        stores = get_format(format).targets
        if stores is not None and "mask" not in stores:
            pytest.skip(f"format {format!r} cannot store masks")
        source = tmp_path / "seg"
        write_segmentation_folder(source, num_images=5, sizes=((48, 36),))
        output = tmp_path / "ds"
        convert(source, output, format=format, shape=(36, 48), dense=True, images_per_file=2, progress=False)
        dataset = open_dataset(output, output="numpy")
        assert len(dataset) == 5
        from PIL import Image

        for index in range(5):
            mask = np.asarray(dataset[index][1])
            name = Path(dataset.source_path(index)).stem
            assert np.array_equal(mask, np.asarray(Image.open(source / "masks" / f"{name}.png"))), f"sample {index}: mask"

    def test_unlabeled_images_round_trip(self, format, source, tmp_path):
        stores = get_format(format).targets
        if stores is not None and "none" not in stores:
            pytest.skip(f"format {format!r} cannot store unlabeled images")
        output = tmp_path / "unlabeled"
        convert(source, output, format=format, shape=self.shape, target="none", images_per_file=self.images_per_file,
                progress=False)
        dataset = open_dataset(output, output="numpy")
        paths = sorted(path.relative_to(source).as_posix() for path in source.rglob("*") if path.is_file())
        assert sorted(dataset.source_path(i) for i in range(len(dataset))) == paths
        for index in range(len(dataset)):
            image = dataset[index]  # the image alone
            data = (source / dataset.source_path(index)).read_bytes()
            if self.fixed_size(format):
                assert np.array_equal(image, prepare_image(data, ImageSpec(shape=self.shape)).pixels), f"sample {index}"
            else:
                assert dataset.read_bytes(index) == data, f"sample {index}: stored bytes differ from the source"
