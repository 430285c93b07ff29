"""The report stage: gather every model's results into comparison tables and figures."""

from __future__ import annotations

import html
import importlib.metadata
import itertools
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pandas.io.formats.style import Styler

from imgpipe.artifacts.files import load_json
from imgpipe.artifacts.paths import ProjectPaths
from imgpipe.evaluation import results
from imgpipe.evaluation.statistics import HEADLINE_METRICS, mcnemar
from imgpipe.training.curves import load_curves
from imgpipe.training.fingerprint import gpu_devices

METRIC_NAMES = {"accuracy": "Accuracy", "precision_macro": "Precision (macro)", "recall_macro": "Recall (macro)",
                "f1_macro": "F1 (macro)"}
VERSIONED_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-learn", "dvc", "dvclive",
                      "papermill", "nbconvert", "seaborn", "pandas")


def comparison_table(paths: ProjectPaths, model_names: Sequence[str]) -> pd.DataFrame:
    """One row per model: test metrics with their confidence intervals and training facts, best first."""
    rows = []
    for name in model_names:
        test = load_json(paths.model_metrics("evaluate", name))
        facts = load_json(paths.model_metrics("train", name))
        row: dict[str, Any] = {"model": name}
        for key in HEADLINE_METRICS:
            row[key] = test[key]
            row[f"{key}_ci"] = (test[f"{key}_ci_low"], test[f"{key}_ci_high"])
        row.update({"ece": test["expected_calibration_error"], "confidence_level": test["confidence_level"], "parameters": facts["parameters"],
                    "epochs": facts["epochs_run"], "train_time_s": facts["wall_time_s"],
                    "images_per_s": facts["images_per_second"]})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("accuracy", ascending=False, ignore_index=True)


def headline_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """The comparison formatted for reading: each metric as 'value [low, high]' in percent, counts with
    thousands separators, units in the column names."""
    level = float(comparison["confidence_level"].iloc[0])
    table = pd.DataFrame({"Model": comparison["model"]})
    for key in HEADLINE_METRICS:
        table[f"{METRIC_NAMES[key]}, {level:.0%} CI"] = [
            f"{value:.2%}\u00a0[{low:.2%},\u00a0{high:.2%}]"
            for value, (low, high) in zip(comparison[key], comparison[f"{key}_ci"], strict=True)]
    table["Calibration error (ECE)"] = comparison["ece"].map("{:.3f}".format)
    table["Parameters"] = comparison["parameters"].map("{:,.0f}".format)
    table["Epochs"] = comparison["epochs"].map("{:,.0f}".format)
    table["Training time (s)"] = comparison["train_time_s"].map("{:,.0f}".format)
    table["Training images/s"] = comparison["images_per_s"].map("{:,.0f}".format)
    return table


def correctness(paths: ProjectPaths, model_name: str) -> np.ndarray:
    """Whether the model got each test image right, in test-set order."""
    pairs = results.load_prediction_pairs(paths.evaluation_dir(model_name))
    return (pairs["actual"] == pairs["predicted"]).to_numpy()


def mcnemar_table(paths: ProjectPaths, model_names: Sequence[str], alpha: float) -> pd.DataFrame:
    """McNemar's test for every pair of models on the same test images, with a plain verdict."""
    correct = {name: correctness(paths, name) for name in model_names}
    rows = []
    for first, second in itertools.combinations(model_names, 2):
        result = mcnemar(correct[first], correct[second])
        rows.append({"Models": f"{first} vs {second}", "Only the first right": f"{result.only_first_correct:,}",
                     "Only the second right": f"{result.only_second_correct:,}",
                     "Statistic": f"{result.statistic:.2f}", "p-value": result.p_value, "Test": result.method,
                     "verdict": verdict(first, second, result.only_first_correct, result.only_second_correct,
                                        result.p_value, alpha)})
    return pd.DataFrame(rows)


def verdict(first: str, second: str, only_first: int, only_second: int, p_value: float, alpha: float) -> str:
    """One sentence on whether two models differ significantly at level ``alpha``."""
    if p_value >= alpha:
        return f"No significant difference between {first} and {second} (p = {p_value:.3g} ≥ {alpha})."
    better, worse = (first, second) if only_first > only_second else (second, first)
    return f"{better} is significantly more accurate than {worse} (p = {p_value:.3g} < {alpha})."


def per_class_table(paths: ProjectPaths, model_name: str) -> pd.DataFrame:
    """A model's per-class precision, recall, F1 and support."""
    return results.load_per_class(paths.evaluation_dir(model_name))


def calibration_tables(paths: ProjectPaths, model_names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Each model's reliability-diagram bins."""
    return {name: results.load_calibration(paths.evaluation_dir(name)) for name in model_names}


MAP_TITLES = {"grad_cam": "Grad-CAM", "attention": "attention map"}     # other methods keep their name


def explanations(paths: ProjectPaths, model_names: Sequence[str]) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """The shared sample images, their captions, and every model's maps named '<model>: <method title>'."""
    maps: dict[str, np.ndarray] = {}
    images, captions = np.empty(0), []
    for name in model_names:
        images, captions, by_method = results.load_explanations(paths.evaluation_dir(name))
        maps.update({f"{name}: {MAP_TITLES.get(method, method)}": values for method, values in by_method.items()})
    return images, captions, maps


def key_value_table(values: dict[str, str]) -> Styler:
    """A two-column table of names and long text values, left-aligned and wrapped inside the page."""
    return pd.Series(values, name="value").to_frame().style.set_table_attributes('class="imgpipe-key-values"')


def environment() -> dict[str, str]:
    """Python, platform, accelerator and package versions of the run that made the report."""
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    gpus = [device.name for device in gpu_devices()]
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpu cores": str(os.cpu_count()), "GPUs": ", ".join(gpus) or "none", **versions}


def provenance(paths: ProjectPaths) -> dict[str, str]:
    """Git commit of the code and DVC checksum of the raw data the report was built from."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=paths.root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else "unknown"

    data = yaml.safe_load((paths.root / "data.dvc").read_text())["outs"][0]
    return {"git commit": git("rev-parse", "HEAD"), "git branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "raw data (data.dvc md5)": data["md5"], "raw data files": str(data.get("nfiles", "?"))}


def crossval_summary(paths: ProjectPaths, model_names: Sequence[str]) -> pd.DataFrame | str:
    """Cross-validation means ± standard deviations per model, or why there are none."""
    summaries = {name: load_json(paths.model_metrics("crossval", name)) for name in model_names}
    rows = {name: {"folds": summary["folds"], **{metric: f"{summary[f'{metric}_mean']:.2%} ± "
                                                         f"{summary[f'{metric}_std']:.2%}" for metric in HEADLINE_METRICS}}
            for name, summary in summaries.items() if summary.get("folds")}
    if not rows:
        return "Cross-validation was not requested (`crossval.enabled: false` in params.yaml)."
    return pd.DataFrame(rows).T.rename_axis("model")


def data_counts(paths: ProjectPaths) -> dict[str, int]:
    """Images kept by cleaning and in each part of the split."""
    cleaning = load_json(paths.stage_metrics("preprocess"))
    split = load_json(paths.stage_metrics("split"))
    return {"raw files": f"{cleaning['input_files']:,}", "dropped by cleaning": f"{cleaning['dropped_images']:,}",
            **{part.replace("_", " "): f"{count:,}" for part, count in split.items()}}


def parameters_used(paths: ProjectPaths) -> str:
    """params.yaml as the run read it."""
    return paths.params.read_text()


def training_history(paths: ProjectPaths, model_names: Sequence[str]) -> pd.DataFrame:
    """Per-epoch loss and accuracy of every model on train and validation, from the DVCLive logs."""
    return pd.concat([load_curves(paths.training_log_dir(name)).assign(model=name) for name in model_names],
                     ignore_index=True)


def confusion_tables(paths: ProjectPaths, model_names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Each model's confusion-matrix counts (rows actual, columns predicted)."""
    return {name: results.load_confusion(paths.evaluation_dir(name)) for name in model_names}


def page_links(pages: list[tuple[str, str, str]]) -> str:
    """Markdown links to the stage pages, one line per stage: 'Training: cnn · rnn · attention'."""
    lines: dict[str, list[str]] = {}
    for title, model_name, page in pages:
        lines.setdefault(title, []).append(f"[{html.escape(model_name or title.lower())}]({page})")
    return "\n".join(f"- {title}: {' · '.join(links)}" for title, links in lines.items())


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def markdown_text(text: str) -> str:
    """Text from the data or params, safe to put in Markdown: it can add no tags, links, emphasis or headings."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False)).replace("\n", " ")


def code_block(text: str, language: str = "") -> str:
    """A Markdown code block that ``text`` cannot close early (the fence is longer than any backtick run in it)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"
