"""Folder and CSV sources: every format and mode decodes, every broken file is dropped and named."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgpipe.data import synthetic
from imgpipe.data.decode import DecodeSettings, decode_file
from imgpipe.config.schema import PreprocessParams
from imgpipe.data.preprocess import DataError, clean, load_raw
from imgpipe.data.sources import list_class_folders, read_manifest


def folder_params(**overrides: object) -> PreprocessParams:
    return PreprocessParams(**{"source": "folder", "path": "data/raw/shapes", "class_names": [], "image_size": [32, 32], "channels": 3,
            "resize": "pad", "min_side": 8, "max_pixels": 1_000_000, "min_images_per_class": 5, "blank_max_std": 0.0,
            "drop_exact_duplicates": True, "drop_conflicting_duplicates": True, "workers": 2, **overrides})


@pytest.fixture
def shapes(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "data" / "raw" / "shapes"
    synthetic.write_shapes_dataset(root, per_class=16)
    return tmp_path, synthetic.write_broken_files(root)


def test_every_broken_file_is_dropped_with_its_reason_and_the_rest_kept(shapes: tuple[Path, dict]) -> None:
    project, expected = shapes
    raw = load_raw(folder_params(), project, project / "decoded.npy")
    keep, report = clean(raw, folder_params())
    reasons = {Path(entry["file"]).name: entry["reason"] for entry in report["dropped"]}
    # The triangle that the conflicting copy duplicates goes too: its label cannot be trusted either.
    assert reasons == {**expected, "triangle-00000.png": "duplicate_with_conflicting_label"}
    assert report["kept_images"] == 48 - 1 and keep.sum() == 47
    assert report["input_files"] == 48 + len(expected)
    assert raw.image_shape == (32, 32, 3) and raw.class_names == ("circle", "square", "triangle")
    assert all(entry["detail"] for entry in report["dropped"])


@pytest.mark.parametrize("mode_and_format", synthetic.VARIANTS)
def test_each_format_and_mode_decodes_to_the_configured_shape(tmp_path: Path, mode_and_format: tuple) -> None:
    extension, image_format, mode = mode_and_format
    path = tmp_path / f"image.{extension}"
    synthetic.save_variant(synthetic.draw_shape("square", (50, 30), np.random.default_rng(0)), path, image_format, mode)
    for channels in (1, 3):
        for policy in ("stretch", "pad", "crop"):
            decoded = decode_file(path, DecodeSettings(20, 24, channels, policy, 8, 10_000))
            assert decoded.reason == "" and decoded.pixels.shape == (20, 24, channels), (policy, decoded.detail)
            assert decoded.pixels.dtype == np.uint8 and decoded.std > 0


def test_resize_policies_differ_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("L", (40, 10), 255).save(path)
    settings = {policy: DecodeSettings(10, 10, 1, policy, 1, 10_000) for policy in ("stretch", "pad", "crop")}
    stretched, padded, cropped = (decode_file(path, s).pixels[..., 0] for s in settings.values())
    assert stretched.min() == 255 and cropped.min() == 255          # whole frame white
    assert padded[0].max() == 0 and padded[5].min() == 255          # black bars above and below the kept aspect


def test_a_csv_manifest_names_classes_and_reports_missing_files(tmp_path: Path) -> None:
    root = tmp_path / "data" / "raw" / "shapes"
    synthetic.write_shapes_dataset(root, per_class=6)
    manifest = tmp_path / "data" / "raw" / "labels.csv"
    rows = [(str(path.relative_to(manifest.parent)), path.parent.name if path.parent.name != "nested" else
             path.parent.parent.name) for path in sorted(root.rglob("*.*"))]
    with manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label"), *rows, ("shapes/gone.png", "circle")])
    listing = read_manifest(manifest)
    assert listing.class_names == ("circle", "square", "triangle") and len(listing.files) == 18
    assert listing.passed_over == [{"file": str(manifest.parent / "shapes/gone.png"), "label": "circle",
                                    "reason": "missing_file", "detail": "listed in labels.csv but not found"}]
    assert listing.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6


@pytest.mark.parametrize(("setup", "expected"), [
    ("missing-root", "data/raw/shapes: folder missing (it does not exist); expected a folder with one sub-folder per class."),
    ("no-classes", "holds no class folders; expected one sub-folder per class"),
    ("empty-class", "class folder 'zebra' holds no image files (1 other files)"),
    ("few-images", "1 class(es) keep fewer images than preprocess.min_images_per_class = 5: 'zebra' (2)"),
    ("csv-columns", "labels.csv: columns ['file', 'y']; expected a header with path and label"),
    ("csv-empty-label", "labels.csv, line 2: path 'a.png', label ''; expected both to be non-empty."),
])
def test_unusable_sources_stop_with_a_message_naming_the_file(tmp_path: Path, setup: str, expected: str) -> None:
    root = tmp_path / "data" / "raw" / "shapes"
    params = folder_params()
    if setup != "missing-root":
        root.mkdir(parents=True)
    if setup in ("empty-class", "few-images"):
        synthetic.write_shapes_dataset(root, per_class=6)
        (root / "zebra").mkdir()
        (root / "zebra" / "notes.txt").write_text("no images yet")
    if setup == "few-images":
        for index in range(2):
            synthetic.draw_shape("circle", (30, 30), np.random.default_rng(index)).save(root / "zebra" / f"{index}.png")
    if setup.startswith("csv"):
        params = folder_params(source="csv", path="data/raw/labels.csv")
        header, row = (("file", "y"), ("a.png", "x")) if setup == "csv-columns" else (("path", "label"), ("a.png", ""))
        (tmp_path / "data" / "raw" / "labels.csv").write_text(f"{','.join(header)}\n{','.join(row)}\n")
    with pytest.raises(DataError) as error:
        keep_and_report = clean(load_raw(params, tmp_path, tmp_path / "decoded.npy"), params)
        assert keep_and_report is None
    assert expected in str(error.value)


def test_listing_skips_hidden_files_and_reports_files_outside_class_folders(tmp_path: Path) -> None:
    synthetic.write_shapes_dataset(tmp_path, per_class=2)
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "circle" / ".hidden.png").write_bytes(b"\0")
    (tmp_path / "stray.png").write_bytes(b"\0")
    listing = list_class_folders(tmp_path)
    assert len(listing.files) == 6
    assert sorted((Path(entry["file"]).name, entry["reason"]) for entry in listing.passed_over) == [
        (".DS_Store", "hidden_file"), (".hidden.png", "hidden_file"), ("stray.png", "outside_class_folder")]
