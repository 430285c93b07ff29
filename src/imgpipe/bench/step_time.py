"""Median time of one training batch of 128 for a model family and architecture (naive `fit`, float32).

The per-batch figures in the performance notes were measured with this.
Needs `make data`. Set JIT=1 to compile with XLA.

Usage: python -m imgpipe.bench.step_time cnn '{"filters": [16, 64, 128, 256], "convs_per_block": 1, "dense_units": 128}'
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import keras
import numpy as np

from imgpipe.models import builders as models
from imgpipe.training.batches import channel_statistics
from imgpipe.artifacts.paths import project_paths
from imgpipe.data.preprocess import read_idx_images

LOGGER = logging.getLogger("step_time")
BATCH_SIZE = 128


class BatchTimer(keras.callbacks.Callback):
    """Wall time of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def median_step_ms(model_name: str, architecture: dict[str, Any], jit_compile: bool, images: int = 6400) -> float:
    """Median milliseconds of a batch over the second of two epochs of ``images`` training images."""
    x, y = read_idx_images(project_paths().raw_data / "train-images-idx3-ubyte.gz", images)
    mean, std = channel_statistics(x)
    model = models.build_model(model_name, x.shape[1:], 10, mean, std, architecture, dropout=0.1, l2=0.0)
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=jit_compile)
    timer = BatchTimer()
    model.fit(x.astype(np.float32), y, batch_size=BATCH_SIZE, epochs=2, verbose=0, callbacks=[timer])
    return 1000 * float(np.median(timer.seconds[images // BATCH_SIZE:]))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    name, arch, jit = sys.argv[1], json.loads(sys.argv[2]), os.environ.get("JIT") == "1"
    milliseconds = median_step_ms(name, arch, jit)
    LOGGER.info("%s %s jit_compile=%s: %.1f ms a batch of %d (%.0f images/s)", name, json.dumps(arch), jit,
                milliseconds, BATCH_SIZE, BATCH_SIZE * 1000 / milliseconds)
