"""Cross-validation folds and a real small cross-validation; the report's verdicts and tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imgpipe.evaluation import crossval
from imgpipe.evaluation.evaluate import confident_mistakes, metrics_with_uncertainty
from imgpipe.evaluation.report import headline_table, verdict
from imgpipe.config.schema import CrossvalStageParams
from tests.test_models_and_training import SETTINGS

CROSSVAL = CrossvalStageParams.model_validate({
    "folds": 2, "seed": 0, "epochs": 0,
    "train": {"seed": 0, "deterministic": True, "strategy": "default", "memory_budget_mb": 64, "model_name": "cnn",
              "model": SETTINGS}})


def test_folds_are_stratified_disjoint_and_cover_everything() -> None:
    labels = np.repeat(np.arange(3), 20)
    folds = crossval.fold_indices(labels, 4, seed=0)
    held = np.concatenate([rows for _, rows in folds])
    assert sorted(held.tolist()) == list(range(60))
    for fit_rows, held_rows in folds:
        assert not set(fit_rows) & set(held_rows)
        assert np.bincount(labels[held_rows]).tolist() == [5, 5, 5]


def test_a_real_two_fold_cross_validation(stripes: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = stripes
    table = crossval.cross_validate(CROSSVAL, images, labels, 3)
    assert table["fold"].tolist() == [0, 1]
    assert (table["accuracy"] > 0.6).all()                      # chance is 1/3
    summary = crossval.summarize(table)
    assert summary["folds"] == 2 and summary["enabled"] is True
    assert np.isclose(summary["accuracy_mean"], table["accuracy"].mean())
    assert np.isclose(summary["accuracy_std"], table["accuracy"].std(ddof=1))


def test_intervals_bracket_the_metrics_and_mistakes_are_ordered() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    probabilities = rng.dirichlet(np.ones(3), 300)
    metrics = metrics_with_uncertainty(probabilities, labels, resamples=200, level=0.9, calibration_bins=10, seed=1)
    for name in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"]
    assert 0 <= metrics["expected_calibration_error"] <= 1
    mistakes = confident_mistakes(probabilities, labels, 5)
    confidence = probabilities[mistakes].max(axis=1)
    assert (probabilities[mistakes].argmax(axis=1) != labels[mistakes]).all()
    assert np.all(np.diff(confidence) <= 0)


def test_verdicts_and_headline_format() -> None:
    assert verdict("cnn", "rnn", 300, 150, 1e-12, 0.05).startswith("cnn is significantly more accurate than rnn")
    assert verdict("cnn", "rnn", 10, 30, 0.001, 0.05).startswith("rnn is significantly more accurate than cnn")
    assert verdict("cnn", "rnn", 20, 22, 0.88, 0.05).startswith("No significant difference")
    comparison = pd.DataFrame({"model": ["cnn"], "confidence_level": [0.95], "ece": [0.0123],
                               "parameters": [1], "epochs": [2], "train_time_s": [3.0], "images_per_s": [4.0],
                               **{name: [0.9] for name in ("accuracy", "precision_macro", "recall_macro", "f1_macro")},
                               **{f"{name}_ci": [(0.88, 0.92)] for name in
                                  ("accuracy", "precision_macro", "recall_macro", "f1_macro")}})
    comparison.loc[0, "parameters"] = 414042
    table = headline_table(comparison)
    assert table.loc[0, "Accuracy, 95% CI"] == "90.00%\u00a0[88.00%,\u00a092.00%]"   # never wraps inside
    assert table.loc[0, "Calibration error (ECE)"] == "0.012"
    assert table.loc[0, "Parameters"] == "414,042"
    assert all("_" not in column for column in table.columns)


def test_cross_validation_refuses_a_training_set_above_the_memory_budget(project_root: Path, tmp_path: Path) -> None:
    images = np.zeros((50, 28, 28, 1), np.uint8)
    dataset = tmp_path / "dataset.npz"
    np.savez(dataset, images=images, labels=np.arange(50) % 5, origin=np.zeros(50, np.int8),
             class_names=np.array(list("abcde")))
    split = tmp_path / "indices.npz"
    np.savez(split, train=np.arange(40), val=np.arange(40, 45), test=np.arange(45, 50))
    with pytest.raises(crossval.CrossvalError, match=r"train.memory_budget_mb = 0; raise the budget"):
        crossval.load_training_set(dataset, split, memory_budget_mb=0)
    loaded, labels, names = crossval.load_training_set(dataset, split, memory_budget_mb=1)
    assert loaded.shape == (45, 28, 28, 1) and names == tuple("abcde")
