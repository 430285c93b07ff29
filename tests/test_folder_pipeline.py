"""The whole study on a generated folder of RGB images of many formats, with a broken file of every kind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from imgpipe.data import synthetic
from tests.helpers import copy_working_tree, run

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def folder_repo(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    copy = tmp_path_factory.mktemp("folder-pipeline")
    copy_working_tree(project_root, copy)
    shutil.copy(project_root / "tests" / "tiny_params.yaml", copy / "params.yaml")
    root = copy / "data" / "raw" / "shapes"
    synthetic.write_shapes_dataset(root, per_class=60, sizes=(20, 120))
    broken = synthetic.write_broken_files(root)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["preprocess"].update(source="folder", path="data/raw/shapes", image_size=[32, 32], channels=3,
                                resize="pad", max_pixels=1_000_000)
    params["split"].update(val_fraction=0.15, test_fraction=0.2, limit_per_class=0)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "folder copy"],
                    ["dvc", "repro"]):
        run(command, copy)
    return copy, broken


def test_every_broken_file_is_reported_and_every_model_trains_on_rgb(folder_repo: tuple[Path, dict]) -> None:
    repo, broken = folder_repo
    report = json.loads((repo / "data" / "processed" / "cleaning_report.json").read_text())
    reasons = {Path(entry["file"]).name: entry["reason"] for entry in report["dropped"]}
    assert {name: reasons.get(name) for name in broken} == broken
    assert report["image_shape"] == [32, 32, 3] and report["classes"] == 3
    with np.load(repo / "data" / "processed" / "dataset.npz") as dataset:
        assert dataset["images"].shape[1:] == (32, 32, 3)
        assert sorted(set(dataset["origin"].tolist())) == [0]  # no official test set in a folder
    split = json.loads((repo / "metrics" / "split.json").read_text())
    assert split["test_images"] == pytest.approx(0.2 * report["kept_images"], abs=3)
    for model_name in ("cnn", "rnn", "attention"):
        evaluation = json.loads((repo / "metrics" / "evaluate" / f"{model_name}.json").read_text())
        assert 0.0 <= evaluation["accuracy"] <= 1.0
    assert "circle" in (repo / "reports" / "index.html").read_text()
    assert run(["dvc", "status"], repo).stdout.strip().endswith("Data and pipelines are up to date.")


def test_the_exported_model_reads_an_rgb_photo_of_any_size(folder_repo: tuple[Path, dict], tmp_path: Path) -> None:
    repo, _ = folder_repo
    synthetic.draw_shape("square", (150, 90), np.random.default_rng(5)).save(tmp_path / "photo.jpg")
    result = run(["imgpipe", "predict", "--model", "cnn", "--json", str(tmp_path / "photo.jpg")], repo)
    prediction = json.loads(result.stdout.strip().splitlines()[-1])
    assert prediction["class_name"] in ("circle", "square", "triangle") and 0.0 <= prediction["probability"] <= 1.0
