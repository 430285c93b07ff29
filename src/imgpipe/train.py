"""The train stage: tf.data input pipeline, optimizer and schedule, fit loop, and saved facts."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from imgpipe.preprocess import load_dataset
from imgpipe.split import load_split

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    """What a finished fit reports about itself."""

    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    wall_time_s: float
    images_per_second: float


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; optionally make TensorFlow ops deterministic."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def channel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images, in pixel units."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64)
    std = pixels.std(axis=0)
    return pixels.mean(axis=0).tolist(), np.where(std > 0, std, 1.0).tolist()


def _augmenter(image_shape: tuple[int, ...], horizontal_flip: bool, crop_padding: int, seed: int):
    height, width, _ = image_shape

    def augment(images: tf.Tensor, labels: tf.Tensor, batch_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        seeds = tf.random.experimental.stateless_split(tf.stack([batch_seed, seed]), num=2)
        if crop_padding:
            padded = tf.pad(images, [[0, 0], [crop_padding] * 2, [crop_padding] * 2, [0, 0]])
            images = tf.image.stateless_random_crop(padded, tf.shape(images), seed=seeds[0])
        if horizontal_flip:
            flip = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed=seeds[1]) < 0.5
            images = tf.where(flip, tf.reverse(images, axis=[2]), images)
        return images, labels

    return augment


def make_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int, seed: int,
                 training: bool, augment: dict[str, Any] | None = None) -> tf.data.Dataset:
    """In-memory tf.data pipeline: (shuffle) → batch → float images, one-hot labels → (augment) → prefetch.

    Shuffling and augmentation are stateless functions of ``seed`` and the batch number,
    so the same seed gives the same batches on every run.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes)),
                                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if training and augment and (augment["horizontal_flip"] or augment["crop_padding"]):
        augment_batch = _augmenter(images.shape[1:], augment["horizontal_flip"], augment["crop_padding"], seed)
        dataset = dataset.enumerate().map(lambda step, batch: augment_batch(*batch, tf.cast(step, tf.int32)),
                                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_optimizer(name: str, learning_rate: float, momentum: float, schedule: str, warmup_epochs: int,
                   epochs: int, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam or SGD (with momentum), with a constant or warm-up + cosine-decay learning rate."""
    rate: float | keras.optimizers.schedules.LearningRateSchedule = learning_rate
    if schedule == "cosine":
        warmup_steps = warmup_epochs * steps_per_epoch
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=learning_rate / 10 if warmup_steps else learning_rate,
            decay_steps=max(1, (epochs - warmup_epochs) * steps_per_epoch),
            warmup_target=learning_rate if warmup_steps else None, warmup_steps=warmup_steps)
    if name == "adam":
        return keras.optimizers.Adam(rate)
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=momentum, nesterov=momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}; expected adam or sgd.")


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer, label_smoothing: float,
                  jit_compile: bool) -> None:
    """Compile with (label-smoothed) cross-entropy on one-hot labels and accuracy."""
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=jit_compile)


def fit(model: keras.Model, train: tf.data.Dataset, val: tf.data.Dataset, epochs: int, train_images: int,
        patience: int, callbacks: list[keras.callbacks.Callback]) -> TrainingResult:
    """Fit, optionally stopping early on validation accuracy and restoring the best weights."""
    callbacks = list(callbacks)
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience,
                                                       restore_best_weights=True))
    started = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks, verbose=2, shuffle=False)
    wall_time = time.perf_counter() - started
    val_accuracy = history.history["val_accuracy"]
    epochs_run = len(val_accuracy)
    best_epoch = int(np.argmax(val_accuracy)) + 1
    return TrainingResult(
        history={key: [float(v) for v in values] for key, values in history.history.items()},
        epochs_run=epochs_run, best_epoch=best_epoch, wall_time_s=wall_time,
        images_per_second=train_images * epochs_run / wall_time,
    )


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Batches in one pass over ``num_images``."""
    return math.ceil(num_images / batch_size)


@dataclass(frozen=True)
class TrainingData:
    """Train and validation arrays, and what the model needs to know about them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_names: tuple[str, ...]


def load_training_data(dataset_path: Path, split_path: Path) -> TrainingData:
    """Select the train and validation rows of the cleaned dataset."""
    dataset = load_dataset(dataset_path)
    indices = load_split(split_path)
    return TrainingData(dataset.images[indices.train], dataset.labels[indices.train],
                        dataset.images[indices.val], dataset.labels[indices.val], dataset.class_names)


def training_facts(model: keras.Model, result: TrainingResult, params: dict[str, Any]) -> dict[str, Any]:
    """The JSON of facts about one training run that the report and `dvc metrics` show."""
    best = result.best_epoch - 1
    return {
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.history["val_accuracy"][best],
        "best_val_loss": result.history["val_loss"][best],
        "wall_time_s": round(result.wall_time_s, 2),
        "images_per_second": round(result.images_per_second, 1),
        "parameters": int(model.count_params()),
        "batch_size": params["batch_size"],
        "optimizer": params["optimizer"],
    }


def history_frame(result: TrainingResult, model_name: str) -> pd.DataFrame:
    """Per-epoch loss and accuracy on train and validation, in the long form the plots take."""
    history = result.history
    epochs = range(1, result.epochs_run + 1)
    return pd.concat([
        pd.DataFrame({"epoch": epochs, "loss": history[f"{prefix}loss"], "accuracy": history[f"{prefix}accuracy"],
                      "part": part, "model": model_name})
        for prefix, part in (("", "train"), ("val_", "validation"))
    ], ignore_index=True)


def save_model(model: keras.Model, path: Path) -> None:
    """Save in the native Keras format, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.keras")
    model.save(partial)
    partial.replace(path)
