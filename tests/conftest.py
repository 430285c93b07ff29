"""Shared fixtures: the project root and a small synthetic image set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import copy_working_tree, run

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture
def stripes() -> tuple[np.ndarray, np.ndarray]:
    """A learnable 3-class problem: horizontal, vertical or no stripes, with noise (uint8, 12×12×1)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    images = rng.integers(0, 60, size=(len(labels), 12, 12, 1))
    images[labels == 0, ::3, :, 0] += 180
    images[labels == 1, :, ::3, 0] += 180
    return images.clip(0, 255).astype(np.uint8), labels


@pytest.fixture(scope="session")
def repo(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (project_root / "data" / "raw" / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("data/raw is empty: run `make data` (make test does it first)")
    copy = tmp_path_factory.mktemp("pipeline")
    copy_working_tree(project_root, copy)
    shutil.copy(project_root / "tests" / "tiny_params.yaml", copy / "params.yaml")
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny copy"]):
        run(command, copy)
    run(["dvc", "repro"], copy)
    return copy


@pytest.fixture(scope="module")
def pristine(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the working tree without the preprocess outputs and metrics, shared by a test module."""
    copy = tmp_path_factory.mktemp("pristine")
    copy_working_tree(project_root, copy)
    for output in ("data/processed", "metrics"):
        shutil.rmtree(copy / output, ignore_errors=True)
    return copy


@pytest.fixture
def project(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of ``pristine`` for one test to change."""
    copy = tmp_path / "project"
    shutil.copytree(pristine, copy)
    return copy
