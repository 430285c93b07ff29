"""The crossval stage: stratified k-fold cross-validation of the official training set, on request.

Off by default (``crossval.enabled: false``): the stage then only records that it was
skipped, without starting a kernel, so it costs the default run about a second. Each fold trains a fresh model with that
model's ``train`` parameters and scores it on the held-out fold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from imgpipe.config.schema import CrossvalStageParams, TrainStageParams
from imgpipe.data.dataset import image_bytes, load_labels, load_rows
from imgpipe.data.split import load_split
from imgpipe.evaluation import evaluate
from imgpipe.evaluation.statistics import HEADLINE_METRICS
from imgpipe.training import batches, distribute, train
from imgpipe.training.recipe import compiled_model


class CrossvalError(ValueError):
    """The training set does not fit the memory the parameters allow."""


def load_training_set(dataset_path: Path, split_path: Path, memory_budget_mb: float) -> tuple[np.ndarray, np.ndarray,
                                                                                              tuple[str, ...]]:
    """Every image of the official training set (train and validation parts), with labels and class names.

    Folds are drawn across the whole set, so it is held in memory; a set above ``memory_budget_mb`` is refused.
    """
    indices = load_split(split_path)
    rows = np.sort(np.concatenate([indices.train, indices.val]))
    needed_mb = len(rows) * image_bytes(dataset_path) / 2**20
    if needed_mb > memory_budget_mb:
        raise CrossvalError(f"cross-validation holds the training set in memory ({needed_mb:,.1f} MB), more than "
                            f"train.memory_budget_mb = {memory_budget_mb:g}; raise the budget in params.yaml to run it.")
    images, labels = load_rows(dataset_path, rows)
    return images, labels, load_labels(dataset_path).class_names


def fold_indices(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (train rows, held-out rows) for every fold, shuffled under ``seed``."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def train_and_score(stage: TrainStageParams, x_fit: np.ndarray, y_fit: np.ndarray, x_held: np.ndarray,
                    y_held: np.ndarray, num_classes: int, seed: int) -> dict[str, float]:
    """Train one model with the train stage's recipe on a fold's training rows; score it on its held-out rows."""
    settings = stage.model
    train.seed_everything(seed, stage.deterministic)
    distribution = distribute.make_strategy(stage.strategy)
    batch_size, learning_rate = distribute.scale_for_replicas(settings.batch_size, settings.learning_rate,
                                                              distribution.num_replicas_in_sync)
    mean, std = batches.channel_statistics(x_fit)
    fit_data = batches.EpochBatches(x_fit, y_fit, num_classes, batch_size, seed, settings.augment.model_dump())
    with distribution.scope():
        model = compiled_model(stage.model_name, settings, x_fit.shape[1:], num_classes, mean, std, fit_data.steps,
                               learning_rate)
    held_data = batches.validation_dataset(x_held, y_held, num_classes, batch_size)
    train.fit(model, fit_data, held_data, settings.epochs, len(y_fit), 0, [])
    predicted = evaluate.predict_probabilities(model, x_held, settings.batch_size).argmax(axis=1)
    return evaluate.summary_metrics(y_held, predicted, num_classes)


def cross_validate(params: CrossvalStageParams, images: np.ndarray, labels: np.ndarray,
                   num_classes: int) -> pd.DataFrame:
    """One row of held-out metrics per fold."""
    rows = []
    stage = params.fold_training()
    for fold, (fit_rows, held_rows) in enumerate(fold_indices(labels, params.folds, params.seed)):
        scores = train_and_score(stage, images[fit_rows], labels[fit_rows], images[held_rows], labels[held_rows],
                                 num_classes, params.seed + fold)
        rows.append({"model": stage.model_name, "fold": fold, **scores})
    return pd.DataFrame(rows)


def summarize(folds: pd.DataFrame) -> dict[str, Any]:
    """Mean and standard deviation of every held-out metric across folds."""
    summary: dict[str, Any] = {"enabled": True, "folds": int(len(folds))}
    for metric in HEADLINE_METRICS:
        summary[f"{metric}_mean"] = float(folds[metric].mean())
        summary[f"{metric}_std"] = float(folds[metric].std(ddof=1))
    return summary
