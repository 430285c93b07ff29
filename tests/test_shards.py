"""The split stage's shards and the training input read from them: in memory when the parts fit the budget,
streamed when they do not — every image once per epoch, each epoch a pure function of (seed, epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
import pytest

from imgpipe.training import batches
from imgpipe.data import shards
from imgpipe.training import train
from imgpipe.data.dataset import load_rows

IMAGE_SHAPE = (6, 5, 3)
AUGMENT = {"horizontal_flip": True, "crop_padding": 1, "random_erasing": 0.5}


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 500-image dataset.npz whose every image carries its row number in its first two pixels."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(500, *IMAGE_SHAPE), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(500) // 256, np.arange(500) % 256
    labels = rng.integers(0, 4, size=500)
    path = tmp_path / "dataset.npz"
    np.savez_compressed(path, images=images, labels=labels, origin=np.zeros(500, np.int8),
                        class_names=np.array(["a", "b", "c", "d"]))
    return path, images, labels


def row_numbers(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 1, 0]


PARTS = {"train": np.arange(0, 500, 5).repeat(4) + np.tile(np.arange(4), 100), "val": np.arange(0, 500, 5) + 4}


def write(dataset_path: Path, folder: Path, shard_mb: float = 0.002) -> dict:
    return shards.write_shards(dataset_path, PARTS, shard_mb, folder)


def test_shards_hold_each_parts_rows_in_order_with_exact_statistics(dataset, tmp_path: Path) -> None:
    path, images, labels = dataset
    manifest = write(path, tmp_path / "shards")
    assert manifest["images_per_shard"] == 0.002 * 2**20 // 90 == 23
    for part, rows in PARTS.items():
        opened = shards.open_part(tmp_path / "shards", part)
        assert len(opened.shards) == -(-len(rows) // 23) and opened.images == len(rows)
        loaded_images, loaded_labels = opened.load()
        np.testing.assert_array_equal(loaded_images, images[rows])
        np.testing.assert_array_equal(loaded_labels, labels[rows])
    mean, std = shards.training_statistics(tmp_path / "shards")
    pixels = images[PARTS["train"]].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-12)
    assert (mean, std) == tuple(batches.channel_statistics(images[PARTS["train"]]))


def test_shards_are_byte_stable_and_a_failed_write_leaves_the_previous_ones(dataset, tmp_path: Path) -> None:
    path, _, _ = dataset
    write(path, tmp_path / "one")
    write(path, tmp_path / "two")
    for first in (tmp_path / "one").iterdir():
        assert first.read_bytes() == (tmp_path / "two" / first.name).read_bytes(), first.name
    before = {file.name: file.read_bytes() for file in (tmp_path / "one").iterdir()}
    with pytest.raises(IndexError):
        shards.write_shards(path, {"train": np.array([0, 1, 900])}, 0.002, tmp_path / "one")
    assert {file.name: file.read_bytes() for file in (tmp_path / "one").iterdir()} == before


def test_load_rows_reads_only_the_requested_rows_in_order(dataset) -> None:
    path, images, labels = dataset
    rows = np.array([3, 4, 250, 499])
    loaded_images, loaded_labels = load_rows(path, rows)
    np.testing.assert_array_equal(loaded_images, images[rows])
    np.testing.assert_array_equal(loaded_labels, labels[rows])
    with pytest.raises(ValueError, match="sorted"):
        load_rows(path, np.array([4, 3]))


def epoch_rows(epochs: batches.SeededBatches, first_epoch: int, count: int) -> list[np.ndarray]:
    """The row numbers of each of ``count`` epochs' images, batch after batch, from ``first_epoch`` on."""
    stream = iter(epochs.from_epoch(first_epoch))
    return [np.concatenate([row_numbers(next(stream)[0].numpy().astype(np.uint8)) for _ in range(epochs.steps)])
            for _ in range(count)]


def test_training_input_loads_what_fits_the_budget_and_streams_what_does_not(dataset, tmp_path: Path) -> None:
    path, images, labels = dataset
    write(path, tmp_path / "shards")
    in_memory = batches.training_input(tmp_path / "shards", 16, 0, None, memory_budget_mb=1)
    assert not in_memory.streamed and isinstance(in_memory.train, batches.EpochBatches)
    np.testing.assert_array_equal(in_memory.train.x, images[PARTS["train"]])
    streamed = batches.training_input(tmp_path / "shards", 16, 0, None, memory_budget_mb=0.01)
    assert streamed.streamed and isinstance(streamed.train, batches.StreamedEpochBatches)
    assert streamed.shuffle_buffer == int(0.005 * 2**20) // 90 == 58
    assert (streamed.class_names, streamed.image_shape) == (("a", "b", "c", "d"), IMAGE_SHAPE)
    assert int(streamed.val.cardinality()) == 7, "Keras must know where streamed validation data ends"
    val_rows = np.concatenate([row_numbers(x.numpy().astype(np.uint8)) for x, _ in streamed.val])
    np.testing.assert_array_equal(val_rows, PARTS["val"])
    val_labels = np.concatenate([y.numpy().argmax(axis=1) for _, y in streamed.val])
    np.testing.assert_array_equal(val_labels, labels[PARTS["val"]])


def test_every_batch_pipeline_runs_without_autotuning_and_shards_by_data(dataset, tmp_path: Path) -> None:
    """An autotuned iterator's release waits for its performance model's timer, which held `fit` up for up to
    half a minute after the last epoch; every pipeline the trainers read must have autotuning off."""
    path, _, _ = dataset
    write(path, tmp_path / "shards")
    for budget_mb in (1, 0.01):                                   # in memory, then streamed from the shards
        data = batches.training_input(tmp_path / "shards", 16, 0, None, memory_budget_mb=budget_mb)
        for pipeline in (data.train.from_epoch(0, 2), data.val):
            options = pipeline.options()
            assert options.autotune.enabled is False, (budget_mb, pipeline)
            assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA


def test_a_streamed_epoch_is_a_pure_function_of_seed_and_epoch(dataset, tmp_path: Path) -> None:
    path, _, labels = dataset
    write(path, tmp_path / "shards")
    part = shards.open_part(tmp_path / "shards", "train")
    train.seed_everything(3, deterministic=True)            # as the train stage does: a global seed is set
    epochs = batches.StreamedEpochBatches(part, 4, 16, 7, None, shuffle_buffer=50)
    from_start = epoch_rows(epochs, 0, 3)
    for rows in from_start:                                 # every training image exactly once per epoch
        np.testing.assert_array_equal(np.sort(rows), np.sort(PARTS["train"]))
    assert not np.array_equal(from_start[0], from_start[1]), "epochs must be shuffled differently"
    assert not np.array_equal(from_start[0], np.sort(from_start[0])), "an epoch must not be in row order"
    resumed = epoch_rows(batches.StreamedEpochBatches(part, 4, 16, 7, None, shuffle_buffer=50), 2, 1)
    np.testing.assert_array_equal(resumed[0], from_start[2])
    other_seed = epoch_rows(batches.StreamedEpochBatches(part, 4, 16, 8, None, shuffle_buffer=50), 0, 1)
    assert not np.array_equal(other_seed[0], from_start[0])
    first = next(iter(epochs.from_epoch(0)))
    np.testing.assert_array_equal(first[1].numpy().argmax(axis=1), labels[from_start[0][:16]])


def test_streamed_augmentation_is_seeded_too(dataset, tmp_path: Path) -> None:
    path, _, _ = dataset
    write(path, tmp_path / "shards")
    part = shards.open_part(tmp_path / "shards", "train")

    def first_batch(epoch: int) -> np.ndarray:
        return next(iter(batches.StreamedEpochBatches(part, 4, 16, 7, AUGMENT, 50).from_epoch(epoch)))[0].numpy()

    np.testing.assert_array_equal(first_batch(1), first_batch(1))
    assert not np.array_equal(first_batch(0), first_batch(1))


def test_the_digest_follows_the_shards_content_and_the_settings(dataset, tmp_path: Path) -> None:
    path, _, _ = dataset
    write(path, tmp_path / "shards")
    part = shards.open_part(tmp_path / "shards", "train")
    digest = batches.StreamedEpochBatches(part, 4, 16, 7, None, 50).digest()
    assert digest == batches.StreamedEpochBatches(part, 4, 16, 7, None, 50).digest()
    assert digest != batches.StreamedEpochBatches(part, 4, 16, 7, None, 51).digest()
    manifest = json.loads((tmp_path / "shards/manifest.json").read_text())
    manifest["parts"]["train"]["shards"][0]["sha256"] = "0" * 64
    (tmp_path / "shards/manifest.json").write_text(json.dumps(manifest))
    changed = shards.open_part(tmp_path / "shards", "train")
    assert batches.StreamedEpochBatches(changed, 4, 16, 7, None, 50).digest() != digest
