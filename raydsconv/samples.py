"""Generated sample data: photo-like JPEGs in an ImageNet-style folder, plus the odd cases real
datasets contain. Used by `raydsconv demo`, the tests and the benchmarks, so nothing is downloaded.

A smooth random colour field upsampled bicubically, mild noise and a few shapes compresses like a
photograph (about 100 KB at 500x375, quality 90); pure noise or flat colour would not.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Typical ImageNet training-image sizes (width, height).
IMAGENET_SIZES = ((500, 375), (375, 500), (500, 333), (640, 480), (500, 500), (1024, 768))


def photo_like(rng: np.random.Generator, width: int, height: int, noise: float = 6.0) -> Image.Image:
    """An RGB image whose statistics (smooth regions, edges, grain) resemble a photograph."""
    coarse = rng.integers(0, 256, size=(max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, width // 2 + 11)), y0 + int(rng.integers(10, height // 2 + 11))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, noise, size=(height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def jpeg_bytes(image: Image.Image, quality: int = 90, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, **options)
    return buffer.getvalue()


def write_image_folder(
    root: str | os.PathLike,
    *,
    num_images: int,
    num_classes: int = 3,
    sizes: tuple[tuple[int, int], ...] = IMAGENET_SIZES,
    quality: int = 90,
    noise: float = 6.0,
    seed: int = 0,
) -> list[Path]:
    """Write ``num_images`` photo-like JPEGs spread round-robin over ``num_classes`` class folders."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    paths = []
    for i in range(num_images):
        class_dir = root / f"class_{i % num_classes:03d}"
        class_dir.mkdir(parents=True, exist_ok=True)
        width, height = sizes[int(rng.integers(0, len(sizes)))]
        path = class_dir / f"img_{i:06d}.JPEG"
        path.write_bytes(jpeg_bytes(photo_like(rng, width, height, noise), quality))
        paths.append(path)
    return paths


def write_tar_of_tars(folder: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """Pack an image folder as ImageNet's training archive is packed: one tar per class folder
    (``<class>.tar``, its files at the top), all inside one outer tar."""
    import tarfile

    with tarfile.open(archive, "w") as outer:
        for class_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for item in sorted(class_dir.iterdir()):
                    tar.add(item, arcname=item.name)
            info = tarfile.TarInfo(f"{class_dir.name}.tar")
            info.size = len(inner.getvalue())
            outer.addfile(info, io.BytesIO(inner.getvalue()))
    return Path(archive)


@dataclass
class OddCases:
    """What `write_odd_cases` wrote, relative to the dataset root."""

    readable: list[str] = field(default_factory=list)  # must convert
    bad: list[str] = field(default_factory=list)  # must be skipped with a reason
    ignored: list[str] = field(default_factory=list)  # hidden files, ignored silently


def write_odd_cases(root: str | os.PathLike, class_name: str = "odd", *, seed: int = 1) -> OddCases:
    """Write one file per awkward case a real image folder contains into ``root/class_name``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    folder = root / class_name
    (folder / "nested" / "deeper").mkdir(parents=True, exist_ok=True)
    cases = OddCases()
    base = photo_like(rng, 96, 64)

    def save(name: str, data: bytes, kind: str = "readable") -> None:
        (folder / name).write_bytes(data)
        getattr(cases, kind).append(f"{class_name}/{name}")

    def encoded(image: Image.Image, fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        return buffer.getvalue()

    save("png_named.JPEG", encoded(base, "PNG"))
    save("UPPER_CASE.JPG", jpeg_bytes(base))
    save("grayscale.jpg", jpeg_bytes(base.convert("L")))
    save("cmyk.jpg", jpeg_bytes(base.convert("CMYK")))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    save("exif_rotated.jpg", jpeg_bytes(base, exif=exif.tobytes()))
    frames = [base.convert("P"), photo_like(rng, 96, 64).convert("P")]
    save("animated.gif", encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100))
    save("image.tiff", encoded(base, "TIFF"))
    save("image.webp", encoded(base, "WEBP", lossless=True))
    save("image.bmp", encoded(base, "BMP"))
    rgba = base.convert("RGBA")
    alpha = np.zeros((64, 96), dtype=np.uint8)
    alpha[:, 48:] = 255
    rgba.putalpha(Image.fromarray(alpha, "L"))
    save("rgba.png", encoded(rgba, "PNG"))
    save("la.png", encoded(rgba.convert("LA"), "PNG"))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save("palette_transparent.png", encoded(palette, "PNG", transparency=0))
    save("one_bit.png", encoded(base.convert("1"), "PNG"))
    ramp = (np.arange(64 * 96, dtype=np.uint32).reshape(64, 96) * 10 % 65536).astype(np.uint16)
    save("gray16.png", encoded(Image.fromarray(ramp), "PNG"))
    (folder / "nested" / "deeper" / "deep.png").write_bytes(encoded(base, "PNG"))
    cases.readable.append(f"{class_name}/nested/deeper/deep.png")

    whole = jpeg_bytes(photo_like(rng, 200, 150))
    save("truncated.jpg", whole[: len(whole) // 2], "bad")
    save("empty.jpg", b"", "bad")
    save("random_bytes.png", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "bad")
    save("readme.txt", b"not an image\n", "bad")
    save(".hidden.jpg", jpeg_bytes(base), "ignored")
    return cases


# Pascal VOC's colour map: class i's colour; 255 (object borders, "ignore") is drawn cream.
def voc_palette() -> list[int]:
    palette = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette += [red, green, blue]
    palette[255 * 3 : 256 * 3] = [224, 224, 192]
    return palette


def segmentation_sample(rng: np.random.Generator, width: int, height: int,
                        num_classes: int = 4) -> tuple[Image.Image, Image.Image]:
    """A photo-like image and its VOC-style mask: a palette PNG whose indices are classes
    (0 background, a few objects of classes 1..num_classes-1, each outlined with 255)."""
    mask = Image.new("P", (width, height), 0)
    mask.putpalette(voc_palette())
    draw = ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        x1, y1 = x0 + int(rng.integers(8, width // 2 + 9)), y0 + int(rng.integers(8, height // 2 + 9))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=int(rng.integers(1, num_classes)), outline=255, width=2)
    colours = np.asarray(voc_palette(), dtype=np.float32).reshape(256, 3)[np.asarray(mask)]
    texture = np.asarray(photo_like(rng, width, height), dtype=np.float32)
    image = Image.fromarray((0.4 * texture + 0.6 * colours).round().astype(np.uint8), "RGB")
    return image, mask


def write_segmentation_folder(root: str | os.PathLike, *, num_images: int, num_classes: int = 4,
                              layout: str = "plain", sizes: tuple[tuple[int, int], ...] = ((96, 72), (64, 80)),
                              seed: int = 0) -> list[str]:
    """Write a segmentation dataset: JPEG images and palette-PNG masks with the same names.

    ``layout="plain"``: ``images/`` and ``masks/``. ``layout="voc"``: Pascal VOC's ``JPEGImages/``,
    ``SegmentationClass/`` and ``ImageSets/Segmentation/{train,val,trainval}.txt`` (every other
    sample is in val), so ``torchvision.datasets.VOCSegmentation`` reads it when ``root`` is
    ``.../VOCdevkit/VOC2012``. Returns the sample names in order.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    images_dir, masks_dir = ("images", "masks") if layout == "plain" else ("JPEGImages", "SegmentationClass")
    (root / images_dir).mkdir(parents=True, exist_ok=True)
    (root / masks_dir).mkdir(parents=True, exist_ok=True)
    names = [f"2007_{i:06d}" for i in range(num_images)]
    for name in names:
        image, mask = segmentation_sample(rng, *sizes[int(rng.integers(0, len(sizes)))], num_classes=num_classes)
        (root / images_dir / f"{name}.jpg").write_bytes(jpeg_bytes(image))
        mask.save(root / masks_dir / f"{name}.png")
    if layout == "voc":
        splits = root / "ImageSets" / "Segmentation"
        splits.mkdir(parents=True, exist_ok=True)
        for split, chosen in (("train", names[::2]), ("val", names[1::2]), ("trainval", names)):
            (splits / f"{split}.txt").write_text("".join(f"{name}\n" for name in chosen))
    return names
