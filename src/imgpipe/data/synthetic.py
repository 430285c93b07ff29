"""Generated folder datasets: learnable shapes in every common format, plus one broken file of each kind.

Used by the tests, the preprocessing benchmark and anyone who wants to try a folder
source without their own images (``imgpipe make-folder-dataset``).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
# (extension, Pillow format, mode): every format and colour mode a researcher's folder may hold.
VARIANTS = (("png", "PNG", "RGB"), ("jpg", "JPEG", "RGB"), ("JPEG", "JPEG", "L"), ("bmp", "BMP", "RGB"),
            ("gif", "GIF", "P"), ("tiff", "TIFF", "RGB"), ("webp", "WEBP", "RGBA"), ("PNG", "PNG", "LA"))


def draw_shape(shape: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One RGB image: a shape of random colour, position and scale on a random plain background."""
    width, height = size
    background, foreground = (tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(2))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    side = min(width, height) * rng.uniform(0.4, 0.8)
    left, top = rng.uniform(0, width - side), rng.uniform(0, height - side)
    box = (left, top, left + side, top + side)
    if shape == "circle":
        draw.ellipse(box, fill=foreground)
    elif shape == "square":
        draw.rectangle(box, fill=foreground)
    else:
        draw.polygon([(left + side / 2, top), (left, top + side), (left + side, top + side)], fill=foreground)
    return image


def save_variant(image: Image.Image, path: Path, image_format: str, mode: str) -> None:
    """Save ``image`` converted to ``mode`` in ``image_format``."""
    converted = image.convert(mode) if mode not in ("P",) else image.convert("P", palette=Image.Palette.ADAPTIVE)
    if image_format == "JPEG" and converted.mode not in ("L", "RGB"):
        converted = converted.convert("RGB")
    converted.save(path, format=image_format)


def write_shapes_dataset(root: Path, per_class: int, seed: int = 0, sizes: tuple[int, int] = (24, 96),
                         variants: tuple[tuple[str, str, str], ...] = VARIANTS) -> int:
    """``per_class`` images of each shape under ``root/<shape>/`` (some nested), sizes and formats varied."""
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        for index in range(per_class):
            extension, image_format, mode = variants[index % len(variants)]
            size = tuple(int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
            folder = root / shape / ("nested" if index % 5 == 0 else "")
            folder.mkdir(parents=True, exist_ok=True)
            save_variant(draw_shape(shape, size, rng), folder / f"{shape}-{index:05d}.{extension}", image_format, mode)
    return per_class * len(SHAPES)


def _first_image(root: Path, shape: str) -> Path:
    return sorted((root / shape).rglob(f"{shape}-*.*"))[0]


def write_broken_files(root: Path) -> dict[str, str]:
    """One file of every kind cleaning must drop, in the existing class folders; {file name: expected reason}."""
    circle, square = root / "circle", root / "square"
    (circle / "empty.png").write_bytes(b"")
    (circle / "notes-not-an-image.jpg").write_text("a text file with an image extension\n")
    buffer = io.BytesIO()
    draw_shape("circle", (64, 64), np.random.default_rng(1)).save(buffer, format="JPEG")
    (circle / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    Image.new("1", (12000, 12000)).save(circle / "bomb.png")  # 144 Mpx, a few kB on disk
    draw_shape("circle", (5, 5), np.random.default_rng(2)).save(circle / "tiny.png")
    Image.new("RGB", (40, 40), (90, 90, 90)).save(circle / "blank.png")
    exact, conflicting = _first_image(root, "circle"), _first_image(root, "triangle")
    shutil.copy(exact, circle / f"exact-copy{exact.suffix}")
    shutil.copy(conflicting, square / f"conflicting-copy{conflicting.suffix}")
    (square / "README.txt").write_text("not an image\n")
    return {"empty.png": "empty_file", "notes-not-an-image.jpg": "not_an_image", "truncated.jpg": "unreadable",
            "bomb.png": "too_many_pixels", "tiny.png": "too_small", "blank.png": "blank",
            f"exact-copy{exact.suffix}": "exact_duplicate",
            f"conflicting-copy{conflicting.suffix}": "duplicate_with_conflicting_label",
            "README.txt": "unsupported_extension"}
