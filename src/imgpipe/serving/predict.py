"""``imgpipe predict``: label new image files with an exported model.

Files, folders (searched recursively) and glob patterns are accepted. Each image is decoded
with Pillow to uint8 gray, RGB or RGBA and sent, at its own size, to the exported model's
serving signature, which converts and resizes it in the graph. A file that cannot be read
gets its own error line; the others are still predicted. Every answer names the model version
that gave it, and an image unlike the training images (colour against grayscale training data,
a size far from the training size, a much brighter or darker picture) is flagged, not refused.
"""

from __future__ import annotations

import glob
import json
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from imgpipe.data.sources import IMAGE_EXTENSIONS
from imgpipe.serving.export import latest_version, load_serving, load_training_profile
from imgpipe.serving.quiet import native_stderr_silenced
from imgpipe.serving.trust import check_trusted

Image.MAX_IMAGE_PIXELS = None   # read_image checks the pixel count itself, as a per-file error
MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class Prediction:
    """The outcome for one file: a class with its probability, or an error."""

    path: str
    class_name: str | None = None
    label: int | None = None
    probability: float | None = None
    top: list[tuple[str, float]] | None = None
    unlike_training: list[str] | None = None
    error: str | None = None


def unlike_training(pixels: np.ndarray, profile: dict[str, object] | None) -> list[str]:
    """How an image differs from what the model was trained on (empty when it looks alike)."""
    if profile is None:
        return []
    height, width, channels = int(profile["height"]), int(profile["width"]), int(profile["channels"])
    notes = []
    rgb = pixels[..., :3].astype(np.int16)
    if channels == 1 and pixels.shape[-1] >= 3 and np.abs(rgb - rgb.mean(axis=-1, keepdims=True)).mean() > 4:
        notes.append("a colour image; the model saw grayscale images only")
    scale = max(pixels.shape[0] / height, pixels.shape[1] / width, height / pixels.shape[0], width / pixels.shape[1])
    if scale > 4:
        notes.append(f"{pixels.shape[1]}×{pixels.shape[0]} pixels; the model saw {width}×{height}")
    if "pixel_mean" in profile:
        mean, std = float(np.mean(profile["pixel_mean"])), float(np.mean(profile["pixel_std"]))
        gray = rgb.mean(axis=-1) if pixels.shape[-1] >= 3 else pixels[..., 0]
        if abs(float(gray.mean()) - mean) > std:
            notes.append(f"mean brightness {gray.mean():.0f}; the training images average {mean:.0f} ± {std:.0f}")
    return notes


def expand_inputs(inputs: list[str]) -> Iterator[Path]:
    """Files as given, image files under folders (sorted), and glob matches; missing paths pass through."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif not path.exists() and glob.has_magic(item):
            yield from (Path(match) for match in sorted(glob.glob(item, recursive=True)))
        else:
            yield path


class UnreadableImage(ValueError):
    """A file that is not read: not a regular file, or an image with too many pixels."""


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode one image file to a uint8 array H×W×C with C = 1 (gray), 3 (RGB) or 4 (RGBA).

    Only regular files are opened (a FIFO would block), and the pixel count is checked from the header,
    which Pillow reads without decoding, so a decompression bomb is refused before it takes any memory.
    """
    if not stat.S_ISREG(path.stat().st_mode):
        raise UnreadableImage(f"{path} is not a regular file (a folder, FIFO, socket or device)")
    with Image.open(path) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise UnreadableImage(f"{path} has {width}×{height} = {width * height:,} pixels, more than "
                                  f"--max-pixels {max_pixels:,} (a decompression bomb?)")
        image.load()
        mode = {"1": "L", "L": "L", "I;16": "L", "I": "L", "F": "L", "LA": "RGBA", "RGBA": "RGBA"}.get(image.mode)
        if image.mode == "P":
            mode = "RGBA" if "transparency" in image.info else "RGB"
        converted = image.convert(mode or "RGB")
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def predict_files(paths: list[Path], version_dir: Path, progress: bool, top: int = 1,
                  max_pixels: int = MAX_PIXELS) -> Iterator[Prediction]:
    """Predict each file in turn; unreadable files yield an error instead of stopping the run."""
    with native_stderr_silenced():
        serve = load_serving(version_dir)
        serve(images=np.zeros((1, 8, 8, 1), np.uint8))     # the first call's kernel notes, silenced too
    profile = load_training_profile(version_dir)
    names = [str(name) for name in profile["class_names"]] if profile else None
    for path in tqdm(paths, disable=not progress, unit="image", file=sys.stderr):
        try:
            pixels = read_image(path, max_pixels)
        except UnreadableImage as error:
            yield Prediction(str(path), error=f"cannot read {error}")
            continue
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            yield Prediction(str(path), error=f"cannot read {path} as an image ({type(error).__name__}: {error})")
            continue
        outputs = serve(images=pixels[np.newaxis])
        label = int(outputs["label"].numpy()[0])
        probabilities = outputs["probabilities"].numpy()[0]
        best = np.argsort(-probabilities, kind="stable")[:top] if names and top > 1 else []
        yield Prediction(str(path), class_name=outputs["class_name"].numpy()[0].decode(), label=label,
                         probability=float(probabilities[label]),
                         top=[(names[i], round(float(probabilities[i]), 4)) for i in best] or None,
                         unlike_training=unlike_training(pixels, profile) or None)


def write_prediction(prediction: Prediction, as_json: bool, out: TextIO, err: TextIO,
                     model: dict[str, object] | None = None) -> None:
    """One line per file: JSON (with the model and version), or ``path<TAB>class<TAB>probability``
    followed by the next-best classes and any note on how the image differs from the training
    images; errors go to ``err`` in text mode."""
    if as_json:
        record = {key: value for key, value in prediction.__dict__.items() if value is not None}
        out.write(json.dumps({**record, **(model or {})}) + "\n")
    elif prediction.error:
        err.write(f"error: {prediction.error}\n")
    else:
        fields = [prediction.path, prediction.class_name, f"{prediction.probability:.4f}"]
        fields += [f"{name} {probability:.4f}" for name, probability in (prediction.top or [])[1:]]
        if prediction.unlike_training:
            fields.append("unlike the training images: " + "; ".join(prediction.unlike_training))
        out.write("\t".join(fields) + "\n")


def run_predict(inputs: list[str], export_dir: Path, as_json: bool, out: TextIO = sys.stdout,
                err: TextIO = sys.stderr, top: int = 1, trusted_root: Path | None = None, trust_model: bool = False,
                max_pixels: int = MAX_PIXELS) -> int:
    """Predict every input and return the exit code: 0 when all files were predicted, 1 otherwise.

    A model outside ``trusted_root`` (the project's own ``exported/``) is checked by
    :func:`imgpipe.serving.trust.check_trusted` before it is loaded, unless ``trust_model``.
    """
    paths = list(expand_inputs(inputs))
    if not paths:
        err.write(f"error: no image files found in {' '.join(inputs)}\n")
        return 1
    version_dir = latest_version(export_dir)
    if not trust_model and not (trusted_root and version_dir.resolve().is_relative_to(trusted_root.resolve())):
        check_trusted(version_dir)
    model = {"model": export_dir.name, "version": int(version_dir.name)}
    err.write(f"answering with {export_dir.name} version {version_dir.name} ({version_dir})\n")
    failures = 0
    for prediction in predict_files(paths, version_dir, progress=len(paths) > 20 and err.isatty(), top=top,
                                    max_pixels=max_pixels):
        failures += prediction.error is not None
        write_prediction(prediction, as_json, out, err, model)
    return 1 if failures else 0
