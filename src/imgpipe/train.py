"""The train stage: distribution strategy, tf.data input pipeline, optimizer and schedule, a fit loop that
resumes after a crash, and saved facts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from imgpipe.dataset import load_dataset
from imgpipe.files import load_json, save_json
from imgpipe.paths import ProjectPaths
from imgpipe.split import load_split

LOGGER = logging.getLogger(__name__)

STRATEGIES = ("default", "mirrored", "multi_worker")


@dataclass(frozen=True)
class TrainingResult:
    """What a finished fit reports about itself."""

    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    wall_time_s: float
    images_per_second: float
    resumed_at_epoch: int = 1


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; optionally make TensorFlow ops deterministic."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def use_mixed_precision_on_gpu() -> str:
    """float16 compute with float32 weights when a GPU is present (Tensor Cores), float32 otherwise; the policy."""
    policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy: ``default`` (one device), ``mirrored`` (every local GPU) or
    ``multi_worker`` (the cluster that the ``TF_CONFIG`` environment variable describes).

    Create it before any other TensorFlow work: MultiWorkerMirroredStrategy must start first.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("train.strategy is multi_worker but TF_CONFIG is not set; see the README's "
                             "'Training on several machines' section.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}.")


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process's worker number: 0 for the chief (and for single-process strategies)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type in (None, "chief"):
        return 0
    return int(resolver.task_id) + (1 if "chief" in resolver.cluster_spec().as_dict() else 0)


def output_paths(paths: ProjectPaths, strategy: tf.distribute.Strategy) -> ProjectPaths:
    """Where this worker writes its model, metrics and curves: the project for the chief, a temporary
    folder for every other worker (they hold the same model; only the chief's copy is kept)."""
    index = worker_index(strategy)
    if index == 0:
        return paths
    return ProjectPaths(Path(tempfile.mkdtemp(prefix=f"imgpipe-worker-{index}-")))


def checkpoint_dir(paths: ProjectPaths, model_name: str, strategy: tf.distribute.Strategy) -> Path:
    """Where this worker backs up its training state each epoch (each worker its own folder)."""
    index = worker_index(strategy)
    folder = paths.checkpoint_dir(model_name)
    return folder if index == 0 else folder / f"worker-{index}"


def scale_for_replicas(batch_size: int, learning_rate: float, replicas: int) -> tuple[int, float]:
    """Global batch size and learning rate for ``replicas`` synchronous replicas: ``batch_size`` is per
    replica, and the rate grows linearly with the global batch (Goyal et al., 2017)."""
    return batch_size * replicas, learning_rate * replicas


def channel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images, in pixel units."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64)
    std = pixels.std(axis=0)
    return pixels.mean(axis=0).tolist(), np.where(std > 0, std, 1.0).tolist()


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


def _augmenter(augment: dict[str, Any], seed: int):
    """Label-preserving batch augmentation, a pure function of (``seed``, batch number)."""
    crop_padding, horizontal_flip = augment["crop_padding"], augment["horizontal_flip"]
    erasing = augment.get("random_erasing", 0.0)

    def augment_batch(images: tf.Tensor, labels: tf.Tensor, batch_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        seeds = tf.random.experimental.stateless_split(tf.stack([batch_seed, seed]), num=3)
        if crop_padding:
            padded = tf.pad(images, [[0, 0], [crop_padding] * 2, [crop_padding] * 2, [0, 0]])
            images = tf.image.stateless_random_crop(padded, tf.shape(images), seed=seeds[0])
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


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """In-memory data has no files to shard: multi-worker training splits it batch by batch."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def make_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int, seed: int,
                 training: bool, augment: dict[str, Any] | None = None) -> tf.data.Dataset:
    """In-memory tf.data pipeline: (shuffle) → batch → float images, one-hot labels → (augment) → prefetch.

    Shuffling and augmentation are seeded, so the same seed gives the same batches in every fresh
    process. For training that can resume mid-run, use :class:`EpochBatches` instead.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(_model_inputs(num_classes), num_parallel_calls=tf.data.AUTOTUNE,
                                            deterministic=True)
    if training and _augments(augment):
        augment_batch = _augmenter(augment, seed)
        dataset = dataset.enumerate().map(lambda step, batch: augment_batch(*batch, tf.cast(step, tf.int32)),
                                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _shard_by_data(dataset.prefetch(tf.data.AUTOTUNE))


@dataclass(frozen=True, eq=False)
class EpochBatches:
    """Training batches whose order and augmentation in epoch ``e`` are a pure function of ``(seed, e)``.

    A run resumed at epoch ``e`` therefore sees exactly the batches an uninterrupted run sees there.
    """

    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    num_classes: int
    batch_size: int
    seed: int
    augment: dict[str, Any] | None = None

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        return steps_per_epoch(len(self.labels), self.batch_size)

    def digest(self) -> str:
        """A checksum of the data and of everything that orders and augments it."""
        digest = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        digest.update(json.dumps([self.num_classes, self.batch_size, self.seed, self.augment]).encode())
        return digest.hexdigest()

    def from_epoch(self, first_epoch: int) -> tf.data.Dataset:
        """Every batch from epoch ``first_epoch`` (0-based) on, endlessly; ``fit`` takes ``steps`` per epoch."""
        images, labels, steps = tf.constant(self.images), tf.constant(self.labels), self.steps
        seed = tf.constant(self.seed, tf.int64)

        def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
            order = tf.random.experimental.stateless_shuffle(tf.range(len(self.labels)), seed=tf.stack([seed, epoch]))
            batches = tf.data.Dataset.from_tensor_slices(order).batch(self.batch_size).enumerate()
            return batches.map(lambda step, rows: (tf.gather(images, rows), tf.gather(labels, rows),
                                                   tf.cast(epoch * steps + step, tf.int32)))

        dataset = tf.data.Dataset.counter(first_epoch).flat_map(epoch_batches)
        to_inputs = _model_inputs(self.num_classes)
        if _augments(self.augment):
            augment_batch = _augmenter(self.augment, self.seed)
            prepare = lambda x, y, step: augment_batch(*to_inputs(x, y), step)  # noqa: E731
        else:
            prepare = lambda x, y, step: to_inputs(x, y)  # noqa: E731
        dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return _shard_by_data(dataset.prefetch(tf.data.AUTOTUNE))


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


class TrainingBackup(keras.callbacks.Callback):
    """Backs up the training state after every epoch and restores it on the next run.

    Like ``keras.callbacks.BackupAndRestore`` (weights, optimizer state with its step count, epoch),
    plus: every epoch's logs, so the history and the DVCLive curves of a resumed run are whole; a
    fingerprint of model, optimizer, data and epochs, so a backup from other settings is discarded, not
    used; atomic writes, so a kill mid-save leaves the previous epoch's backup intact. The backup files
    are removed when training finishes; the folder itself stays (dvc.yaml declares it).
    """

    STATE = "state.json"

    def __init__(self, directory: Path, fingerprint: str) -> None:
        super().__init__()
        self.directory = directory
        self.fingerprint = fingerprint
        self.epoch_logs: list[dict[str, float]] = []

    def restore(self, model: keras.Model) -> int:
        """Load the last backup into ``model`` if it matches; return the number of completed epochs."""
        state_file = self.directory / self.STATE
        if not state_file.is_file():
            return 0
        state = load_json(state_file)
        if state["fingerprint"] != self.fingerprint:
            LOGGER.warning("discarding the training backup in %s: it was made with other settings or data",
                           self.directory)
            self.remove()
            return 0
        with model.distribute_strategy.scope():
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            model.load_weights(self.directory / state["weights"])
            for variable, value in zip(_seed_states(model), state["seed_states"], strict=True):
                variable.assign(np.asarray(value, dtype=variable.dtype))
        self.epoch_logs = state["epoch_logs"]
        return len(self.epoch_logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_logs.append({key: float(value) for key, value in (logs or {}).items()})
        self.directory.mkdir(parents=True, exist_ok=True)
        weights = f"epoch-{epoch + 1}.weights.h5"
        partial = self.directory / f"epoch-{epoch + 1}.partial.weights.h5"
        self.model.save_weights(partial, overwrite=True)
        partial.replace(self.directory / weights)
        seed_states = [variable.numpy().tolist() for variable in _seed_states(self.model)]
        save_json({"fingerprint": self.fingerprint, "weights": weights, "epoch_logs": self.epoch_logs,
                   "seed_states": seed_states}, self.directory / self.STATE)
        self._remove_weights(keep=weights)
        LOGGER.info("backed up epoch %d in %s", epoch + 1, self.directory)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.remove()

    def remove(self) -> None:
        """Delete the backup files, leaving the folder."""
        (self.directory / self.STATE).unlink(missing_ok=True)
        self._remove_weights(keep=None)

    def _remove_weights(self, keep: str | None) -> None:
        for stale in self.directory.glob("epoch-*.h5"):
            if stale.name != keep:
                stale.unlink(missing_ok=True)


def _seed_states(model: keras.Model) -> list[keras.Variable]:
    """The random-number state of dropout and other random layers, which Keras's weight files leave out."""
    return [variable for variable in model.variables if variable.path.endswith("seed_generator_state")]


def training_fingerprint(model: keras.Model, batches: EpochBatches, epochs: int) -> str:
    """A checksum of everything that decides a training run's result."""
    settings = json.dumps([model.to_json(), keras.optimizers.serialize(model.optimizer), batches.digest(), epochs,
                           model.distribute_strategy.num_replicas_in_sync], sort_keys=True, default=str)
    return hashlib.sha256(settings.encode()).hexdigest()


def fit(model: keras.Model, train: EpochBatches | tf.data.Dataset, val: tf.data.Dataset, epochs: int,
        train_images: int, patience: int, callbacks: list[keras.callbacks.Callback],
        backup_dir: Path | None = None) -> TrainingResult:
    """Fit, optionally stopping early on validation accuracy and restoring the best weights.

    With ``EpochBatches`` and a ``backup_dir``, the state is backed up after every epoch and a killed run
    resumes after its last completed epoch, with the same result as an uninterrupted run (early
    stopping's patience count excepted: it restarts at the resumed epoch).
    """
    callbacks = list(callbacks)
    backup, first_epoch, steps = None, 0, None
    if isinstance(train, EpochBatches):
        steps = train.steps
        if backup_dir is not None:
            backup = TrainingBackup(backup_dir, training_fingerprint(model, train, epochs))
            first_epoch = backup.restore(model)
            _replay(callbacks, model, backup.epoch_logs)
        train = train.from_epoch(first_epoch)
    if first_epoch:
        LOGGER.info("resuming at epoch %d of %d from the backup in %s", first_epoch + 1, epochs, backup_dir)
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience,
                                                       restore_best_weights=True))
    started = time.perf_counter()
    with _multi_worker_fit(model):
        history = model.fit(train, validation_data=val, epochs=epochs, initial_epoch=first_epoch,
                            steps_per_epoch=steps, callbacks=callbacks + ([backup] if backup else []), verbose=2,
                            shuffle=False)
    wall_time = time.perf_counter() - started
    logs = backup.epoch_logs if backup else [dict(zip(history.history, values))
                                             for values in zip(*history.history.values())]
    return _result(logs, wall_time, train_images * (len(logs) - first_epoch), first_epoch)


@contextlib.contextmanager
def _multi_worker_fit(model: keras.Model) -> Iterator[None]:
    """Let Keras 3 ``fit`` run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Keras 3.15 fails there twice: its symbolic build averages a distributed batch with a reduce the
    collective strategy rejects, and it averages each step's scalar logs along an axis they lack. So the
    optimizer is built up front, the strategy comes from the enclosing scope instead of the model (which
    skips the symbolic build), and every step log gets a length-1 axis. Other strategies are untouched.
    """
    strategy = model.distribute_strategy
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    for name in ("train_step", "test_step"):
        step = getattr(model, name)
        setattr(model, name, lambda data, step=step: {key: tf.reshape(value, [1]) for key, value in step(data).items()})
    model._distribute_strategy = None
    try:
        with strategy.scope():
            yield
    finally:
        model._distribute_strategy = strategy
        del model.train_step, model.test_step


def _replay(callbacks: list[keras.callbacks.Callback], model: keras.Model, epoch_logs: list[dict[str, float]]) -> None:
    """Show the restored epochs to the callbacks (DVCLive), so their record starts at epoch 1."""
    for callback in callbacks:
        callback.set_model(model)
        for epoch, logs in enumerate(epoch_logs):
            callback.on_epoch_end(epoch, dict(logs))


def _result(epoch_logs: list[dict[str, float]], wall_time: float, images_trained: int,
            first_epoch: int) -> TrainingResult:
    history = {key: [float(logs[key]) for logs in epoch_logs] for key in epoch_logs[0]}
    return TrainingResult(history=history, epochs_run=len(epoch_logs),
                          best_epoch=int(np.argmax(history["val_accuracy"])) + 1, wall_time_s=wall_time,
                          images_per_second=images_trained / wall_time, resumed_at_epoch=first_epoch + 1)


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
        **params,
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
