"""Decode image files of any common format into one size and channel count, on every core.

Each file is opened with Pillow, checked (size, pixel count, truncation), converted
(EXIF orientation, palette and alpha, 16-bit) and resized by the chosen policy. Results
are streamed in file order into an ``.npy`` file, so memory stays bounded however many
images there are.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import stat
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imgpipe.pipeline.processes import die_with_parent
from imgpipe.config.resources import require_memory

LOGGER = logging.getLogger(__name__)
_CHUNK_FILES = 16


@dataclass(frozen=True)
class DecodeSettings:
    """Target shape and the limits a file must respect."""

    height: int
    width: int
    channels: int
    resize: str
    min_side: int
    max_pixels: int


@dataclass(frozen=True)
class Decoded:
    """One file's pixels (None when dropped), why it was dropped, and what cleaning needs."""

    pixels: np.ndarray | None
    reason: str = ""
    detail: str = ""
    digest: str = ""
    std: float = 0.0


def pixel_digest(pixels: np.ndarray) -> str:
    """A content hash of an image's pixels and shape (equal images, equal digests)."""
    return hashlib.blake2b(pixels.tobytes() + str(pixels.shape).encode(), digest_size=16).hexdigest()


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Gray or RGB; alpha is composited onto white, 16-bit and float images are scaled to 0..255."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L" if channels == 1 else "RGB")


def conform(image: Image.Image, settings: DecodeSettings) -> np.ndarray:
    """Convert and resize a loaded image to (height, width, channels) uint8."""
    image = _to_mode(image, settings.channels)
    size = (settings.width, settings.height)
    if image.size != size:
        if settings.resize == "pad":
            image = ImageOps.pad(image, size, Image.Resampling.BILINEAR, color=0)
        elif settings.resize == "crop":
            image = ImageOps.fit(image, size, Image.Resampling.BILINEAR)
        else:
            image = image.resize(size, Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(settings.height, settings.width, settings.channels)


def _checked(pixels: np.ndarray) -> Decoded:
    return Decoded(pixels, digest=pixel_digest(pixels), std=float(pixels.std()))


def decode_file(path: Path, settings: DecodeSettings) -> Decoded:
    """Decode one file, or say in one word (and a detail) why it cannot be used."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            return Decoded(None, "unreadable", "not a regular file (a FIFO, socket or device)")
        if status.st_size == 0:
            return Decoded(None, "empty_file", "0 bytes")
        with Image.open(path) as image:
            width, height = image.size
            if width * height > settings.max_pixels:
                return Decoded(None, "too_many_pixels", f"{width}×{height} = {width * height:,} pixels "
                                                        f"> max_pixels {settings.max_pixels:,}")
            if min(width, height) < settings.min_side:
                return Decoded(None, "too_small", f"{width}×{height} has a side below min_side {settings.min_side}")
            image.draft(None, (settings.width, settings.height))
            image.load()
            return _checked(conform(ImageOps.exif_transpose(image), settings))
    except UnidentifiedImageError:
        return Decoded(None, "not_an_image", "not a readable image in any supported format")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return Decoded(None, "unreadable", f"{type(error).__name__}: {error}")


def _decode_chunk(paths: Sequence[Path], settings: DecodeSettings) -> list[Decoded]:
    Image.MAX_IMAGE_PIXELS = None  # the explicit max_pixels check above replaces Pillow's warning
    return [decode_file(path, settings) for path in paths]


def _chunks(paths: Sequence[Path]) -> Iterator[Sequence[Path]]:
    for start in range(0, len(paths), _CHUNK_FILES):
        yield paths[start:start + _CHUNK_FILES]


def worker_count(requested: int) -> int:
    """``requested`` processes, or one per usable CPU core when it is 0."""
    return requested or len(os.sched_getaffinity(0))


class DecodeWorkerDied(RuntimeError):
    """A decoding process ended without an answer (killed by a signal, e.g. the kernel's OOM killer)."""


def decode_memory_bytes(settings: DecodeSettings, workers: int) -> int:
    """A generous estimate of what decoding needs at once: per worker, the largest allowed source image
    as RGBA plus a few float copies of one target image."""
    target = settings.height * settings.width * max(settings.channels, 3)
    return max(workers, 1) * (4 * settings.max_pixels + 8 * target)


def check_memory(settings: DecodeSettings, workers: int) -> None:
    """Refuse settings whose decoding could not fit this machine's memory, before any file is read."""
    require_memory(decode_memory_bytes(settings, workers),
                   f"preprocess.image_size={[settings.height, settings.width]} with max_pixels="
                   f"{settings.max_pixels:,} and {max(workers, 1)} decoding process(es)",
                   "lower preprocess.image_size, max_pixels or workers.")


def _pool_results(paths: Sequence[Path], settings: DecodeSettings, workers: int) -> Iterator[list[Decoded]]:
    """Chunks decoded in ``workers`` processes, in order, at most two chunks per worker in flight."""
    context = multiprocessing.get_context("fork")  # no re-import of __main__; decoding needs no threads
    decode = partial(_decode_chunk, settings=settings)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent) as pool:
        pending: deque[Future[list[Decoded]]] = deque()
        for chunk in _chunks(paths):
            pending.append(pool.submit(decode, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def decode_files(paths: Sequence[Path], settings: DecodeSettings, workers: int) -> Iterator[Decoded]:
    """Decode files in order, in ``workers`` processes (one: in this process).

    A worker that dies (the OOM killer, a signal) ends the run with :class:`DecodeWorkerDied`
    instead of waiting forever for its answer.
    """
    if workers <= 1 or len(paths) <= _CHUNK_FILES:
        for chunk in _chunks(paths):
            yield from _decode_chunk(chunk, settings)
        return
    try:
        for results in _pool_results(paths, settings, workers):
            yield from results
    except BrokenProcessPool:
        raise DecodeWorkerDied(
            f"a decoding process died while decoding {len(paths)} files (killed by a signal, most likely the "
            f"kernel's out-of-memory killer); lower preprocess.workers (now {workers}), image_size "
            f"({settings.height}×{settings.width}) or max_pixels ({settings.max_pixels:,}).") from None


def write_npy_header(handle, shape: tuple[int, ...]) -> None:
    """Start an uncompressed uint8 ``.npy`` file whose rows are appended afterwards."""
    np.lib.format.write_array_header_2_0(handle, {"descr": "|u1", "fortran_order": False, "shape": shape})
