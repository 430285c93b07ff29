"""Train one family through the train stage's recipe with some settings overridden, and score it on the test set.

The time-to-accuracy tables in docs/performance.md were measured with this. It needs `make data` and the split
stage's outputs (`dvc repro split`), and prints one JSON line: the settings, the dtype policy, fit wall time, each
epoch's wall time and validation accuracy, and test accuracy without and with each test-time augmentation mode.

Usage: python -m imgpipe.bench.train_and_score cnn '{"epochs": 12, "augment": {"crop_padding": 0}}' [--images N]

``--images N`` trains on the first N training images only (quick exploration); validation and test stay whole.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np

from imgpipe.artifacts.paths import project_paths
from imgpipe.bench.training import EpochTimer
from imgpipe.config.schema import load_params, model_train_schema
from imgpipe.data import shards
from imgpipe.data.preprocess import read_idx_images
from imgpipe.models.registry import family_names
from imgpipe.models.tta import TTA_MODES, with_test_time_augmentation
from imgpipe.training import batches, precision, train
from imgpipe.training.recipe import compiled_model

LOGGER = logging.getLogger("train_and_score")


def merged_settings(settings: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The family's params.yaml settings with ``overrides`` applied (nested dicts merged one level deep)."""
    merged = dict(settings)
    for key, value in overrides.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def train_and_score(model_name: str, overrides: dict[str, Any], images: int = 0) -> dict[str, Any]:
    """Fit as the train stage does (seeded batches, op determinism per params.yaml) and score on the test set."""
    paths = project_paths()
    params = load_params(paths.params)
    settings = model_train_schema(model_name).model_validate(
        merged_settings(getattr(params.train, model_name).model_dump(), overrides))
    train.seed_everything(params.train.seed, params.train.deterministic)
    policy = precision.set_precision(settings.precision)
    data = batches.training_input(paths.split_shards, settings.batch_size, params.train.seed,
                                  settings.augment.model_dump(), params.train.memory_budget_mb)
    train_batches = data.train
    if images and isinstance(train_batches, batches.EpochBatches):
        train_batches = batches.EpochBatches(train_batches.x[:images], train_batches.y[:images],
                                             train_batches.num_classes, train_batches.batch_size, train_batches.seed,
                                             train_batches.augment)
    mean, std = shards.training_statistics(paths.split_shards)
    model = compiled_model(model_name, settings, data.image_shape, len(data.class_names), mean, std,
                           train_batches.steps)
    timer = EpochTimer()
    started = time.perf_counter()
    result = train.fit(model, train_batches, data.val, settings.epochs, train_batches.images,
                       settings.early_stopping_patience, [timer])
    wall = time.perf_counter() - started
    x_test, y_test = read_idx_images(paths.raw_data / "t10k-images-idx3-ubyte.gz", 10_000)
    test = {}
    for mode in TTA_MODES:
        probabilities = with_test_time_augmentation(model, mode).predict(x_test.astype(np.float32), batch_size=1024,
                                                                         verbose=0)
        test[mode] = round(float(np.mean(probabilities.argmax(1) == y_test)), 4)
    return {"model": model_name, "overrides": overrides, "images": train_batches.images, "policy": policy,
            "parameters": int(model.count_params()), "fit_wall_s": round(wall, 1),
            "epoch_s": [round(s, 1) for s in timer.wall_seconds],
            "val_accuracy": [round(v, 4) for v in result.history["val_accuracy"]], "test_accuracy": test}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=family_names())
    parser.add_argument("overrides", nargs="?", default="{}", help="JSON object of train.<model> settings")
    parser.add_argument("--images", type=int, default=0, help="train on the first N images only (0 = all)")
    arguments = parser.parse_args()
    LOGGER.info(json.dumps(train_and_score(arguments.model, json.loads(arguments.overrides), arguments.images)))
