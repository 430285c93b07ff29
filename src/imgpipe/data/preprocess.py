"""Load raw images from the configured source, clean them, and save the dataset the later stages read.

Pixels stay ``uint8``; normalization happens inside each model so an exported model takes
raw images. Decoded images stream through an ``.npy`` file on disk, so memory stays
bounded for datasets larger than RAM. The cleaning report lists every file that was
dropped and why.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgpipe.artifacts.files import atomic_path
from imgpipe.config.schema import PreprocessParams
from imgpipe.data.decode import DecodeSettings, Decoded, check_memory, conform, decode_files, pixel_digest, worker_count, \
    write_npy_header
from imgpipe.data.dataset import FIXED_ZIP_TIME, ORIGIN_TEST, ORIGIN_TRAIN, ROWS_PER_BLOCK, write_npy_member
from imgpipe.data.idx import IdxFormatError, load_idx
from imgpipe.data.sources import IDX_FILES, DataError, ImageFiles, find_idx_file, \
    list_class_folders, read_manifest

LOGGER = logging.getLogger(__name__)

__all__ = ["ORIGIN_TEST", "ORIGIN_TRAIN", "DataError", "RawImages", "clean", "load_raw", "save_dataset"]
DECODE_REASONS = ("outside_raw_data", "hidden_file", "outside_class_folder", "unsupported_extension", "missing_file", "empty_file", "not_an_image",
                  "unreadable", "too_many_pixels", "too_small")
CLEANING_REASONS = ("blank", "duplicate_with_conflicting_label", "exact_duplicate")


@dataclass(frozen=True)
class RawImages:
    """Every candidate image, decoded into an ``.npy`` file (zeros where decoding failed), with its facts."""

    store: Path
    labels: np.ndarray
    origin: np.ndarray
    class_names: tuple[str, ...]
    sources: list[str]
    decoded: list[Decoded]
    passed_over: list[dict[str, str]]
    wall_time_s: float

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(np.load(self.store, mmap_mode="r").shape[1:])

    def sample(self, rows: np.ndarray) -> np.ndarray:
        """A few images by row number, read from disk."""
        return np.asarray(np.load(self.store, mmap_mode="r")[np.sort(rows)])


def check_pair(images: np.ndarray, labels: np.ndarray, num_classes: int, source: str) -> None:
    """Raise if images and labels disagree in count or labels fall outside ``0..num_classes-1``."""
    if images.ndim not in (3, 4):
        raise IdxFormatError(f"{source}: images have shape {images.shape}; expected (N, H, W) or (N, H, W, C).")
    if labels.ndim != 1 or len(labels) != len(images):
        raise IdxFormatError(f"{source}: {labels.shape} labels for {len(images)} images; expected one label per image.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise IdxFormatError(
            f"{source}: labels span {labels.min()}..{labels.max()}; expected 0..{num_classes - 1} "
            f"(one per name in preprocess.class_names).")


def _read_idx_pairs(raw_dir: Path, class_names: list[str],
                    allowed: tuple[Path, ...] = ()) -> tuple[list[np.ndarray], list[np.ndarray], tuple]:
    pairs = [(load_idx(find_idx_file(raw_dir, images, allowed)), load_idx(find_idx_file(raw_dir, labels, allowed)),
              images)
             for images, labels in IDX_FILES.values()]
    names = tuple(class_names) or tuple(str(n) for n in range(1 + max(int(p[1].max(initial=0)) for p in pairs)))
    for images, labels, stem in pairs:
        check_pair(images, labels, len(names), f"{raw_dir / stem} + its labels file")
    shapes = {images.shape[1:] for images, _, _ in pairs}
    if len(shapes) != 1:
        raise IdxFormatError(f"{raw_dir}: train and test images differ in shape {sorted(shapes)}; expected one shape.")
    return [p[0] if p[0].ndim == 4 else p[0][..., np.newaxis] for p in pairs], [p[1] for p in pairs], names


def read_idx_images(images_file: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` images (N, H, W, 1) and labels of an IDX images file and its labels file."""
    labels_file = images_file.with_name(images_file.name.replace("images-idx3", "labels-idx1"))
    return load_idx(images_file)[:count, ..., np.newaxis], load_idx(labels_file)[:count].astype(np.int64)


def _idx_rows(images: np.ndarray, settings: DecodeSettings | None) -> Iterator[Decoded]:
    for pixels in images:
        if settings is not None:
            pixels = conform(Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels), settings)
        yield Decoded(pixels, digest=pixel_digest(pixels), std=float(pixels.std()))


def _stream_to_store(rows: Iterator[Decoded], count: int, shape: tuple[int, ...], store: Path) -> list[Decoded]:
    """Write each decoded image (zeros for a dropped file) to ``store``; keep only the facts in memory."""
    facts = []
    blank = np.zeros(shape, dtype=np.uint8)
    with store.open("wb") as handle:
        write_npy_header(handle, (count, *shape))
        for row in rows:
            handle.write((blank if row.pixels is None else row.pixels).tobytes())
            facts.append(Decoded(None, row.reason, row.detail, row.digest, row.std))
    if len(facts) != count:
        raise DataError(f"{store}: wrote {len(facts)} of {count} images; the source changed while it was read.")
    return facts


def _settings(params: PreprocessParams, shape: tuple[int, ...] | None = None) -> DecodeSettings:
    height, width = params.image_size
    if shape is not None and not height:
        height, width = shape[:2]
    channels = params.channels or (shape[-1] if shape is not None else 3)
    return DecodeSettings(height, width, channels, params.resize, params.min_side, params.max_pixels)


def _load_idx_source(raw_dir: Path, params: PreprocessParams, store: Path,
                     allowed: tuple[Path, ...] = ()) -> RawImages:
    started = time.perf_counter()
    images, labels, names = _read_idx_pairs(raw_dir, params.class_names, allowed)
    settings = _settings(params, images[0].shape[1:])
    check_memory(settings, 1)
    needs_conform = (settings.height, settings.width, settings.channels) != images[0].shape[1:]
    all_images = np.concatenate(images)
    rows = _idx_rows(all_images, settings if needs_conform else None)
    facts = _stream_to_store(rows, len(all_images), (settings.height, settings.width, settings.channels), store)
    sources = [f"{stem}[{row}]" for (stem, _), part in zip(IDX_FILES.values(), images) for row in range(len(part))]
    origin = np.concatenate([np.full(len(part), code, dtype=np.int8) for code, part in enumerate(images)])
    return RawImages(store, np.concatenate(labels).astype(np.int64), origin, names, sources, facts, [],
                     time.perf_counter() - started)


def _relative(path: str | Path, root: Path) -> str:
    """``path`` relative to the project root, so reports and datasets do not depend on where the clone is."""
    return str(Path(path).relative_to(root)) if Path(path).is_relative_to(root) else str(path)


def _load_files_source(listing: ImageFiles, params: PreprocessParams, root: Path, store: Path) -> RawImages:
    started = time.perf_counter()
    settings = _settings(params)
    workers = worker_count(params.workers)
    check_memory(settings, workers)
    LOGGER.info("decoding %d files in %d processes", len(listing.files), workers)
    facts = _stream_to_store(decode_files(listing.files, settings, workers), len(listing.files),
                             (settings.height, settings.width, settings.channels), store)
    return RawImages(store, listing.labels, np.full(len(listing.files), ORIGIN_TRAIN, dtype=np.int8),
                     listing.class_names, [_relative(path, root) for path in listing.files], facts,
                     [{**entry, "file": _relative(entry["file"], root)} for entry in listing.passed_over],
                     time.perf_counter() - started)


def load_raw(params: PreprocessParams, root: Path, store: Path) -> RawImages:
    """Read the configured source (``preprocess`` params) into ``store``; ``path`` is relative to ``root``."""
    root = root.resolve()
    source = root / params.path
    allowed = (root / "data" / "raw", root / ".dvc" / "cache")   # what data.dvc tracks (and its cache's links)
    if params.source == "idx":
        return _load_idx_source(source, params, store, allowed)
    listing = (list_class_folders(source, allowed) if params.source == "folder"
               else read_manifest(source, allowed))
    return _load_files_source(listing, params, root, store)


def sample_rows(raw: RawImages, keep: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Up to ``per_class`` kept rows of every class, drawn under ``seed``, in row order (for a sample figure)."""
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(keep & (raw.labels == label)))[:per_class]
                                   for label in range(len(raw.class_names))]))


def _cleaning_reasons(raw: RawImages, blank_max_std: float, drop_exact: bool, drop_conflicting: bool) -> list[str]:
    """One reason per row ("" keeps it): decoding problems first, then blank, conflicting and exact duplicates."""
    reasons = [fact.reason for fact in raw.decoded]
    for row, fact in enumerate(raw.decoded):
        if not reasons[row] and fact.std <= blank_max_std:
            reasons[row] = "blank"
    labels_of: dict[str, set[int]] = {}
    for row, fact in enumerate(raw.decoded):
        if not reasons[row]:
            labels_of.setdefault(fact.digest, set()).add(int(raw.labels[row]))
    seen: set[str] = set()
    for row, fact in enumerate(raw.decoded):
        if reasons[row]:
            continue
        if drop_conflicting and len(labels_of[fact.digest]) > 1:
            reasons[row] = "duplicate_with_conflicting_label"
        elif drop_exact and fact.digest in seen:
            reasons[row] = "exact_duplicate"
        seen.add(fact.digest)
    return reasons


def _detail(raw: RawImages, row: int, reason: str) -> str:
    if reason == "blank":
        return f"pixel standard deviation {raw.decoded[row].std:.3g}"
    if reason in CLEANING_REASONS:
        return f"pixels identical to another image (digest {raw.decoded[row].digest})"
    return raw.decoded[row].detail


def _per_class(raw: RawImages, keep: np.ndarray) -> dict[str, dict[str, int]]:
    parts = ("train", "test") if np.any(raw.origin == ORIGIN_TEST) else ("train",)
    return {name: {part: int(np.sum(keep & (raw.labels == label) & (raw.origin == code)))
                   for code, part in enumerate(parts)}
            for label, name in enumerate(raw.class_names)}


def check_class_sizes(per_class: dict[str, dict[str, int]], minimum: int, source: str) -> None:
    """Raise naming every class that keeps fewer than ``minimum`` images after cleaning."""
    small = {name: sum(parts.values()) for name, parts in per_class.items() if sum(parts.values()) < minimum}
    if small:
        listing = ", ".join(f"'{name}' ({count})" for name, count in small.items())
        raise DataError(f"{source}: after cleaning, {len(small)} class(es) keep fewer images than "
                        f"preprocess.min_images_per_class = {minimum}: {listing}; add images or remove those classes.")


def clean(raw: RawImages, params: PreprocessParams) -> tuple[np.ndarray, dict[str, Any]]:
    """Which rows to keep, and a report naming every dropped file with its reason."""
    reasons = _cleaning_reasons(raw, params.blank_max_std, params.drop_exact_duplicates,
                                params.drop_conflicting_duplicates)
    keep = np.array([not reason for reason in reasons], dtype=bool)
    listing = list(raw.passed_over) + [
        {"file": raw.sources[row], "label": raw.class_names[raw.labels[row]], "reason": reason,
         "detail": _detail(raw, row, reason)}
        for row, reason in enumerate(reasons) if reason]
    counted = [entry["reason"] for entry in listing]
    per_class = _per_class(raw, keep)
    check_class_sizes(per_class, params.min_images_per_class, params.path)
    report = {
        "source": params.source, "path": params.path,
        "input_files": len(raw.sources) + len(raw.passed_over),
        "kept_images": int(keep.sum()), "dropped_images": len(listing),
        "dropped_by_reason": {reason: counted.count(reason) for reason in DECODE_REASONS + CLEANING_REASONS},
        "image_shape": list(raw.image_shape), "classes": len(raw.class_names),
        "kept_per_class": per_class, "dropped": listing,
    }
    LOGGER.info("kept %d of %d files; dropped %s", report["kept_images"], report["input_files"],
                {k: v for k, v in report["dropped_by_reason"].items() if v})
    return keep, report


def _write_kept_images(archive: zipfile.ZipFile, store: Path, keep: np.ndarray) -> None:
    """Copy the kept rows of ``store`` into the archive block by block (bounded memory)."""
    info = zipfile.ZipInfo("images.npy", date_time=FIXED_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    with store.open("rb") as source, archive.open(info, "w", force_zip64=True) as member:
        np.lib.format.read_magic(source)
        shape, _, _ = np.lib.format.read_array_header_2_0(source)  # the store is written by write_npy_header
        write_npy_header(member, (int(keep.sum()), *shape[1:]))
        row_bytes = int(np.prod(shape[1:]))
        for start in range(0, shape[0], ROWS_PER_BLOCK):
            block = np.fromfile(source, dtype=np.uint8, count=min(ROWS_PER_BLOCK, shape[0] - start) * row_bytes)
            member.write(block.reshape(-1, row_bytes)[keep[start:start + ROWS_PER_BLOCK]].tobytes())


def save_dataset(raw: RawImages, keep: np.ndarray, path: Path) -> None:
    """Write the kept images, labels, origins, sources and class names as one ``.npz`` (atomically, byte-stable)."""
    with atomic_path(path) as partial, zipfile.ZipFile(partial, "w") as archive:
        _write_kept_images(archive, raw.store, keep)
        write_npy_member(archive, "labels", raw.labels[keep], compress=True)
        write_npy_member(archive, "origin", raw.origin[keep], compress=True)
        write_npy_member(archive, "class_names", np.array(raw.class_names), compress=True)
        write_npy_member(archive, "sources", np.array(raw.sources)[keep], compress=True)


def cleaning_metrics(report: dict[str, Any], raw: RawImages) -> dict[str, Any]:
    """The counts of a cleaning report (not the per-file listing) and the decoding speed, for `dvc metrics`.
    Only the reasons that dropped a file are listed: eleven zero columns would bury `dvc metrics show`."""
    counts = {key: report[key] for key in ("input_files", "kept_images", "dropped_images", "image_shape")}
    counts["dropped_by_reason"] = {reason: count for reason, count in report["dropped_by_reason"].items() if count}
    return {**counts, "wall_time_s": round(raw.wall_time_s, 2),
            "images_per_second": round(len(raw.sources) / max(raw.wall_time_s, 1e-9), 1)}
