"""Dense labels (segmentation masks): sources, every format, alignment with the image, readers."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps
from torch.utils.data import DataLoader, Dataset

from raydsconv import (
    DenseIpcConverter,
    DenseIpcReader,
    DenseMemmapConverter,
    DenseMemmapReader,
    DenseTarReader,
    InvalidArgumentError,
    MemmapReader,
    SegmentationFolder,
    collate,
    convert,
    open_dataset,
    verify,
)
from raydsconv.formats import FORMATS
from raydsconv.samples import segmentation_sample, voc_palette, write_segmentation_folder
from reference import assert_matches_reference, reference_mask, reference_pixels, reference_placement

pytestmark = pytest.mark.usefixtures("ray_session")

PALETTE = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
FLAT_SIZES = ((96, 72), (64, 80), (50, 50), (72, 96), (81, 47), (120, 40))
KEPT = [f"images/flat_{i}.png" for i in range(len(FLAT_SIZES))] + ["images/nested/photo.jpg"]


def blocks_mask(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Rectangles of classes 1..5 on background 0, outlined with 255 (VOC's border), as indices."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        draw.rectangle((x0, y0, x0 + int(rng.integers(12, width // 2 + 1)), y0 + int(rng.integers(12, height // 2 + 1))),
                       fill=int(rng.integers(1, 6)), outline=255, width=1)
    return np.asarray(mask)


def palette_png(mask: np.ndarray) -> bytes:
    image = Image.fromarray(mask, "L").convert("P")
    image.putpalette(voc_palette())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def seg_folder(tmp_path_factory) -> Path:
    """images/ + masks/: flat-colour PNGs painted by their masks (so alignment is checkable pixel by
    pixel), a photo-like JPEG in a sub-folder, and the odd cases a real folder has."""
    root = tmp_path_factory.mktemp("seg") / "data"
    (root / "images" / "nested").mkdir(parents=True)
    (root / "masks" / "nested").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i, (width, height) in enumerate(FLAT_SIZES):
        mask = blocks_mask(rng, width, height)
        (root / "images" / f"flat_{i}.png").write_bytes(png(Image.fromarray(PALETTE[mask], "RGB")))
        (root / "masks" / f"flat_{i}.png").write_bytes(palette_png(mask))
    photo, photo_mask = segmentation_sample(rng, 90, 70)
    photo.save(root / "images" / "nested" / "photo.jpg", quality=90)
    photo_mask.save(root / "masks" / "nested" / "photo.png")
    (root / "images" / "lonely.png").write_bytes(png(photo))
    (root / "masks" / "orphan.png").write_bytes(palette_png(np.zeros((9, 9), np.uint8)))
    (root / "images" / "wrong_size.png").write_bytes(png(photo))
    (root / "masks" / "wrong_size.png").write_bytes(palette_png(np.zeros((10, 12), np.uint8)))
    (root / "images" / "colour_mask.png").write_bytes(png(photo))
    (root / "masks" / "colour_mask.png").write_bytes(png(photo))
    return root


def source_mask(seg_folder: Path, image_path: str) -> np.ndarray:
    name = image_path.removeprefix("images/").rsplit(".", 1)[0]
    return np.asarray(Image.open(seg_folder / "masks" / f"{name}.png"))


@pytest.fixture(scope="module", params=sorted(FORMATS))
def dense_converted(request, seg_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp(f"dense-{request.param}") / "ds"
    report = convert(seg_folder, output, format=request.param, shape=(40, 56), resize="crop", dense=True,
                     images_per_file=3, progress=False)
    return request.param, output, report


def test_a_dataset_with_masks_verifies_deep_and_a_damaged_one_does_not(dense_converted, tmp_path):
    fmt, output, report = dense_converted
    clean = verify(output, deep=True)
    assert clean.ok and clean.samples_decoded == report.num_samples
    copy = shutil.copytree(output, tmp_path / "copy")
    shard = next(iter(open_dataset(copy).manifest.shards[1].files.values())).name
    with open(copy / shard, "r+b") as file:
        file.truncate((copy / shard).stat().st_size - 1)
    assert [p.file for p in verify(copy).errors] == [shard]


def test_every_format_round_trips_images_and_masks(dense_converted, seg_folder):
    fmt, output, report = dense_converted
    assert report.num_candidates == 9 and report.num_samples == len(KEPT) and report.num_shards == 3
    reasons = {s.path: s.reason for s in report.skipped}
    assert set(reasons) == {"images/lonely.png", "masks/orphan.png", "images/wrong_size.png", "images/colour_mask.png"}
    assert "no mask masks/lonely.*" in reasons["images/lonely.png"]
    assert reasons["masks/orphan.png"] == "mask without an image"
    assert reasons["images/wrong_size.png"] == "mask is 12x10 pixels but its image is 90x70 (masks/wrong_size.png)"
    assert reasons["images/colour_mask.png"].startswith("mask is a RGB colour image, not a class map")
    assert reasons["images/colour_mask.png"].endswith("(masks/colour_mask.png)")
    dataset = open_dataset(output, output="numpy")
    assert dataset.dense and len(dataset) == len(KEPT)
    assert [dataset.source_path(i) for i in range(len(KEPT))] == KEPT
    assert dataset.index().column("mask_path").to_pylist() == [p.replace("images/", "masks/", 1).rsplit(".", 1)[0] + ".png"
                                                               for p in KEPT]
    for i, path in enumerate(KEPT):
        image, mask = dataset[i]
        expected_mask = source_mask(seg_folder, path)
        if FORMATS[fmt].fixed_size:
            assert mask.dtype == np.uint8 and mask.shape == (40, 56)
            np.testing.assert_array_equal(mask, reference_mask(expected_mask, (40, 56), "crop"), err_msg=path)
            assert_matches_reference(image, (seg_folder / path).read_bytes(), (40, 56), policy="crop", what=path)
        else:
            np.testing.assert_array_equal(mask, expected_mask, err_msg=path)
            assert dataset.read_bytes(i) == (seg_folder / path).read_bytes()
            name = path.removeprefix("images/").rsplit(".", 1)[0]
            raw = open_dataset(output, output="bytes")[i]
            assert raw == ((seg_folder / path).read_bytes(), (seg_folder / "masks" / f"{name}.png").read_bytes())


def test_dataloader_with_workers_gives_aligned_batches(dense_converted):
    fmt, output, _ = dense_converted
    dataset = open_dataset(output, output="tensor")
    expected = [dataset[i] for i in range(len(dataset))]
    fixed = FORMATS[fmt].fixed_size
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate if fixed else lambda batch: batch)
    seen = 0
    for batch in loader:
        pairs = list(zip(*batch)) if fixed else batch
        for image, mask in pairs:
            assert torch.equal(image, expected[seen][0]) and torch.equal(mask, expected[seen][1])
            seen += 1
    assert seen == len(dataset)
    _, mask = expected[0]
    assert type(mask).__name__ == "Mask" and mask.dtype == torch.uint8 and mask.dim() == 2


@pytest.mark.parametrize("policy", ["crop", "pad", "stretch"])
def test_mask_and_image_stay_aligned_pixel_by_pixel(seg_folder, tmp_path, policy):
    output = tmp_path / "ds"
    convert(seg_folder, output, format="memmap", shape=(48, 48), resize=policy, dense=True, pad_value=200,
            mask_pad_value=254, progress=False)
    dataset = open_dataset(output, output="numpy")
    for i, path in enumerate(KEPT[:-1]):  # the flat-colour samples
        image, mask = dataset[i]
        source = source_mask(seg_folder, path)
        np.testing.assert_array_equal(mask, reference_mask(source, (48, 48), policy, pad_value=254), err_msg=path)
        assert set(np.unique(mask)) <= set(np.unique(source)) | {254}, "mask values were interpolated"
        np.testing.assert_array_equal(image, reference_pixels((seg_folder / path).read_bytes(), (48, 48), "RGB", policy,
                                                                     pad_value=200))
        letterbox = mask == 254
        if policy != "pad":
            assert not letterbox.any()
        assert (image[letterbox] == 200).all() and not (image[~letterbox] == 200).all(axis=-1).any()
        # Where the bicubic filter sees one class only, the image pixel is exactly that class's colour.
        interior = single_class_footprint(source, (48, 48), policy)
        assert interior.mean() > 0.1 and not (interior & letterbox).any()
        np.testing.assert_array_equal(image[interior], PALETTE[mask[interior]], err_msg=path)


def single_class_footprint(source: np.ndarray, shape: tuple[int, int], policy: str) -> np.ndarray:
    """Stored pixels whose whole bicubic footprint in the source mask (2 source pixels, times the
    downscale factor, around the pixel's centre) holds one class."""
    source_h, source_w = source.shape
    rw, rh, x0, y0 = reference_placement(source_w, source_h, shape, policy)
    single = np.zeros(shape, dtype=bool)
    for row in range(shape[0]):
        for col in range(shape[1]):
            if not (0 <= row - y0 < rh and 0 <= col - x0 < rw):
                continue  # letterbox
            centre_y = (row - y0 + 0.5) * source_h / rh
            centre_x = (col - x0 + 0.5) * source_w / rw
            reach_y, reach_x = 2 * max(1.0, source_h / rh) + 1, 2 * max(1.0, source_w / rw) + 1
            window = source[max(0, int(centre_y - reach_y)) : int(np.ceil(centre_y + reach_y)),
                            max(0, int(centre_x - reach_x)) : int(np.ceil(centre_x + reach_x))]
            single[row, col] = (window == window.flat[0]).all()
    return single


class VocLike(Dataset):
    """torchvision's VOCSegmentation over a generated VOC folder (no download)."""

    def __init__(self, root: Path, image_set: str = "train"):
        from torchvision.datasets import VOCSegmentation

        self.voc = VOCSegmentation(str(root), year="2012", image_set=image_set, download=False)

    def __len__(self) -> int:
        return len(self.voc)

    def __getitem__(self, index: int):
        return self.voc[index]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    write_segmentation_folder(root / "VOCdevkit" / "VOC2012", num_images=10, layout="voc", num_classes=6)
    return root


def test_voc_folder_and_torchvision_voc_dataset_give_the_same_masks(voc_root, tmp_path):
    voc_folder = voc_root / "VOCdevkit" / "VOC2012"
    split = "ImageSets/Segmentation/train.txt"
    from_folder = convert(SegmentationFolder(voc_folder, split=split), tmp_path / "folder", format="memmap",
                          shape=(32, 32), resize="pad", progress=False)
    from_torch = DenseMemmapConverter(input_data=VocLike(voc_root), output_path=tmp_path / "torch", images_per_file=2,
                                      batch_size=3, shape=(32, 32), im_mode="RGB", resize="pad").convert()
    assert from_folder.num_samples == from_torch.num_samples == 5 and not from_torch.skipped
    folder_ds, torch_ds = DenseMemmapReader(tmp_path / "folder", output="numpy"), DenseMemmapReader(tmp_path / "torch", output="numpy")
    names = (voc_folder / split).read_text().split()
    for i, name in enumerate(names):
        assert folder_ds.source_path(i) == f"JPEGImages/{name}.jpg"
        source = np.asarray(Image.open(voc_folder / "SegmentationClass" / f"{name}.png"))
        np.testing.assert_array_equal(folder_ds[i][1], reference_mask(source, (32, 32), "pad"))
        np.testing.assert_array_equal(torch_ds[i][1], folder_ds[i][1])
        # JPEG decoding: the folder path may take libjpeg-turbo's fast path, the dataset's PIL image not.
        assert np.abs(torch_ds[i][0].astype(int) - folder_ds[i][0].astype(int)).max() <= 8


def test_torch_dataset_masks_into_a_flexible_format_are_lossless_pngs(voc_root, tmp_path):
    DenseIpcConverter(VocLike(voc_root, "val"), tmp_path / "ipc", images_per_file=2).convert()
    dataset = DenseIpcReader(tmp_path / "ipc", output="numpy")
    voc = VocLike(voc_root, "val")
    assert len(dataset) == len(voc) == 5
    for i in range(len(voc)):
        image, mask = voc[i]
        stored_image, stored_mask = dataset[i]
        np.testing.assert_array_equal(stored_image, np.asarray(image))
        np.testing.assert_array_equal(stored_mask, np.asarray(mask))
        assert Image.open(io.BytesIO(open_dataset(tmp_path / "ipc", output="bytes")[i][1])).format == "PNG"


class ManyClasses(Dataset):
    """Tensor images with int64 tensor masks of up to 1000 classes (e.g. instance ids)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        generator = torch.Generator().manual_seed(index)
        image = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8, generator=generator)
        mask = torch.randint(0, 1001 if index % 2 else 200, (20, 30), generator=generator)
        return image, mask


def test_wide_masks_need_mask_mode_i16(tmp_path):
    narrow = convert(ManyClasses(), tmp_path / "narrow", format="memmap", shape=(20, 30), dense=True, progress=False)
    assert narrow.num_samples == 2
    assert {s.path for s in narrow.skipped} == {"1", "3"}
    assert re.fullmatch(r"mask values \d+\.\.\d+ do not fit mask_mode 'L' \(use mask_mode 'I;16'\)", narrow.skipped[0].reason)
    for fmt in ("hdf5", "tar"):
        convert(ManyClasses(), tmp_path / fmt, format=fmt, shape=(20, 30), dense=True, mask_mode="I;16", progress=False)
        numpy_ds, tensor_ds = open_dataset(tmp_path / fmt, output="numpy"), open_dataset(tmp_path / fmt, output="tensor")
        for i in range(4):
            expected = ManyClasses()[i][1].numpy()
            assert numpy_ds[i][1].dtype == np.uint16
            np.testing.assert_array_equal(numpy_ds[i][1], expected)
            assert tensor_ds[i][1].dtype == torch.int32 and torch.equal(tensor_ds[i][1].long(), torch.from_numpy(expected))


class ColourCoded(Dataset):
    """(H, W, 3) arrays with colour-coded (H, W, 3) masks, as Cityscapes' colour images."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int):
        rng = np.random.default_rng(index)
        classes = rng.integers(0, 4, (16, 24))
        return rng.integers(0, 256, (16, 24, 3), dtype=np.uint8), PALETTE[classes]


def test_colour_coded_masks_with_mask_mode_rgb(tmp_path):
    convert(ColourCoded(), tmp_path / "ds", format=["memmap", "parquet"], shape=(8, 12), dense=True, mask_mode="RGB",
            progress=False)
    fixed = open_dataset(tmp_path / "ds", format="memmap", output="numpy")
    flexible = open_dataset(tmp_path / "ds", format="parquet", output="numpy")
    for i in range(3):
        source = ColourCoded()[i][1]
        np.testing.assert_array_equal(fixed[i][1], reference_mask(source, (8, 12), "stretch"))
        np.testing.assert_array_equal(flexible[i][1], source)
    assert open_dataset(tmp_path / "ds", format="memmap", output="tensor")[0][1].shape == (3, 8, 12)


def test_readers_apply_transform_target_transform_and_joint_transforms(dense_converted):
    from torchvision.transforms import v2

    fmt, output, _ = dense_converted
    plain = open_dataset(output, output="tensor")
    image, mask = plain[1]
    flipped = open_dataset(output, output="tensor", transforms=v2.RandomHorizontalFlip(p=1.0))[1]
    assert torch.equal(flipped[0], image.flip(-1)) and torch.equal(flipped[1], mask.flip(-1))
    separate = open_dataset(output, output="tensor", transform=lambda x: x.float(), target_transform=lambda m: m.long())[1]
    assert separate[0].dtype == torch.float32 and separate[1].dtype == torch.int64
    assert torch.equal(separate[1], mask.long())
    with pytest.raises(InvalidArgumentError, match="transforms, or transform/target_transform"):
        open_dataset(output, transform=lambda x: x, transforms=lambda x, y: (x, y))
    pil_image, pil_mask = open_dataset(output)[1]
    assert pil_mask.mode == "L" and np.array_equal(np.asarray(pil_mask), mask.numpy())


def test_dense_reader_names_are_the_readers_of_every_target_kind(seg_folder, small_folder, tmp_path):
    convert(small_folder, tmp_path / "classes", format="memmap", shape=(8, 8), progress=False)
    assert DenseMemmapReader is MemmapReader
    assert isinstance(DenseMemmapReader(tmp_path / "classes")[0][1], int)  # the dataset's kind decides
    convert(seg_folder, tmp_path / "masks", format="memmap", shape=(8, 8), dense=True, progress=False)
    assert MemmapReader(tmp_path / "masks", output="numpy")[0][1].shape == (8, 8)  # the plain reader gives masks too


def test_bad_dense_requests_fail_clearly(seg_folder, small_folder, tmp_path):
    from raydsconv.samples import write_tar_of_tars

    with pytest.raises(InvalidArgumentError, match="lacks images/ and masks/ or JPEGImages/ and SegmentationClass/"):
        convert(small_folder, tmp_path / "a", format="memmap", shape=(8, 8), dense=True, progress=False)
    archive = write_tar_of_tars(seg_folder, tmp_path / "seg.tar")
    with pytest.raises(InvalidArgumentError, match="targets of kind 'mask' are not supported from a tar archive"):
        convert(archive, tmp_path / "b", format="tar", dense=True, progress=False)
    with pytest.raises(InvalidArgumentError, match="unknown mask_mode 'P'"):
        convert(seg_folder, tmp_path / "c", format="tar", dense=True, mask_mode="P", progress=False)
    with pytest.raises(InvalidArgumentError, match="mask_pad_value must be an integer in 0..255"):
        convert(seg_folder, tmp_path / "d", format="memmap", shape=(8, 8), dense=True, mask_pad_value=256, progress=False)
    assert not any((tmp_path / name).exists() and any((tmp_path / name).iterdir()) for name in "abcd")


def test_read_ray_gives_image_and_mask_columns(dense_converted):
    fmt, output, _ = dense_converted
    dataset = open_dataset(output, output="numpy")
    rows = sorted(open_dataset(output).to_ray().take_all(), key=lambda row: row["image"].tobytes())
    expected = sorted((dataset[i] for i in range(len(dataset))), key=lambda pair: pair[0].tobytes())
    assert len(rows) == len(expected) and set(rows[0]) == {"image", "mask"}
    for row, (image, mask) in zip(rows, expected):
        np.testing.assert_array_equal(row["image"], image)
        np.testing.assert_array_equal(row["mask"], mask)


def test_other_tools_read_the_masks(dense_converted, seg_folder):
    fmt, output, _ = dense_converted
    dataset = open_dataset(output, output="numpy")
    if fmt == "hdf5":
        import h5py

        with h5py.File(output / "dataset.h5", "r") as file:
            assert file["masks"].shape == (len(KEPT), 40, 56)
            np.testing.assert_array_equal(file["masks"][5], dataset[5][1])
    elif fmt == "memmap":
        np.testing.assert_array_equal(np.load(output / "masks-00001.npy")[0], dataset[2][1])  # colour_mask was skipped
    elif fmt == "parquet":
        import datasets

        hf = datasets.load_dataset("parquet", data_files=str(output / "samples-*.parquet"), split="train")
        assert set(hf.features) >= {"image", "mask"} and "label" not in hf.features
        np.testing.assert_array_equal(np.asarray(hf[2]["mask"]), dataset[2][1])
    elif fmt == "tar":
        import webdataset as wds

        samples = list(wds.WebDataset(sorted(str(p) for p in output.glob("samples-*.tar")), shardshuffle=False))
        assert len(samples) == len(KEPT) and "mask.png" in samples[0]
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(samples[6]["mask.png"]))), dataset[6][1])
    else:
        import pyarrow as pa

        with pa.memory_map(str(output / "samples-00000.arrow")) as source:
            table = pa.ipc.open_file(source).read_all()
        assert table.column_names[:2] == ["image", "mask"]
        assert table.column("mask")[0]["bytes"].as_py() == (seg_folder / "masks" / "flat_0.png").read_bytes()


def test_cli_converts_a_voc_split(voc_root, tmp_path):
    voc_folder = voc_root / "VOCdevkit" / "VOC2012"
    cli = [sys.executable, "-m", "raydsconv.cli"]
    done = subprocess.run([*cli, "convert", str(voc_folder), str(tmp_path / "ds"), "--dense", "--split",
                           "ImageSets/Segmentation/val.txt", "--format", "tar", "--num-workers", "1", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "converted 5 of 5 inputs" in done.stdout
    info = subprocess.run([*cli, "info", str(tmp_path / "ds")], capture_output=True, text=True, timeout=60)
    assert "targets: masks of mode L" in info.stdout
    names = (voc_folder / "ImageSets/Segmentation/val.txt").read_text().split()
    dataset = DenseTarReader(tmp_path / "ds")
    assert [dataset.source_path(i) for i in range(len(dataset))] == [f"JPEGImages/{n}.jpg" for n in names]
    refused = subprocess.run([*cli, "convert", str(voc_folder), str(tmp_path / "x"), "--split", "val.txt"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--split needs --target mask (or --dense)" in refused.stderr



def test_mask_rules_for_each_kind_of_mask():
    from raydsconv.images import BadImage, ImageSpec
    from raydsconv.masks import MaskSpec, mask_array, prepare_mask

    spec = MaskSpec()
    values = np.random.default_rng(0).integers(0, 3, (6, 9)).astype(np.uint8)
    assert np.array_equal(mask_array(palette_png(values), spec), values)  # palette PNG: its indices
    one_bit = Image.fromarray(values > 0).convert("1")
    assert np.array_equal(mask_array(png(one_bit), spec), (values > 0).astype(np.uint8))
    assert np.array_equal(mask_array(torch.from_numpy(values).long()[None], spec), values)  # (1, H, W) tensor
    assert np.array_equal(mask_array(values > 0, spec), values > 0)
    for bad, reason in ((values.astype(np.float32), "holds no class indices"), (-values.astype(int) - 1, "do not fit"),
                        (np.zeros((2, 3, 3), np.uint8), "is not (H, W)"), (b"\x89PNG broken", "mask file: not an image"),
                        (None, "no mask")):
        with pytest.raises(BadImage, match=re.escape(reason)):
            mask_array(bad, spec)
    # Random masks through every policy and odd sizes: only source values come out, plus the pad value.
    rng = np.random.default_rng(1)
    for _ in range(50):
        source = rng.choice(np.array([3, 7, 250], np.uint8), size=(int(rng.integers(1, 60)), int(rng.integers(1, 60))))
        for policy in ("stretch", "crop", "pad"):
            shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
            stored = prepare_mask(source, ImageSpec(shape, resize=policy), spec)
            np.testing.assert_array_equal(stored, reference_mask(source, shape, policy))
            assert set(np.unique(stored)) <= {3, 7, 250, 255}


def rotated_sample(rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """A PNG stored on its side with EXIF orientation 6, painted by its mask as displayed."""
    mask = blocks_mask(rng, 40, 64)  # displayed: 40 wide, 64 tall
    displayed = Image.fromarray(PALETTE[mask], "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    buffer = io.BytesIO()
    displayed.transpose(Image.Transpose.ROTATE_90).save(buffer, format="PNG", exif=exif.tobytes())
    assert np.array_equal(np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue())))), PALETTE[mask])
    return buffer.getvalue(), mask


class RotatedImages(Dataset):
    """Items as a Dataset that opens its files gives them: PIL images still carrying their EXIF."""

    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = Image.open(self.files[index] / "image.png").convert("RGB")  # convert keeps the EXIF
        return image, Image.open(self.files[index] / "mask.png")


def test_exif_rotated_images_keep_their_masks_aligned(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "rotated"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    samples = []
    for i in range(2):
        data, mask = rotated_sample(rng)
        (root / "images" / f"s{i}.png").write_bytes(data)
        (root / "masks" / f"s{i}.png").write_bytes(palette_png(mask))
        (tmp_path / f"item{i}").mkdir()
        (tmp_path / f"item{i}" / "image.png").write_bytes(data)
        (tmp_path / f"item{i}" / "mask.png").write_bytes(palette_png(mask))
        samples.append((data, mask))
    formats = ["memmap", "parquet", "tar"]
    convert(root, tmp_path / "folder", format=formats, shape=(24, 32), resize="crop", dense=True, progress=False)
    convert(RotatedImages([tmp_path / "item0", tmp_path / "item1"]), tmp_path / "torch", format=formats, shape=(24, 32),
            resize="crop", dense=True, progress=False)
    for source in ("folder", "torch"):
        for fmt in formats:
            dataset = open_dataset(tmp_path / source, format=fmt, output="numpy")
            assert len(dataset) == 2, (source, fmt)
            for (data, mask), (image, stored_mask) in zip(samples, (dataset[0], dataset[1])):
                if fmt == "memmap":
                    np.testing.assert_array_equal(stored_mask, reference_mask(mask, (24, 32), "crop"))
                    np.testing.assert_array_equal(image, reference_pixels(data, (24, 32), "RGB", "crop"))
                else:  # decoded as displayed, like the mask
                    np.testing.assert_array_equal(stored_mask, mask)
                    np.testing.assert_array_equal(image, PALETTE[mask])
            if fmt == "tar":
                with pytest.raises(InvalidArgumentError, match="draft is not available for a dataset with masks"):
                    open_dataset(tmp_path / source, format=fmt, draft=(8, 8))


def test_predecessor_converter_with_dense_keyword_and_cli_mask_options(seg_folder, tmp_path):
    from raydsconv import MemmapConverter

    report = MemmapConverter(seg_folder, tmp_path / "ds", 4, 2, shape=(8, 8), dense=True).convert()
    assert report.num_samples == len(KEPT) and open_dataset(tmp_path / "ds").dense
    cli = [sys.executable, "-m", "raydsconv.cli", "convert", str(seg_folder), str(tmp_path / "x"), "--format", "tar"]
    for option in (["--mask-mode", "RGB"], ["--mask-pad-value", "0"]):
        refused = subprocess.run([*cli, *option], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and f"{option[0]} needs --target mask (or --dense)" in refused.stderr
