"""The train stage: seeding and precision, optimizer and schedule, a fit loop that resumes after a crash,
and the facts a finished run saves."""

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

from imgpipe.artifacts.files import atomic_path
from imgpipe.training.backup import TrainingBackup, training_fingerprint
from imgpipe.training.batches import SeededBatches
from imgpipe.training.optimizers import FusedAdam, FusedSGD
from imgpipe.config.resources import require_memory
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


def make_optimizer(name: str, learning_rate: float, momentum: float, schedule: str, warmup_epochs: int,
                   epochs: int, steps_per_epoch: int, ema_momentum: float = 0.0) -> keras.optimizers.Optimizer:
    """Adam or SGD (with momentum), fused (``imgpipe.training.optimizers``), with a constant or warm-up + cosine-decay learning rate.

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
        return FusedAdam(rate, **ema)
    if name == "sgd":
        return FusedSGD(rate, momentum=momentum, nesterov=momentum > 0, **ema)
    raise ValueError(f"unknown optimizer {name!r}; expected adam or sgd.")


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer, label_smoothing: float,
                  jit_compile: bool) -> None:
    """Compile with (label-smoothed) cross-entropy on one-hot labels and accuracy."""
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=jit_compile)


def activation_floats(model: keras.Model) -> int:
    """Floats one image's forward pass keeps for the backward pass: every layer's output, summed."""
    total = 0
    for layer in model.layers:
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        for output in outputs:
            total += math.prod(int(side or 1) for side in output.shape[1:])
    return total


def training_memory_bytes(model: keras.Model, batch_size: int, train_images: int) -> int:
    """A rough estimate of a training step's memory: activations and their gradients for one batch (of at
    most every training image), in float32, plus the weights, their gradients and two optimizer slots."""
    batch = min(batch_size, max(train_images, 1))
    return 4 * (2 * batch * activation_floats(model) + 4 * model.count_params())


def check_batch_memory(model: keras.Model, batch_size: int, train_images: int, model_name: str) -> None:
    """Refuse a batch size whose training step cannot fit this machine's memory, before the first step."""
    require_memory(training_memory_bytes(model, batch_size, train_images),
                   f"train.{model_name}.batch_size={batch_size:,} ({min(batch_size, train_images):,} images a step)",
                   f"lower train.{model_name}.batch_size.")


def fit(model: keras.Model, train: SeededBatches, val: tf.data.Dataset, epochs: int,
        train_images: int, patience: int, callbacks: list[keras.callbacks.Callback],
        backup_dir: Path | None = None) -> TrainingResult:
    """Fit, optionally stopping early on validation accuracy and restoring the best weights.

    With a ``backup_dir``, the state is backed up after every epoch and a killed run resumes after its
    last completed epoch, with the same result as an uninterrupted run (early stopping's patience
    count excepted: it restarts at the resumed epoch).
    """
    callbacks = list(callbacks)
    backup, first_epoch = None, 0
    check_batch_memory(model, train.batch_size, train_images, model.name)
    if backup_dir is not None:
        backup = TrainingBackup(backup_dir, training_fingerprint(model, train, epochs))
        first_epoch = backup.restore(model)
        _replay(callbacks, model, backup.epoch_logs)
    if first_epoch:
        LOGGER.info("resuming at epoch %d of %d from the backup in %s", first_epoch + 1, epochs, backup_dir)
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience,
                                                       restore_best_weights=True))
    started = time.perf_counter()
    with multi_worker_fit(model):
        history = model.fit(train.from_epoch(first_epoch, epochs), validation_data=val, epochs=epochs,
                            initial_epoch=first_epoch, steps_per_epoch=train.steps,
                            callbacks=callbacks + ([backup] if backup else []), verbose=2, shuffle=False)
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
    with atomic_path(path) as partial:
        model.save(partial)
