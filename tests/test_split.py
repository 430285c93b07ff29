"""The split keeps the official test set, stratifies validation and is a pure function of its seed."""

from __future__ import annotations

import numpy as np

from imgpipe.data.split import split_dataset


def make_labels() -> tuple[np.ndarray, np.ndarray]:
    labels = np.tile(np.arange(4), 100)
    origin = np.r_[np.zeros(300, np.int8), np.ones(100, np.int8)]
    return labels, origin


def test_parts_are_disjoint_stratified_and_keep_the_test_set() -> None:
    labels, origin = make_labels()
    parts = split_dataset(labels, origin, val_fraction=0.2, test_fraction=0.1, seed=3)
    assert np.array_equal(parts.test, np.arange(300, 400))
    assert len(parts.val) == 60 and len(parts.train) == 240
    assert not set(parts.train) & set(parts.val)
    assert np.bincount(labels[parts.val]).tolist() == [15, 15, 15, 15]


def test_same_seed_same_split_other_seed_other_split() -> None:
    labels, origin = make_labels()
    first, again = split_dataset(labels, origin, 0.2, 0.1, 3), split_dataset(labels, origin, 0.2, 0.1, 3)
    other = split_dataset(labels, origin, 0.2, 0.1, 4)
    assert np.array_equal(first.val, again.val)
    assert not np.array_equal(first.val, other.val)


def test_limit_caps_each_class_in_each_part() -> None:
    labels, origin = make_labels()
    parts = split_dataset(labels, origin, 0.2, 0.1, 3, limit=5)
    for rows in (parts.train, parts.val, parts.test):
        assert np.bincount(labels[rows]).tolist() == [5, 5, 5, 5]
