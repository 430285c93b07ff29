"""``imgpipe compare A B``: are two runs the same, consistent with each other, or different?

For every model the two sides' test-set predictions (``evaluation/<model>/predictions.csv``) are
paired image by image: accuracy and macro-F1 of both, the paired-bootstrap interval of their
difference, the number of images whose label differs, McNemar's exact test on the images only one
side gets right, and one verdict —

- ``identical``: every test image gets the same label;
- ``consistent``: labels differ, but not significantly (McNemar p ≥ ``report.significance_level``);
- ``different``: significantly different, or not even scored on the same test images.

Beside the verdicts: the params that differ, whether the raw data, the dataset and the split have
the same checksums in both ``dvc.lock`` files, and both machines' fingerprints.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import yaml

from imgpipe.evaluation.revisions import CompareError, Side
from imgpipe.evaluation.statistics import confusion_counts, mcnemar, metrics_from_confusion, paired_bootstrap_difference
from imgpipe.training.fingerprint import numeric_differences

VERDICTS = ("identical", "consistent", "different")
DATA_CHECKSUMS = {"raw data": ("preprocess", "deps", "data/raw"),
                  "dataset": ("preprocess", "outs", "data/processed/dataset.npz"),
                  "split": ("split", "outs", "data/split/indices.npz")}
DEFAULTS = {"significance_level": 0.05, "bootstrap_resamples": 1000, "confidence_level": 0.95, "seed": 42}


@dataclass(frozen=True)
class Predictions:
    """One side's test-set labels and predictions of one model, as class indices."""

    actual: np.ndarray
    predicted: np.ndarray
    classes: tuple[str, ...]


@dataclass
class ModelComparison:
    """Everything compared about one model."""

    model: str
    verdict: str
    reason: str
    test_images: int = 0
    accuracy: tuple[float, float] = (float("nan"), float("nan"))
    f1_macro: tuple[float, float] = (float("nan"), float("nan"))
    accuracy_difference_ci: tuple[float, float] | None = None
    f1_macro_difference_ci: tuple[float, float] | None = None
    labels_differ: int = 0
    only_first_right: int = 0
    only_second_right: int = 0
    p_value: float = 1.0
    same_probabilities: bool | None = None
    fingerprint_differences: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    """The comparison of two runs."""

    first: dict[str, str]
    second: dict[str, str]
    settings: dict[str, float]
    models: list[ModelComparison]
    params: list[tuple[str, Any, Any]]
    data: dict[str, tuple[str | None, str | None]]
    fingerprints: tuple[dict[str, Any] | None, dict[str, Any] | None]
    missing: list[str] = field(default_factory=list)
    fingerprint_model: str = ""

    @property
    def data_match(self) -> bool:
        """Raw data, dataset and split have the same recorded checksums on both sides."""
        return all(first == second and first is not None for first, second in self.data.values())

    def worst(self) -> str:
        """The worst verdict of any model ('identical' when there are none)."""
        return max((m.verdict for m in self.models), key=VERDICTS.index, default="identical")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        payload = asdict(self)
        payload["params"] = [{"key": key, "first": a, "second": b} for key, a, b in self.params]
        payload["data"] = {name: {"first": a, "second": b, "same": a == b and a is not None}
                           for name, (a, b) in self.data.items()}
        payload["fingerprints"] = {"model": self.fingerprint_model, "first": self.fingerprints[0],
                                   "second": self.fingerprints[1]}
        payload["data_match"] = self.data_match
        payload["worst_verdict"] = self.worst()
        return _finite(payload)


def _finite(value: Any) -> Any:
    """JSON-ready data: tuples as lists, NaN as None."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings → {"a.b": leaf} (lists stay whole: they are one parameter)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def _yaml(side: Side, path: str) -> dict[str, Any] | None:
    text = side.read(path)
    if text is None:
        return None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CompareError(f"{side.where(path)} is not valid YAML ({error}).") from None
    return loaded if isinstance(loaded, dict) else None


def params_differences(first: Side, second: Side) -> list[tuple[str, Any, Any]]:
    """(key, first value, second value) for every params.yaml key whose value differs."""
    before = flatten(_yaml(first, "params.yaml") or {})
    after = flatten(_yaml(second, "params.yaml") or {})
    missing = "(absent)"
    return [(key, before.get(key, missing), after.get(key, missing)) for key in sorted(set(before) | set(after))
            if before.get(key, missing) != after.get(key, missing)]


def locked_md5(lock: dict[str, Any] | None, stage: str, kind: str, path: str) -> str | None:
    """The md5 dvc.lock records for one dependency or output of a stage."""
    for entry in ((lock or {}).get("stages", {}).get(stage, {}) or {}).get(kind, []) or []:
        if entry.get("path") == path:
            return entry.get("md5")
    return None


def data_checksums(first: Side, second: Side) -> dict[str, tuple[str | None, str | None]]:
    """{what: (first md5, second md5)} for the raw data, the dataset and the split."""
    locks = (_yaml(first, "dvc.lock"), _yaml(second, "dvc.lock"))
    return {name: (locked_md5(locks[0], *where), locked_md5(locks[1], *where))
            for name, where in DATA_CHECKSUMS.items()}


def settings(side: Side) -> dict[str, float]:
    """α, bootstrap resamples, confidence level and seed from a side's params.yaml (defaults where absent)."""
    params = _yaml(side, "params.yaml") or {}
    evaluate, report = params.get("evaluate") or {}, params.get("report") or {}
    return {"significance_level": float(report.get("significance_level", DEFAULTS["significance_level"])),
            "bootstrap_resamples": int(evaluate.get("bootstrap_resamples", DEFAULTS["bootstrap_resamples"])),
            "confidence_level": float(evaluate.get("confidence_level", DEFAULTS["confidence_level"])),
            "seed": int(evaluate.get("seed", DEFAULTS["seed"]))}


def _read_csv(side: Side, path: str) -> pd.DataFrame | None:
    text = side.read(path)
    if text is None:
        return None
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise CompareError(f"{side.where(path)} is not a readable CSV ({error}).") from None


def load_predictions(side: Side, model: str) -> Predictions:
    """A side's test-set predictions of ``model``, checked against the class list and confusion matrix
    the evaluate stage wrote beside them; anything else is a CompareError naming the file."""
    path = f"evaluation/{model}/predictions.csv"
    expected = (f"Expected one 'actual,predicted' row of class names per test image, as the evaluate stage writes "
                f"it; rerun `dvc repro evaluate@{model}` or restore the file from git.")
    pairs = _read_csv(side, path)
    if pairs is None:
        raise CompareError(f"{side.where(path)} does not exist. {expected}")
    if list(pairs.columns) != ["actual", "predicted"]:
        raise CompareError(f"{side.where(path)} has the columns {list(pairs.columns)}. {expected}")
    classes = _classes(side, model)
    for column in ("actual", "predicted"):
        unknown = ~pairs[column].isin(classes)
        if unknown.any():
            row = int(np.flatnonzero(unknown.to_numpy())[0])
            raise CompareError(f"{side.where(path)}, data row {row + 1}: {column} label {pairs[column].iloc[row]!r} "
                               f"is not one of the {len(classes)} classes of evaluation/{model}/per_class.csv "
                               f"({', '.join(classes)}). {expected}")
    index = {name: i for i, name in enumerate(classes)}
    predictions = Predictions(pairs["actual"].map(index).to_numpy(np.int64),
                              pairs["predicted"].map(index).to_numpy(np.int64), classes)
    _check_confusion(side, model, predictions, expected)
    return predictions


def _classes(side: Side, model: str) -> tuple[str, ...]:
    path = f"evaluation/{model}/per_class.csv"
    table = _read_csv(side, path)
    if table is None or "class" not in table.columns or table.empty:
        raise CompareError(f"{side.where(path)} is missing or has no 'class' column: the class list the "
                           f"predictions of {model} are checked against. Rerun `dvc repro evaluate@{model}`.")
    return tuple(table["class"])


def _check_confusion(side: Side, model: str, predictions: Predictions, expected: str) -> None:
    """The predictions must add up to the confusion matrix and test-image count recorded by the same run."""
    path = f"evaluation/{model}/predictions.csv"
    metrics_text = side.read(f"metrics/evaluate/{model}.json")
    recorded = json.loads(metrics_text).get("test_images") if metrics_text else None
    if recorded is not None and recorded != len(predictions.actual):
        raise CompareError(f"{side.where(path)} has {len(predictions.actual)} rows, but the same run's "
                           f"metrics/evaluate/{model}.json records {recorded} test images. {expected}")
    table = _read_csv(side, f"evaluation/{model}/confusion_matrix.csv")
    if table is None:
        return
    try:
        recorded_counts = table.set_index(table.columns[0]).astype(np.int64).to_numpy()
    except ValueError:
        raise CompareError(f"{side.where(f'evaluation/{model}/confusion_matrix.csv')} holds non-integer counts.") from None
    counts = confusion_counts(predictions.actual, predictions.predicted, len(predictions.classes))
    if recorded_counts.shape != counts.shape or not np.array_equal(recorded_counts, counts):
        raise CompareError(f"{side.where(path)} does not match the confusion matrix the same run recorded in "
                           f"evaluation/{model}/confusion_matrix.csv: the file was changed after the run or comes "
                           f"from another run. {expected}")


def _fingerprint(side: Side, stage: str, model: str) -> dict[str, Any] | None:
    text = side.read(f"fingerprints/{stage}/{model}.json")
    return json.loads(text) if text else None


def fingerprint_differences(first: Side, second: Side, model: str) -> list[str]:
    """Numerics-relevant fingerprint fields that differ for ``model``, e.g. ``isa (train)``."""
    found: dict[str, list[str]] = {}
    for stage in ("train", "evaluate"):
        for name in numeric_differences(_fingerprint(first, stage, model), _fingerprint(second, stage, model)):
            found.setdefault(name, []).append(stage)
    return [f"{name} ({', '.join(stages)})" for name, stages in found.items()]


def verdict(first: np.ndarray, second: np.ndarray, p_value: float, alpha: float) -> str:
    """identical (same label on every image), consistent (p ≥ α) or different."""
    if np.array_equal(first, second):
        return "identical"
    return "consistent" if p_value >= alpha else "different"


def compare_predictions(model: str, first: Predictions, second: Predictions, options: dict[str, float],
                        same_data: bool) -> ModelComparison:
    """Paired statistics and the verdict of one model's two sets of predictions."""
    scores = [metrics_from_confusion(confusion_counts(p.actual, p.predicted, len(p.classes))) for p in (first, second)]
    accuracy = (float(scores[0]["accuracy"]), float(scores[1]["accuracy"]))
    f1 = (float(scores[0]["f1_macro"]), float(scores[1]["f1_macro"]))
    paired = first.classes == second.classes and np.array_equal(first.actual, second.actual)
    if not paired:
        if same_data:
            raise CompareError(f"evaluation/{model}/predictions.csv: the two sides list different true labels "
                               "although dvc.lock records the same dataset and split for both; one of the files was "
                               "edited or reordered after its run.")
        return ModelComparison(model, "different", "not scored on the same test images (the data or split differ)",
                               len(second.actual), accuracy, f1)
    classes = len(first.classes)
    intervals = paired_bootstrap_difference(first.actual, first.predicted, second.predicted, classes,
                                            int(options["bootstrap_resamples"]), int(options["seed"]),
                                            options["confidence_level"])
    test = mcnemar(first.predicted == first.actual, second.predicted == second.actual, exact=True)
    alpha = options["significance_level"]
    result = verdict(first.predicted, second.predicted, test.p_value, alpha)
    reasons = {"identical": "the same label on every test image",
               "consistent": f"McNemar p = {test.p_value:.3g} ≥ α = {alpha}",
               "different": f"McNemar p = {test.p_value:.3g} < α = {alpha}"}
    return ModelComparison(model, result, reasons[result], len(first.actual), accuracy, f1,
                           intervals["accuracy"], intervals["f1_macro"],
                           int(np.sum(first.predicted != second.predicted)), test.only_first_correct,
                           test.only_second_correct, test.p_value)


def _same_probabilities(first: Side, second: Side, model: str) -> bool | None:
    where = ("evaluate@" + model, "outs", f"data/predictions/{model}.npy")
    before, after = locked_md5(_yaml(first, "dvc.lock"), *where), locked_md5(_yaml(second, "dvc.lock"), *where)
    return None if before is None or after is None else before == after


def _describe(side: Side) -> dict[str, str]:
    return {"label": side.label, "commit": side.commit or "", "shown_as": side.short, "run_date": side.run_date()}


def compare(first: Side, second: Side, models: list[str] | None = None) -> Comparison:
    """Compare two runs model by model (every model both sides have, unless ``models`` names them)."""
    options = settings(second)
    data = data_checksums(first, second)
    same_data = all(a == b and a is not None for a, b in data.values())
    available = (first.models(), second.models())
    wanted = models or [name for name in available[0] if name in available[1]]
    missing = [f"{name}: no predictions at {side.short}" for name in (models or sorted(set(available[0]) ^ set(available[1])))
               for side, names in zip((first, second), available, strict=True) if name not in names]
    results = []
    for name in wanted:
        if name not in available[0] or name not in available[1]:
            continue
        result = compare_predictions(name, load_predictions(first, name), load_predictions(second, name), options,
                                     same_data)
        result.same_probabilities = _same_probabilities(first, second, name)
        result.fingerprint_differences = fingerprint_differences(first, second, name)
        results.append(result)
    shown = next((r.model for r in results if r.fingerprint_differences), results[0].model if results else "")
    return Comparison(_describe(first), _describe(second), options, results, params_differences(first, second), data,
                      (_fingerprint(first, "train", shown), _fingerprint(second, "train", shown)), missing, shown)


def worse_than(found: str, expected: str) -> bool:
    """Whether verdict ``found`` is worse than ``expected`` (identical < consistent < different)."""
    return VERDICTS.index(found) > VERDICTS.index(expected)
