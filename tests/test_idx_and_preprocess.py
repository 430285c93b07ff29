"""IDX decoding, label checks and the cleaning rules, on tiny hand-made arrays."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from imgpipe.data.idx import IdxFormatError, decode_idx, load_idx
from imgpipe.config.schema import PreprocessParams
from imgpipe.data.dataset import load_labels, load_rows
from imgpipe.data.preprocess import DataError, check_pair, clean, load_raw, save_dataset
from imgpipe.data.sources import IDX_FILES


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_idx_round_trip_through_gzip(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(load_idx(path), images)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00", "not an unsigned-byte IDX header"),
        (struct.pack(">HBB", 0, 8, 2) + struct.pack(">2I", 3, 3) + bytes(5), "holds 5 values"),
    ],
)
def test_corrupt_idx_is_named(payload: bytes, expected: str) -> None:
    with pytest.raises(IdxFormatError, match=expected) as error:
        decode_idx(payload, "labels.idx")
    assert str(error.value).startswith("labels.idx:")


def test_not_gzip_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(IdxFormatError, match="broken.gz: cannot be read as gzip"):
        load_idx(path)


def test_label_checks() -> None:
    images = np.zeros((3, 2, 2), np.uint8)
    with pytest.raises(IdxFormatError, match="one label per image"):
        check_pair(images, np.zeros(2, np.int64), 10, "pair")
    with pytest.raises(IdxFormatError, match=r"labels span 0..12; expected 0..9"):
        check_pair(images, np.array([0, 12, 3]), 10, "pair")


def write_idx_source(root: Path, train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
                     test_labels: np.ndarray) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for (images_name, labels_name), images, labels in (
            (IDX_FILES["train"], train, train_labels), (IDX_FILES["test"], test, test_labels)):
        (root / f"{images_name}.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (root / labels_name).write_bytes(idx_bytes(labels.astype(np.uint8)))  # plain files are read too


def idx_params(**overrides: object) -> PreprocessParams:
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())["preprocess"]
    return PreprocessParams(**{**params, "class_names": list("abcde"), "min_images_per_class": 1, **overrides})


def test_blank_conflicting_and_exact_duplicates_are_dropped_and_listed(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, size=(6, 4, 4), dtype=np.uint8)
    images[1] = 7                    # constant image: blank
    images[3] = images[2]            # same pixels, different label: conflict, both go
    images[5] = images[4]            # same pixels, same label: the second copy goes
    labels = np.array([0, 1, 2, 3, 4, 4])
    test = np.concatenate([rng.integers(0, 255, size=(5, 4, 4), dtype=np.uint8), images[4:5]])  # last: a copy
    write_idx_source(tmp_path / "data" / "raw", images, labels, test, np.array([0, 1, 2, 3, 4, 4]))
    raw = load_raw(idx_params(), tmp_path, tmp_path / "decoded.npy")
    keep, report = clean(raw, idx_params())
    assert keep.tolist() == [True, False, False, False, True, False] + [True] * 5 + [False]
    assert {k: v for k, v in report["dropped_by_reason"].items() if v} == {
        "blank": 1, "duplicate_with_conflicting_label": 2, "exact_duplicate": 2}
    assert [(row["file"], row["reason"]) for row in report["dropped"]] == [
        ("train-images-idx3-ubyte[1]", "blank"),
        ("train-images-idx3-ubyte[2]", "duplicate_with_conflicting_label"),
        ("train-images-idx3-ubyte[3]", "duplicate_with_conflicting_label"),
        ("train-images-idx3-ubyte[5]", "exact_duplicate"),
        ("t10k-images-idx3-ubyte[5]", "exact_duplicate")]
    assert report["kept_per_class"]["e"] == {"train": 1, "test": 1}

    kept_only_exact = clean(raw, idx_params(drop_exact_duplicates=False, drop_conflicting_duplicates=False))[0]
    assert kept_only_exact.tolist() == [True, False] + [True] * 10
    with pytest.raises(DataError, match=r"3 class\(es\) keep fewer images than preprocess.min_images_per_class = 2: 'b' \(1\), 'c' \(1\)"):
        clean(raw, idx_params(min_images_per_class=2))


def test_a_resized_rgb_idx_dataset_round_trips_through_the_saved_archive(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 255, size=(8, 6, 6), dtype=np.uint8)
    labels = np.arange(8) % 5
    write_idx_source(tmp_path / "data" / "raw", images, labels, images[:3], labels[:3])
    params = idx_params(image_size=[12, 10], channels=3, drop_exact_duplicates=False)
    raw = load_raw(params, tmp_path, tmp_path / "decoded.npy")
    keep, _ = clean(raw, params)
    save_dataset(raw, keep, tmp_path / "dataset.npz")
    dataset = load_labels(tmp_path / "dataset.npz")
    images, _ = load_rows(tmp_path / "dataset.npz", np.arange(len(dataset.labels)))
    assert images.shape == (11, 12, 10, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # gray repeated into RGB
    assert dataset.origin.tolist() == [0] * 8 + [1] * 3 and dataset.class_names == tuple("abcde")
    first = (tmp_path / "dataset.npz").read_bytes()
    save_dataset(raw, keep, tmp_path / "dataset.npz")
    assert (tmp_path / "dataset.npz").read_bytes() == first, "the same dataset must give the same bytes"


@pytest.mark.parametrize(("damage", "expected"), [
    ("labels-count", "(7,) labels for 8 images; expected one label per image"),
    ("header", "is not an unsigned-byte IDX header"),
    ("missing", "no t10k-labels-idx1-ubyte.gz or t10k-labels-idx1-ubyte"),
    ("label-range", "labels span 0..7; expected 0..4 (one per name in preprocess.class_names)"),
])
def test_broken_idx_sources_are_named(tmp_path: Path, damage: str, expected: str) -> None:
    images = np.zeros((8, 4, 4), np.uint8)
    labels = np.arange(8) % 5
    raw_dir = tmp_path / "data" / "raw"
    write_idx_source(raw_dir, images, labels, images, labels)
    if damage == "labels-count":
        (raw_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:7].astype(np.uint8)))
    elif damage == "header":
        (raw_dir / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + bytes(64)))
    elif damage == "missing":
        (raw_dir / "t10k-labels-idx1-ubyte").unlink()
    else:
        (raw_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(8, dtype=np.uint8)))
    with pytest.raises((IdxFormatError, DataError)) as error:
        load_raw(idx_params(), tmp_path, tmp_path / "decoded.npy")
    assert expected in str(error.value) and str(raw_dir) in str(error.value)
