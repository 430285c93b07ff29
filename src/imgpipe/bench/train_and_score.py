"""Train one family through the train stage's recipe with some settings overridden, and score it on the test set.

The time-to-accuracy table of the performance notes was measured with this. It needs `make data` and the split
stage's outputs (`dvc repro split`), and prints one JSON line: the settings, fit wall time, validation accuracy per
epoch, and test accuracy with and without flip test-time augmentation.

Usage: python -m imgpipe.bench.train_and_score cnn '{"epochs": 12, "augment": {"crop_padding": 0}}'
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import numpy as np

from imgpipe.artifacts.paths import project_paths
from imgpipe.config.schema import load_params, model_train_schema
from imgpipe.data import shards
from imgpipe.data.preprocess import read_idx_images
from imgpipe.training import batches, train
from imgpipe.training.recipe import compiled_model

LOGGER = logging.getLogger("train_and_score")


def merged_settings(settings: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The family's params.yaml settings with ``overrides`` applied (nested dicts merged one level deep)."""
    merged = dict(settings)
    for key, value in overrides.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def train_and_score(model_name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Fit as the train stage does (seeded batches, op determinism per params.yaml) and score on the test set."""
    paths = project_paths()
    params = load_params(paths.params)
    settings = model_train_schema(model_name).model_validate(
        merged_settings(getattr(params.train, model_name).model_dump(), overrides))
    train.seed_everything(params.train.seed, params.train.deterministic)
    data = batches.training_input(paths.split_shards, settings.batch_size, params.train.seed,
                                  settings.augment.model_dump(), params.train.memory_budget_mb)
    mean, std = shards.training_statistics(paths.split_shards)
    model = compiled_model(model_name, settings, data.image_shape, len(data.class_names), mean, std, data.train.steps)
    started = time.perf_counter()
    result = train.fit(model, data.train, data.val, settings.epochs, data.train.images,
                       settings.early_stopping_patience, [])
    wall = time.perf_counter() - started
    x_test, y_test = read_idx_images(paths.raw_data / "t10k-images-idx3-ubyte.gz", 10_000)
    probabilities = model.predict(x_test.astype(np.float32), batch_size=1024, verbose=0)
    mirrored = model.predict(x_test[:, :, ::-1].astype(np.float32), batch_size=1024, verbose=0)
    return {"model": model_name, "overrides": overrides, "parameters": int(model.count_params()),
            "fit_wall_s": round(wall), "val_accuracy": [round(v, 4) for v in result.history["val_accuracy"]],
            "test_accuracy": float(np.mean(probabilities.argmax(1) == y_test)),
            "test_accuracy_flip_tta": float(np.mean((probabilities + mirrored).argmax(1) == y_test))}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    LOGGER.info(json.dumps(train_and_score(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})))
