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

from imgpipe.training import batches
from imgpipe.evaluation import evaluate
from imgpipe.models import builders as models
from imgpipe.training import train
from imgpipe.data.dataset import load_labels, load_rows
from imgpipe.data.split import load_split


def load_training_set(dataset_path: Path, split_path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Every image of the official training set (train and validation parts), with labels and class names."""
    indices = load_split(split_path)
    images, labels = load_rows(dataset_path, np.sort(np.concatenate([indices.train, indices.val])))
    return images, labels, load_labels(dataset_path).class_names


def fold_indices(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (train rows, held-out rows) for every fold, shuffled under ``seed``."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def train_and_score(model_name: str, settings: dict[str, Any], x_fit: np.ndarray, y_fit: np.ndarray,
                    x_held: np.ndarray, y_held: np.ndarray, num_classes: int, seed: int) -> dict[str, float]:
    """Train one model on a fold's training rows and score it on its held-out rows."""
    train.seed_everything(seed, deterministic=True)
    mean, std = batches.channel_statistics(x_fit)
    model = models.build_model(model_name, x_fit.shape[1:], num_classes, mean, std, settings["architecture"],
                               settings["dropout"], settings["l2"])
    fit_data = batches.EpochBatches(x_fit, y_fit, num_classes, settings["batch_size"], seed, settings["augment"])
    held_data = batches.make_dataset(x_held, y_held, num_classes, settings["batch_size"], seed, training=False)
    optimizer = train.make_optimizer(settings["optimizer"], settings["learning_rate"], settings["momentum"],
                                     settings["lr_schedule"], settings["warmup_epochs"], settings["epochs"],
                                     fit_data.steps, settings.get("ema_momentum", 0.0))
    train.compile_model(model, optimizer, settings["label_smoothing"], settings["jit_compile"])
    train.fit(model, fit_data, held_data, settings["epochs"], len(y_fit), 0, [])
    predicted = evaluate.predict_probabilities(model, x_held, settings["batch_size"]).argmax(axis=1)
    return evaluate.summary_metrics(y_held, predicted)


def cross_validate(model_name: str, settings: dict[str, Any], images: np.ndarray, labels: np.ndarray,
                   num_classes: int, folds: int, seed: int) -> pd.DataFrame:
    """One row of held-out metrics per fold."""
    rows = []
    for fold, (fit_rows, held_rows) in enumerate(fold_indices(labels, folds, seed)):
        scores = train_and_score(model_name, settings, images[fit_rows], labels[fit_rows], images[held_rows],
                                 labels[held_rows], num_classes, seed + fold)
        rows.append({"model": model_name, "fold": fold, **scores})
    return pd.DataFrame(rows)


def summarize(folds: pd.DataFrame) -> dict[str, Any]:
    """Mean and standard deviation of every held-out metric across folds."""
    summary: dict[str, Any] = {"enabled": True, "folds": int(len(folds))}
    for metric in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        summary[f"{metric}_mean"] = float(folds[metric].mean())
        summary[f"{metric}_std"] = float(folds[metric].std(ddof=1))
    return summary
