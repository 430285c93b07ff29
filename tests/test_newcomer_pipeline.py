"""On the tiny pipeline: quiet stage logs with one summary line each, a summary table, a notebook run
by hand that leaves DVC's outputs alone, metrics without duplicate or non-metric columns, and
`predict` naming its model version and flagging an unfamiliar photo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import papermill
import pytest
import yaml
from PIL import Image

from imgpipe.models.registry import family_names
from tests.helpers import run

pytestmark = pytest.mark.pipeline


def test_a_stage_prints_one_summary_line_and_verbose_prints_the_log_at_its_level(repo: Path) -> None:
    try:
        quiet = run(["imgpipe", "run", "split"], repo)
        lines = quiet.stderr.splitlines() + quiet.stdout.splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("split ") and "1,000 train / 1,000 validation / 1,000 test images" in lines[0]
        verbose = run(["imgpipe", "--verbose", "run", "split"], repo).stderr
        assert " INFO " in verbose and "imgpipe." in verbose
        for noise in ("papermill WARNING", "Executing Cell", "\x1b[", "oneDNN", "without encryption"):
            assert noise not in verbose, noise
    finally:
        run(["dvc", "checkout", "-f"], repo)
    assert run(["dvc", "status"], repo).stdout.strip() == "Data and pipelines are up to date."


def test_the_summary_lists_every_stage_in_pipeline_order(repo: Path) -> None:
    table = run(["imgpipe", "summary"], repo).stdout.splitlines()
    names = [line.split()[0] for line in table[2:-2]]
    expected_first = ["preprocess", "split"]
    assert names[:2] == expected_first and names[-1] == "report"
    assert {f"{stage}@{model}" for stage in ("train", "evaluate", "crossval", "export") for model in family_names()} \
        <= set(names)
    assert any("test accuracy" in line for line in table)


def test_a_notebook_run_by_hand_writes_to_scratch_and_leaves_dvc_clean(repo: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMGPIPE_STAGE", raising=False)       # as in JupyterLab: not started by `imgpipe run`
    tracked = ["metrics/evaluate/cnn.json", "evaluation/cnn/per_class.csv", "data/predictions/cnn.npy",
               "fingerprints/evaluate/cnn.json"]
    before = {name: (repo / name).read_bytes() for name in tracked}
    stamps = {name: (repo / name).stat().st_mtime_ns for name in tracked}
    parameters = {**yaml.safe_load((repo / "params.yaml").read_text())["evaluate"], "model_name": "cnn",
                  "bootstrap_resamples": 50}                  # other parameters than the pipeline's
    papermill.execute_notebook(str(repo / "notebooks/4-evaluate.ipynb"), str(tmp_path / "evaluate.ipynb"),
                               cwd=str(repo / "notebooks"), kernel_name="python3", progress_bar=False,
                               parameters=parameters)
    for name in tracked:
        assert (repo / name).read_bytes() == before[name] and (repo / name).stat().st_mtime_ns == stamps[name]
        assert (repo / "scratch" / name).is_file(), name
    written = json.loads((repo / "scratch/metrics/evaluate/cnn.json").read_text())
    assert written["accuracy_ci_low"] != json.loads(before["metrics/evaluate/cnn.json"])["accuracy_ci_low"]
    assert run(["dvc", "status"], repo).stdout.strip() == "Data and pipelines are up to date."
    assert "scratch" not in run(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout, \
        "scratch/ is ignored by git"


def test_dvc_metrics_show_has_no_duplicate_or_non_metric_columns(repo: Path) -> None:
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    files = next(iter(shown.values()))["data"]

    def leaves(value: object, prefix: str = "") -> list[tuple[str, object]]:
        if isinstance(value, dict):
            return [leaf for name, inner in value.items() for leaf in leaves(inner, f"{prefix}{name}.")]
        return [(prefix[:-1], value)]

    found = {path: leaves(entry.get("data", {})) for path, entry in files.items()}
    columns = {key for pairs in found.values() for key, _ in pairs}
    assert not [column for column in columns if " " in column], "one spelling per name (no 'test images')"
    assert not [column for column in columns if column.split(".")[-1] in ("reason", "path", "enabled", "tolerance")]
    settings = {f"{path}: {key}" for path, pairs in found.items() for key, value in pairs if isinstance(value, str)}
    assert not settings, f"text is a setting, not a metric (params.yaml and fingerprints/ hold those): {settings}"
    wide = run(["dvc", "metrics", "show"], repo).stdout
    assert "skipped" not in wide and "test images" not in wide


def test_predict_names_the_model_version_and_flags_an_unfamiliar_photo(repo: Path, tmp_path: Path) -> None:
    photo = np.full((480, 640, 3), 235, np.uint8)
    photo[80:400, 220:420] = (30, 90, 200)                  # a blue T-shirt-sized block on white
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=92)
    with np.load(repo / "data/processed/dataset.npz") as data:
        Image.fromarray(data["images"][0][..., 0]).save(tmp_path / "alike.png")
    result = run(["imgpipe", "predict", "--model", "cnn", "--json", "--top", "3",
                  str(tmp_path / "photo.jpg"), str(tmp_path / "alike.png")], repo)
    records = {Path(record["path"]).name: record for record in map(json.loads, result.stdout.splitlines())}
    assert "answering with cnn version 1" in result.stderr
    for record in records.values():
        assert record["model"] == "cnn" and record["version"] == 1 and len(record["top"]) == 3
        assert record["top"][0][0] == record["class_name"]
    notes = records["photo.jpg"]["unlike_training"]
    assert any("colour" in note for note in notes) and any("640×480" in note for note in notes)
    assert "unlike_training" not in records["alike.png"]
    text = run(["imgpipe", "predict", "--model", "cnn", str(tmp_path / "photo.jpg")], repo).stdout
    assert text.count("\t") >= 3 and "unlike the training images: a colour image" in text
