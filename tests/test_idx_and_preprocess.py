"""IDX decoding, label checks and the cleaning rules, on tiny hand-made arrays."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from imgpipe.idx import IdxFormatError, decode_idx, load_idx
from imgpipe.preprocess import Dataset, check_pair, clean, find_blank, find_conflicting_duplicates


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


def test_blank_and_conflicting_duplicates_are_found() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, size=(6, 4, 4, 1), dtype=np.uint8)
    images[1] = 7                    # constant image: blank
    images[3] = images[2]            # same pixels, different label: conflict
    images[5] = images[4]            # same pixels, same label: a harmless duplicate
    labels = np.array([0, 1, 2, 3, 4, 4])
    assert find_blank(images, 0.0).tolist() == [False, True, False, False, False, False]
    assert find_conflicting_duplicates(images, labels).tolist() == [False, False, True, True, False, False]

    dataset = Dataset(images, labels, np.zeros(6, np.int8), tuple("abcde"))
    kept, report = clean(dataset, blank_max_std=0.0, drop_conflicting_duplicates=True)
    assert kept.labels.tolist() == [0, 4, 4]
    assert report["dropped_by_reason"] == {"blank": 1, "duplicate_with_conflicting_label": 2}
    assert [(row["index"], row["reason"]) for row in report["dropped"]] == [
        (1, "blank"), (2, "duplicate_with_conflicting_label"), (3, "duplicate_with_conflicting_label")]
    assert report["exact_duplicates_kept"] == 1
    assert report["kept_per_class"]["e"] == {"train": 2, "test": 0}
