"""Training input: seeded tf.data pipelines, held in memory or streamed from the split stage's shards.

Every epoch's order and augmentation are a pure function of ``(seed, epoch)``, so a run resumed at
epoch ``e`` sees exactly the batches an uninterrupted run sees there, in memory or streamed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from imgpipe.data.shards import ShardedPart, channel_sums, open_part, read_shard, statistics_from_sums

LOGGER = logging.getLogger(__name__)


def channel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images, in pixel units (exact, as the split stage's)."""
    return statistics_from_sums(images.size // images.shape[-1], *channel_sums(images))


def _erase(images: tf.Tensor, probability: float, seed: tf.Tensor) -> tf.Tensor:
    """Random erasing (Zhong et al., 2020): with ``probability``, zero one rectangle of 2–25% of each image."""
    height, width = images.shape[1], images.shape[2]
    draws = tf.random.stateless_uniform([tf.shape(images)[0], 5], seed=seed)
    area = (0.02 + 0.23 * draws[:, 0]) * height * width
    aspect = tf.exp(math.log(0.3) + draws[:, 1] * 2 * math.log(1 / 0.3))      # 0.3 … 3.3, log-uniform
    half_height = tf.minimum(tf.sqrt(area * aspect), height) / 2
    half_width = tf.minimum(tf.sqrt(area / aspect), width) / 2
    centre_row, centre_col = draws[:, 2] * height, draws[:, 3] * width
    rows = tf.range(height, dtype=tf.float32)[tf.newaxis, :, tf.newaxis] + 0.5
    cols = tf.range(width, dtype=tf.float32)[tf.newaxis, tf.newaxis, :] + 0.5
    inside = ((tf.abs(rows - centre_row[:, None, None]) <= half_height[:, None, None])
              & (tf.abs(cols - centre_col[:, None, None]) <= half_width[:, None, None])
              & (draws[:, 4] < probability)[:, None, None])
    return tf.where(inside[..., tf.newaxis], tf.zeros_like(images), images)


def _shift(images: tf.Tensor, padding: int, seed: tf.Tensor) -> tf.Tensor:
    """Random crops: pad each image by ``padding`` zero pixels and cut it back to size at an offset of its own
    (up to ``padding`` pixels each way, uniform), one offset per image, drawn from ``seed``."""
    height, width = images.shape[1], images.shape[2]
    offsets = tf.random.stateless_uniform([tf.shape(images)[0], 2], seed=seed, maxval=2 * padding + 1, dtype=tf.int32)
    padded = tf.pad(images, [[0, 0], [padding] * 2, [padding] * 2, [0, 0]])
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis, :]                   # per image: the padded rows kept
    cols = offsets[:, 1:] + tf.range(width)[tf.newaxis, :]
    return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)


def _augmenter(augment: dict[str, Any], seed: int):
    """Label-preserving batch augmentation, a pure function of (``seed``, batch number)."""
    crop_padding, horizontal_flip = augment["crop_padding"], augment["horizontal_flip"]
    erasing = augment.get("random_erasing", 0.0)

    def augment_batch(images: tf.Tensor, labels: tf.Tensor, batch_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        seeds = tf.random.experimental.stateless_split(tf.stack([batch_seed, seed]), num=3)
        if crop_padding:
            images = _shift(images, crop_padding, seeds[0])
        if horizontal_flip:
            flip = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed=seeds[1]) < 0.5
            images = tf.where(flip, tf.reverse(images, axis=[2]), images)
        if erasing:
            images = _erase(images, erasing, seeds[2])
        return images, labels

    return augment_batch


def _augments(augment: dict[str, Any] | None) -> bool:
    return bool(augment and (augment["horizontal_flip"] or augment["crop_padding"]
                             or augment.get("random_erasing", 0.0)))


def _model_inputs(num_classes: int):
    return lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes))


def _with_pipeline_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The options every batch pipeline here ends with.

    * Sharding by data: in-memory data has no files to shard, so multi-worker training splits it batch by batch.
    * No tf.data autotuning: releasing an autotuned iterator waits for the thread of its performance model,
      which sleeps on a timer of up to a minute, so ``fit`` returned up to half a minute after its last epoch
      in one run out of four. ``AUTOTUNE`` parallelism then means one call per core and prefetching sizes its
      own buffer; the batches do not change, and the epochs took as long as with autotuning.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.autotune.enabled = False
    return dataset.with_options(options)


def validation_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int) -> tf.data.Dataset:
    """In-memory evaluation batches in row order: float images, one-hot labels, prefetched."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.batch(batch_size).map(_model_inputs(num_classes), num_parallel_calls=tf.data.AUTOTUNE,
                                            deterministic=True)
    return _with_pipeline_options(dataset.prefetch(tf.data.AUTOTUNE))


class SeededBatches(ABC):
    """Training batches, epoch after epoch, whose order and augmentation depend only on (seed, epoch)."""

    num_classes: int
    batch_size: int
    seed: int
    augment: dict[str, Any] | None

    @property
    @abstractmethod
    def images(self) -> int:
        """Images in one epoch."""

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        return steps_per_epoch(self.images, self.batch_size)

    @abstractmethod
    def digest(self) -> str:
        """A checksum of the data and of everything that orders and augments it."""

    @abstractmethod
    def _epoch_batches(self, steps: int) -> Callable[[tf.Tensor], tf.data.Dataset]:
        """The function from an epoch number to that epoch's (uint8 images, labels, global step) batches."""

    def from_epoch(self, first_epoch: int, end_epoch: int | None = None) -> tf.data.Dataset:
        """Every batch from epoch ``first_epoch`` (0-based) up to ``end_epoch`` (endlessly if None); ``fit`` takes
        ``steps`` per epoch.

        Ending the dataset with the last epoch matters at the end of ``fit``: an endless one is still reading ahead
        into the next epoch (its shuffle and gathers) when ``fit`` releases it, and that release waits for the
        read-ahead, seconds to tens of seconds on a busy machine.
        """
        epochs = tf.data.Dataset.counter(first_epoch) if end_epoch is None else tf.data.Dataset.range(first_epoch,
                                                                                                     end_epoch)
        dataset = epochs.flat_map(self._epoch_batches(self.steps))
        to_inputs = _model_inputs(self.num_classes)
        if _augments(self.augment):
            augment_batch = _augmenter(self.augment, self.seed)
            prepare = lambda x, y, step: augment_batch(*to_inputs(x, y), step)  # noqa: E731
        else:
            prepare = lambda x, y, step: to_inputs(x, y)  # noqa: E731
        dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return _with_pipeline_options(dataset.prefetch(tf.data.AUTOTUNE))

    def _settings(self) -> bytes:
        return json.dumps([self.num_classes, self.batch_size, self.seed, self.augment]).encode()


@dataclass(frozen=True, eq=False)
class EpochBatches(SeededBatches):
    """Batches drawn from arrays in memory: each epoch is a fresh seeded permutation of every image."""

    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    num_classes: int
    batch_size: int
    seed: int
    augment: dict[str, Any] | None = None

    @property
    def images(self) -> int:
        return len(self.y)

    def digest(self) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(self.x).tobytes())
        digest.update(np.ascontiguousarray(self.y).tobytes())
        digest.update(self._settings())
        return digest.hexdigest()

    def _epoch_batches(self, steps: int) -> Callable[[tf.Tensor], tf.data.Dataset]:
        images, labels, seed = tf.constant(self.x), tf.constant(self.y), tf.constant(self.seed, tf.int64)

        def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
            order = tf.random.experimental.stateless_shuffle(tf.range(len(self.y)), seed=tf.stack([seed, epoch]))
            batches = tf.data.Dataset.from_tensor_slices(order).batch(self.batch_size).enumerate()
            return batches.map(lambda step, rows: (tf.gather(images, rows), tf.gather(labels, rows),
                                                   tf.cast(epoch * steps + step, tf.int32)))

        return epoch_batches


@dataclass(frozen=True, eq=False)
class StreamedEpochBatches(SeededBatches):
    """Batches streamed from shard files, for data larger than the memory budget.

    Each epoch reads the shards in a seeded order, each shard's rows in a seeded order, two shards at a
    time interleaved image by image, then shuffles every window of ``shuffle_buffer`` consecutive
    images with a seeded permutation. Every seed is derived statelessly from ``(seed, epoch)``. Memory
    holds two shards and one window, never the whole part.
    """

    part: ShardedPart
    num_classes: int
    batch_size: int
    seed: int
    augment: dict[str, Any] | None
    shuffle_buffer: int

    @property
    def images(self) -> int:
        return self.part.images

    def digest(self) -> str:
        digest = hashlib.sha256(self.part.digest().encode())
        digest.update(self._settings())
        digest.update(str(self.shuffle_buffer).encode())
        return digest.hexdigest()

    def _epoch_batches(self, steps: int) -> Callable[[tf.Tensor], tf.data.Dataset]:
        files, seed, part = _shard_files(self.part), tf.constant(self.seed, tf.int64), self.part

        def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
            epoch_seed = tf.stack([seed, epoch])
            shard_seed, window_seed = (tf.random.experimental.stateless_fold_in(epoch_seed, kind) for kind in (0, 1))
            order = tf.random.experimental.stateless_shuffle(tf.range(len(part.shards)), seed=epoch_seed)

            def shuffled_shard(number: tf.Tensor) -> tf.data.Dataset:
                images, labels = _read_shard_tensors(tf.gather(files, number), part)
                rows = _permutation(tf.shape(labels)[0], tf.random.experimental.stateless_fold_in(shard_seed, number))
                return tf.data.Dataset.from_tensor_slices((tf.gather(images, rows), tf.gather(labels, rows)))

            def shuffled_window(window: tf.Tensor, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                rows = _permutation(tf.shape(labels)[0], tf.random.experimental.stateless_fold_in(window_seed, window))
                return tf.gather(images, rows), tf.gather(labels, rows)

            rows = tf.data.Dataset.from_tensor_slices(order).interleave(
                shuffled_shard, cycle_length=min(2, len(part.shards)), block_length=1)
            windows = rows.batch(self.shuffle_buffer).enumerate().map(lambda window, batch: shuffled_window(window, *batch))
            batches = windows.unbatch().batch(self.batch_size).enumerate()
            return batches.map(lambda step, batch: (*batch, tf.cast(epoch * steps + step, tf.int32)))

        return epoch_batches


def _permutation(count: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    return tf.random.experimental.stateless_shuffle(tf.range(count), seed=seed)


def stream_part(part: ShardedPart, num_classes: int, batch_size: int) -> tf.data.Dataset:
    """A part's batches in row order, read one shard at a time (validation data larger than memory)."""
    rows = tf.data.Dataset.from_tensor_slices(_shard_files(part)).interleave(
        lambda path: tf.data.Dataset.from_tensor_slices(_read_shard_tensors(path, part)), cycle_length=1)
    dataset = rows.batch(batch_size).map(_model_inputs(num_classes), num_parallel_calls=tf.data.AUTOTUNE,
                                         deterministic=True)
    # Reading through numpy_function hides the length; stating it lets Keras know where validation ends.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps_per_epoch(part.images, batch_size)))
    return _with_pipeline_options(dataset.prefetch(tf.data.AUTOTUNE))


def _shard_files(part: ShardedPart) -> tf.Tensor:
    return tf.constant([str(shard.path) for shard in part.shards])


def _read_shard_tensors(path: tf.Tensor, part: ShardedPart) -> tuple[tf.Tensor, tf.Tensor]:
    def read(file: bytes) -> tuple[np.ndarray, np.ndarray]:
        images, labels = read_shard(Path(file.decode()))
        return images, labels.astype(np.int32)

    images, labels = tf.numpy_function(read, [path], (tf.uint8, tf.int32), stateful=False)
    return tf.ensure_shape(images, [None, *part.image_shape]), tf.ensure_shape(labels, [None])


@dataclass(frozen=True)
class TrainingInput:
    """The training batches and validation data a fit reads, and how they are held."""

    train: SeededBatches
    val: tf.data.Dataset
    class_names: tuple[str, ...]
    image_shape: tuple[int, ...]
    streamed: bool
    shuffle_buffer: int


def training_input(shards_folder: Path, batch_size: int, seed: int, augment: dict[str, Any] | None,
                   memory_budget_mb: float) -> TrainingInput:
    """Load the train and validation shards into memory if they fit ``memory_budget_mb``; otherwise stream them.

    Streaming shuffles windows of half the budget (at least one batch) and holds two open shards.
    """
    train_part, val_part = open_part(shards_folder, "train"), open_part(shards_folder, "val")
    num_classes, budget = len(train_part.class_names), memory_budget_mb * 2**20
    if train_part.nbytes + val_part.nbytes <= budget:
        (x_train, y_train), (x_val, y_val) = train_part.load(), val_part.load()
        return TrainingInput(EpochBatches(x_train, y_train, num_classes, batch_size, seed, augment),
                             validation_dataset(x_val, y_val, num_classes, batch_size),
                             train_part.class_names, train_part.image_shape, streamed=False,
                             shuffle_buffer=train_part.images)
    buffer = min(train_part.images, max(batch_size, int(budget / 2) // train_part.image_bytes))
    LOGGER.info("streaming from %d + %d shards: %.1f MB of train and validation images exceed the memory budget of "
                "%g MB; shuffle buffer %d images", len(train_part.shards), len(val_part.shards),
                (train_part.nbytes + val_part.nbytes) / 2**20, memory_budget_mb, buffer)
    return TrainingInput(StreamedEpochBatches(train_part, num_classes, batch_size, seed, augment, buffer),
                         stream_part(val_part, num_classes, batch_size), train_part.class_names,
                         train_part.image_shape, streamed=True, shuffle_buffer=buffer)


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Batches in one pass over ``num_images``."""
    return math.ceil(num_images / batch_size)
