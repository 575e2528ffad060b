"""The reading core without torch or Ray, bounded open shards, pluggable decoders."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from raydsconv import convert, open_dataset
from raydsconv.errors import InvalidArgumentError
from raydsconv.reading.core import DatasetReader
from raydsconv.reading.decoders import DECODERS, Decoder, register_decoder

pytestmark = pytest.mark.usefixtures("ray_session")
SHAPE = (12, 16)


@pytest.fixture(scope="module", params=["memmap", "hdf5", "tar"])
def many_shards(request, small_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp(f"core-{request.param}") / "ds"
    convert(small_folder, output, format=request.param, shape=SHAPE, images_per_file=1, progress=False)
    return output


def test_the_core_reads_without_torch_or_ray(many_shards):
    script = (
        "import sys\n"
        "from raydsconv.reading.core import DatasetReader\n"
        f"reader = DatasetReader({str(many_shards)!r})\n"
        "fetched = reader.fetch([5, 0, 3])\n"
        "print(len(reader), len(fetched.fields['label']), sorted({'torch', 'ray'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    count, fetched, imported = result.stdout.split(maxsplit=2)
    assert int(count) == len(open_dataset(many_shards)) and int(fetched) == 3 and imported.strip() == "[]"


def test_fetch_returns_samples_in_the_order_asked(many_shards):
    reader = DatasetReader(many_shards)
    dataset = open_dataset(many_shards, output="numpy" if reader.fixed_size else "bytes")
    order = [7, 2, 2, 0, len(reader) - 1]
    fetched = reader.fetch(order)
    for position, index in enumerate(order):
        image, label = dataset[index]
        assert int(fetched.fields['label'][position]) == label
        assert np.array_equal(np.asarray(fetched.images[position]), np.asarray(image)) if reader.fixed_size \
            else fetched.images[position] == image


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_open_shards_are_bounded(many_shards):
    reader = DatasetReader(many_shards, max_open_shards=3)
    assert len(reader.manifest.shards) > 10
    before = open_descriptors()
    for index in np.random.default_rng(0).permutation(len(reader)):
        reader.fetch([int(index)])
        assert len(reader.shard_reader().open_shards) <= (6 if reader.format.name == "memmap" else 3)
    assert open_descriptors() - before <= 3
    reader.shard_reader().close()
    assert open_descriptors() <= before
    with pytest.raises(InvalidArgumentError, match="max_open_shards must be at least 1"):
        DatasetReader(many_shards, max_open_shards=0)


def test_a_registered_decoder_is_an_output(many_shards):
    @register_decoder
    class Halved(Decoder):
        """Pixels halved, a batch at a time (a GPU decoder has the same shape: see docs/extending.md)."""

        name = "halved-test"

        def images(self, batch):
            from raydsconv.reading.decoders import NumpyDecoder

            return [pixels // 2 for pixels in NumpyDecoder(self.stored).images(batch)]

    try:
        halved = open_dataset(many_shards, output="halved-test")
        plain = open_dataset(many_shards, output="numpy")
        assert np.array_equal(halved[3][0], plain[3][0] // 2) and halved[3][1] == plain[3][1]
    finally:
        DECODERS.pop("halved-test")
    with pytest.raises(InvalidArgumentError, match="output must be one of"):
        open_dataset(many_shards, output="halved-test")


def test_ray_blocks_can_be_channels_first_like_tensor_output(small_folder, tmp_path):
    import ray

    import raydsconv

    output = tmp_path / "ds"
    convert(small_folder, output, shape=SHAPE, images_per_file=4, progress=False)
    tensors = open_dataset(output, output="tensor")
    options = ray.data.DataContext.get_current().execution_options
    saved, options.preserve_order = options.preserve_order, True
    try:
        batch = next(iter(raydsconv.read_ray(output, channels_first=True).iter_batches(batch_size=5, batch_format="numpy")))
    finally:
        options.preserve_order = saved
    assert batch["image"].shape == (5, 3, *SHAPE)
    for i in range(5):
        assert np.array_equal(batch["image"][i], tensors[i][0].numpy())


def test_the_documented_gpu_decoder(small_folder, tmp_path):
    """docs/extending.md's nvJPEG decoder, run as written where a GPU is present."""
    import re
    from pathlib import Path

    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    output = tmp_path / "ds"
    convert(small_folder, output, format="tar", progress=False)
    doc = (Path(__file__).parent.parent / "docs" / "extending.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", doc, re.S) if "class CudaJpeg" in block)
    namespace = {}
    try:
        exec(code.replace("/data/train-tar", str(output)), namespace)
        gpu, cpu = namespace["ds"], open_dataset(output, output="numpy")
        for index in range(len(cpu)):
            image = gpu[index][0]
            assert image.is_cuda and image.shape[0] == 3
            difference = np.abs(image.permute(1, 2, 0).cpu().numpy().astype(int) - cpu[index][0].astype(int))
            assert difference.mean() < 4, f"sample {index}: nvJPEG and libjpeg differ by {difference.mean():.1f} on average"
    finally:
        DECODERS.pop("cuda-jpeg", None)
