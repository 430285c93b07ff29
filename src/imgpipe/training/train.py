"""The train stage: seeding and precision, optimizer and schedule, a fit loop that resumes after a crash,
and the facts a finished run saves."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from imgpipe.training.backup import TrainingBackup, training_fingerprint
from imgpipe.training.batches import SeededBatches
from imgpipe.training.distribute import multi_worker_fit

LOGGER = logging.getLogger(__name__)


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


def make_optimizer(name: str, learning_rate: float, momentum: float, schedule: str, warmup_epochs: int,
                   epochs: int, steps_per_epoch: int, ema_momentum: float = 0.0) -> keras.optimizers.Optimizer:
    """Adam or SGD (with momentum), with a constant or warm-up + cosine-decay learning rate.

    ``ema_momentum`` > 0 keeps an exponential moving average of the weights, which replaces them when
    ``fit`` ends (validation during training sees the raw weights).
    """
    rate: float | keras.optimizers.schedules.LearningRateSchedule = learning_rate
    if schedule == "cosine":
        warmup_steps = warmup_epochs * steps_per_epoch
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=learning_rate / 10 if warmup_steps else learning_rate,
            decay_steps=max(1, (epochs - warmup_epochs) * steps_per_epoch),
            warmup_target=learning_rate if warmup_steps else None, warmup_steps=warmup_steps)
    ema = {"use_ema": True, "ema_momentum": ema_momentum} if ema_momentum > 0 else {}
    if name == "adam":
        return keras.optimizers.Adam(rate, **ema)
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=momentum, nesterov=momentum > 0, **ema)
    raise ValueError(f"unknown optimizer {name!r}; expected adam or sgd.")


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer, label_smoothing: float,
                  jit_compile: bool) -> None:
    """Compile with (label-smoothed) cross-entropy on one-hot labels and accuracy."""
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=jit_compile)


def fit(model: keras.Model, train: SeededBatches | tf.data.Dataset, val: tf.data.Dataset, epochs: int,
        train_images: int, patience: int, callbacks: list[keras.callbacks.Callback],
        backup_dir: Path | None = None) -> TrainingResult:
    """Fit, optionally stopping early on validation accuracy and restoring the best weights.

    With seeded batches (in memory or streamed) and a ``backup_dir``, the state is backed up after every epoch and a killed run
    resumes after its last completed epoch, with the same result as an uninterrupted run (early
    stopping's patience count excepted: it restarts at the resumed epoch).
    """
    callbacks = list(callbacks)
    backup, first_epoch, steps = None, 0, None
    if isinstance(train, SeededBatches):
        steps = train.steps
        if backup_dir is not None:
            backup = TrainingBackup(backup_dir, training_fingerprint(model, train, epochs))
            first_epoch = backup.restore(model)
            _replay(callbacks, model, backup.epoch_logs)
        train = train.from_epoch(first_epoch, epochs)
    if first_epoch:
        LOGGER.info("resuming at epoch %d of %d from the backup in %s", first_epoch + 1, epochs, backup_dir)
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience,
                                                       restore_best_weights=True))
    started = time.perf_counter()
    with multi_worker_fit(model):
        history = model.fit(train, validation_data=val, epochs=epochs, initial_epoch=first_epoch,
                            steps_per_epoch=steps, callbacks=callbacks + ([backup] if backup else []), verbose=2,
                            shuffle=False)
    wall_time = time.perf_counter() - started
    logs = backup.epoch_logs if backup else [dict(zip(history.history, values))
                                             for values in zip(*history.history.values())]
    return _result(logs, wall_time, train_images * (len(logs) - first_epoch), first_epoch)


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
