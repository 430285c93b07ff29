"""The pieces of `imgpipe compare` on small arrays and files: statistics, verdicts, fingerprints,
the checks on a predictions file, the 100-column table and the escaped HTML."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from imgpipe.evaluation.compare import compare, load_predictions, verdict, worse_than
from imgpipe.evaluation.compare_views import render_page, render_text
from imgpipe.evaluation.revisions import CompareError, Side
from imgpipe.evaluation.statistics import mcnemar, paired_bootstrap_difference
from imgpipe.training.fingerprint import cpu_description, numeric_differences, thread_counts

CLASSES = ("cat", "dog", "bird")


def test_paired_bootstrap_interval_is_zero_for_the_same_model_and_brackets_a_shift() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 400)
    first = np.where(rng.random(400) < 0.8, labels, (labels + 1) % 3)
    same = paired_bootstrap_difference(labels, first, first, 3, 200, 0)
    assert same["accuracy"] == (0.0, 0.0) and same["f1_macro"] == (0.0, 0.0)
    better = first.copy()
    better[np.flatnonzero(first != labels)[:40]] = labels[first != labels][:40]      # 40 more right: +10 pp
    low, high = paired_bootstrap_difference(labels, first, better, 3, 500, 0)["accuracy"]
    assert 0 < low < 0.10 < high


def test_exact_mcnemar_is_the_two_sided_binomial_test_of_the_discordant_pairs() -> None:
    first = np.array([True] * 30 + [False] * 10 + [True] * 60)
    second = np.array([False] * 30 + [True] * 10 + [True] * 60)
    result = mcnemar(first, second, exact=True)
    assert (result.only_first_correct, result.only_second_correct) == (30, 10)
    assert result.method == "exact binomial"
    assert result.p_value == pytest.approx(stats.binomtest(10, 40, 0.5).pvalue)
    assert mcnemar(first, second).method.startswith("chi-square")      # the report's test stays as it was


def test_verdicts_and_their_order() -> None:
    a = np.array([0, 1, 2, 1])
    assert verdict(a, a.copy(), 1.0, 0.05) == "identical"
    assert verdict(a, np.array([0, 1, 2, 2]), 0.5, 0.05) == "consistent"
    assert verdict(a, np.array([0, 1, 2, 2]), 0.01, 0.05) == "different"
    assert worse_than("different", "consistent") and worse_than("consistent", "identical")
    assert not worse_than("identical", "consistent") and not worse_than("consistent", "consistent")


CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
cache size\t: 1024 KB
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile

processor\t: 1
model name\t: ignored
"""


def test_fingerprint_reads_cpuinfo_and_lists_the_fields_that_change_numbers() -> None:
    described = cpu_description(CPUINFO)
    assert described == {"cpu_model": "Example CPU 9000", "cpu_cache": "1024 KB",
                         "isa": ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"]}
    assert thread_counts(0, 0, {}, 4) == {"intra_op_threads": 4, "inter_op_threads": 4}
    assert thread_counts(0, 0, {"TF_NUM_INTRAOP_THREADS": "1"}, 4)["intra_op_threads"] == 1
    assert thread_counts(3, 2, {"TF_NUM_INTRAOP_THREADS": "1"}, 4) == {"intra_op_threads": 3, "inter_op_threads": 2}
    base = {**described, "intra_op_threads": 2, "onednn_opts": True, "kernel": "6.1", "python": "3.11"}
    assert numeric_differences(base, {**base, "kernel": "6.8"}) == []
    assert numeric_differences(base, {**base, "onednn_opts": False, "isa": ["avx2"]}) == ["isa", "onednn_opts"]
    assert numeric_differences(base, None) == ["fingerprint not recorded"]


def write_run(root: Path, model: str, actual: list[str], predicted: list[str]) -> None:
    """The files the evaluate stage writes for one model, consistent with each other."""
    folder = root / "evaluation" / model
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.csv").write_text("actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in zip(actual, predicted)))
    (folder / "per_class.csv").write_text("class,precision,recall,f1,support\n" + "".join(f"{c},0,0,0,0\n" for c in CLASSES))
    counts = np.zeros((3, 3), int)
    for a, p in zip(actual, predicted):
        counts[CLASSES.index(a), CLASSES.index(p)] += 1
    rows = "".join(f"{c}," + ",".join(map(str, counts[i])) + "\n" for i, c in enumerate(CLASSES))
    (folder / "confusion_matrix.csv").write_text("actual," + ",".join(CLASSES) + "\n" + rows)
    (root / "metrics" / "evaluate").mkdir(parents=True, exist_ok=True)
    (root / "metrics" / "evaluate" / f"{model}.json").write_text(json.dumps({"test_images": len(actual)}))


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Side, Side]:
    actual = ["cat", "dog", "bird"] * 20
    predicted = list(actual)
    predicted[:3] = ["dog", "bird", "cat"]
    write_run(tmp_path / "a", "m", actual, actual)
    write_run(tmp_path / "b", "m", actual, predicted)
    lock = "stages:\n  preprocess:\n    deps:\n    - path: data/raw\n      md5: r\n    outs:\n    - path: data/processed/dataset.npz\n      md5: d\n  split:\n    outs:\n    - path: data/split/indices.npz\n      md5: s\n"
    for side in ("a", "b"):
        (tmp_path / side / "dvc.lock").write_text(lock)
        (tmp_path / side / "params.yaml").write_text("report:\n  significance_level: 0.05\nevaluate:\n  bootstrap_resamples: 50\n"
                                                     f"train:\n  epochs: {3 if side == 'a' else 1}\n"
                                                     f"  stem_filters: {[32, 64] if side == 'a' else [32, 64, 128]}\n")
    return Side(tmp_path / "a", "a", None), Side(tmp_path / "b", "<b>", None)


def test_compare_two_runs_from_files(two_runs: tuple[Side, Side]) -> None:
    comparison = compare(*two_runs)
    [result] = comparison.models
    assert (result.verdict, result.labels_differ, result.only_first_right, result.only_second_right) == ("consistent", 3, 3, 0)
    assert result.p_value == pytest.approx(0.25)                  # exact: 2 × 0.5³
    assert result.accuracy == (1.0, 0.95)
    assert comparison.params == [("train.epochs", 3, 1), ("train.stem_filters", [32, 64], [32, 64, 128])]
    assert comparison.data_match
    assert result.fingerprint_differences == ["fingerprint not recorded (train, evaluate)"]
    text = render_text(comparison)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "consistent" in text and "train.epochs: 3 → 1" in text and "train.stem_filters: 32 64 → 32 64 128" in text
    page = render_page(comparison, "a vs <b>")
    assert "&lt;b&gt;" in page and "<b>" not in page                 # values are escaped
    json.dumps(comparison.to_dict())


def test_tampered_predictions_give_a_clear_error(two_runs: tuple[Side, Side]) -> None:
    first, second = two_runs
    path = second.root / "evaluation/m/predictions.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")                     # one row fewer
    with pytest.raises(CompareError, match=r"predictions.csv has 59 rows, but the same run's metrics/evaluate/m.json records 60"):
        load_predictions(second, "m")
    path.write_text("\n".join(lines[:5] + ["cat,unicorn"] + lines[6:]) + "\n")
    with pytest.raises(CompareError, match=r"data row 5: predicted label 'unicorn' is not one of the 3 classes"):
        load_predictions(second, "m")
    path.write_text("\n".join(lines[:10] + ["cat,dog" if lines[10] == "cat,cat" else "cat,cat"] + lines[11:]) + "\n")
    with pytest.raises(CompareError, match="does not match the confusion matrix the same run recorded"):
        load_predictions(second, "m")
    path.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")   # two rows swapped
    with pytest.raises(CompareError, match="list different true labels although dvc.lock records the same dataset"):
        compare(first, second)
    path.write_text("label,guess\n")
    with pytest.raises(CompareError, match=r"has the columns \['label', 'guess'\]"):
        compare(first, second)


def test_a_side_lists_its_models_in_the_reports_order(tmp_path: Path) -> None:
    for model in ("attention", "zeta", "rnn", "cnn", "alpha"):
        write_run(tmp_path, model, ["cat"], ["cat"])
    assert Side(tmp_path, "workspace", None).models() == ["cnn", "rnn", "attention", "alpha", "zeta"]
