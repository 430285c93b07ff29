"""Median time of one training batch for a model family and architecture (naive `fit`).

The per-batch figures in the performance notes were measured with this. Needs `make data`.

Usage: python -m imgpipe.bench.step_time cnn '{"filters": [16, 64, 128, 256], "convs_per_block": 1, "dense_units": 128}'
       [--batch-size 128] [--precision float32|mixed_bfloat16|auto] [--images 6400] [--stock-keras]
Set JIT=1 to compile with XLA.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any

import keras
import numpy as np

from imgpipe.artifacts.paths import project_paths
from imgpipe.data.preprocess import read_idx_images
from imgpipe.models import builders as models
from imgpipe.models.layers import with_keras_layers
from imgpipe.training.batches import channel_statistics
from imgpipe.training.optimizers import FusedAdam
from imgpipe.training.precision import PRECISIONS, set_precision

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


def median_step_ms(model_name: str, architecture: dict[str, Any], jit_compile: bool, images: int = 6400,
                   batch_size: int = BATCH_SIZE, precision: str = "float32", stock_keras: bool = False) -> float:
    """Median milliseconds of a batch over the second of two epochs of ``images`` training images
    (with Keras's stock layers and Adam instead of the fused ones if ``stock_keras``)."""
    set_precision(precision)
    x, y = read_idx_images(project_paths().raw_data / "train-images-idx3-ubyte.gz", images)
    mean, std = channel_statistics(x)
    model = models.build_model(model_name, x.shape[1:], 10, mean, std, architecture, dropout=0.1, l2=0.0)
    model = with_keras_layers(model) if stock_keras else model
    model.compile("adam" if stock_keras else FusedAdam(), "sparse_categorical_crossentropy", jit_compile=jit_compile)
    timer = BatchTimer()
    model.fit(x.astype(np.float32), y, batch_size=batch_size, epochs=2, verbose=0, callbacks=[timer])
    return 1000 * float(np.median(timer.seconds[images // batch_size:]))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("architecture", type=json.loads, help="train.<family>.architecture as JSON")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--precision", default="float32", choices=PRECISIONS)
    parser.add_argument("--images", type=int, default=6400, help="training images per epoch (two epochs run)")
    parser.add_argument("--stock-keras", action="store_true",
                        help="Keras's stock layers and Adam instead of the fused ones (the naive baseline's)")
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments, jit = _arguments(), os.environ.get("JIT") == "1"
    milliseconds = median_step_ms(arguments.family, arguments.architecture, jit, arguments.images,
                                  arguments.batch_size, arguments.precision, arguments.stock_keras)
    LOGGER.info("%s %s %s jit_compile=%s %s layers and Adam: %.1f ms a batch of %d (%.0f images/s)", arguments.family,
                json.dumps(arguments.architecture), arguments.precision, jit,
                "Keras's" if arguments.stock_keras else "fused", milliseconds, arguments.batch_size,
                arguments.batch_size * 1000 / milliseconds)
