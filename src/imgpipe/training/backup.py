"""Backing up a running fit after every epoch, so a killed train stage resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgpipe.training.batches import SeededBatches
from imgpipe.artifacts.files import atomic_path, load_json, save_json

LOGGER = logging.getLogger(__name__)


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
        with atomic_path(self.directory / weights) as partial:
            self.model.save_weights(partial, overwrite=True)
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


def training_fingerprint(model: keras.Model, batches: SeededBatches, epochs: int) -> str:
    """A checksum of everything that decides a training run's result."""
    settings = json.dumps([model.to_json(), keras.optimizers.serialize(model.optimizer), batches.digest(), epochs,
                           model.distribute_strategy.num_replicas_in_sync], sort_keys=True, default=str)
    return hashlib.sha256(settings.encode()).hexdigest()
