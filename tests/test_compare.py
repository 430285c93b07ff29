"""`imgpipe compare` and `imgpipe experiments` on real runs of the tiny DAG.

A copy of the tiny pipeline is committed; then the same stages are rerun on the same machine
(identical expected), rerun with oneDNN switched off (its fingerprint changes; the verdict is
whatever the predictions say, checked against an independent McNemar test), an experiment trains
the CNN for one epoch instead of three, and a predictions file is tampered with.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.helpers import run

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def runs(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny pipeline with its results committed."""
    copy = tmp_path_factory.mktemp("compare") / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    run(["dvc", "repro"], copy)
    run(["git", "add", "-A"], copy)
    run(["git", "commit", "-qm", "tiny run", "--allow-empty"], copy)
    return copy


def compare_json(repo: Path, *sides: str) -> dict:
    done = run(["imgpipe", "compare", *sides, "--json", "--expect", "consistent"], repo, check=False)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return json.loads(done.stdout)


def restore_committed(repo: Path) -> None:
    run(["git", "checkout", "HEAD", "--", "."], repo)
    run(["dvc", "checkout", "--force"], repo)
    assert "up to date" in run(["dvc", "status"], repo).stdout


def independent_verdict(committed: str, rerun: Path, model: str, alpha: float) -> str:
    """The verdict recomputed from the two CSVs with SciPy alone."""
    from io import StringIO

    first = pd.read_csv(StringIO(committed))
    second = pd.read_csv(rerun)
    if first["predicted"].equals(second["predicted"]):
        return "identical"
    right_first, right_second = first["actual"] == first["predicted"], second["actual"] == second["predicted"]
    b, c = int((right_first & ~right_second).sum()), int((~right_first & right_second).sum())
    p_value = stats.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
    return "consistent" if p_value >= alpha else "different"


def test_a_rerun_on_the_same_machine_is_identical(runs: Path) -> None:
    run(["dvc", "repro", "-f", "-s", "train@cnn", "evaluate@cnn"], runs)
    try:
        done = run(["imgpipe", "compare", "HEAD", "workspace", "--expect", "identical", "--html", "compare.html"], runs)
        print(done.stdout)
        assert max(len(line) for line in done.stdout.splitlines()) <= 100
        result = compare_json(runs)
        assert {m["model"]: m["verdict"] for m in result["models"]} == {"cnn": "identical", "rnn": "identical",
                                                                       "attention": "identical"}
        cnn = next(m for m in result["models"] if m["model"] == "cnn")
        assert cnn["fingerprint_differences"] == [] and cnn["same_probabilities"] is True
        assert result["data_match"] and result["params"] == []
        page = (runs / "compare.html").read_text()
        assert "identical" in page and "same fingerprint" in page
        (runs / "compare.html").unlink()
    finally:
        restore_committed(runs)


def test_a_rerun_with_onednn_off_names_the_fingerprint_and_judges_the_predictions(runs: Path) -> None:
    committed = run(["git", "show", "HEAD:evaluation/cnn/predictions.csv"], runs).stdout
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    try:
        run(["dvc", "repro", "-f", "-s", "train@cnn", "evaluate@cnn"], runs)
    finally:
        del os.environ["TF_ENABLE_ONEDNN_OPTS"]
    try:
        done = run(["imgpipe", "compare"], runs, check=False)
        print(done.stdout)
        result = compare_json(runs, "HEAD", "workspace")
        cnn = next(m for m in result["models"] if m["model"] == "cnn")
        assert "onednn_opts (train, evaluate)" in cnn["fingerprint_differences"]
        assert cnn["verdict"] == independent_verdict(committed, runs / "evaluation/cnn/predictions.csv", "cnn", 0.05)
        assert result["fingerprints"]["model"] == "cnn" and result["fingerprints"]["second"]["onednn_opts"] is False
        assert done.returncode == (1 if cnn["verdict"] == "different" else 0)
    finally:
        restore_committed(runs)


def test_an_experiment_that_trains_less_gets_its_verdict_and_a_row(runs: Path) -> None:
    run(["dvc", "exp", "run", "-S", "train.cnn.epochs=1", "-n", "one-epoch"], runs)
    try:
        done = run(["imgpipe", "compare", "HEAD", "one-epoch"], runs, check=False)
        print(done.stdout)
        result = compare_json(runs, "HEAD", "one-epoch")
        verdicts = {m["model"]: m["verdict"] for m in result["models"]}
        assert verdicts["rnn"] == verdicts["attention"] == "identical"          # not retrained
        committed = run(["git", "show", "HEAD:evaluation/cnn/predictions.csv"], runs).stdout
        assert verdicts["cnn"] == independent_verdict(committed, runs / "evaluation/cnn/predictions.csv", "cnn", 0.05)
        assert verdicts["cnn"] != "identical"
        assert [(p["key"], p["first"], p["second"]) for p in result["params"]] == [("train.cnn.epochs", 3, 1)]
        assert result["data_match"]
        listed = run(["imgpipe", "experiments"], runs).stdout
        print(listed)
        assert max(len(line) for line in listed.splitlines()) <= 100
        row = next(line for line in listed.splitlines() if line.startswith("one-epoch"))
        assert "train.cnn.epochs=1" in row and verdicts["cnn"] in row
        rows = json.loads(run(["imgpipe", "experiments", "--json"], runs).stdout)
        assert [r["name"] for r in rows] == ["baseline", "one-epoch"]
        assert rows[1]["verdicts"] == verdicts
        page = (runs / "reports/index.html").read_text()          # the experiment's report knows its baseline
        assert "Compared with the committed run" in page and "workspace differs from" in page
        assert "train.cnn.epochs" in page
    finally:
        restore_committed(runs)


def test_a_tampered_predictions_file_is_a_clear_error(runs: Path) -> None:
    path = runs / "evaluation/rnn/predictions.csv"
    lines = path.read_text().splitlines()
    try:
        path.write_text("\n".join(lines[:-3]) + "\n")
        done = run(["imgpipe", "compare"], runs, check=False)
        assert done.returncode == 2 and done.stdout == ""
        assert f"{path} has {len(lines) - 4} rows, but the same run's metrics/evaluate/rnn.json records" in done.stderr
        path.write_text("\n".join(lines[:1] + ["Sandal,Unicorn"] + lines[2:]) + "\n")
        done = run(["imgpipe", "compare"], runs, check=False)
        assert done.returncode == 2 and "predicted label 'Unicorn' is not one of the 10 classes" in done.stderr
        done = run(["imgpipe", "compare", "HEAD", "no-such-run"], runs, check=False)
        assert done.returncode == 2 and "'no-such-run' is neither 'workspace', a git revision" in done.stderr
    finally:
        path.write_text("\n".join(lines) + "\n")
    assert np.array_equal(pd.read_csv(path).shape, (len(lines) - 1, 2))
