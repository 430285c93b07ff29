"""A user's mistake, in params.yaml or in the data, stops `imgpipe run` with one clear message and writes nothing."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import yaml

from imgpipe.data import synthetic
from tests.helpers import run

OUTPUTS = ("data/processed/dataset.npz", "data/processed/cleaning_report.json", "metrics/preprocess.json")


def edit_params(project: Path, edit: callable) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    edit(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def assert_stopped_cleanly(project: Path, expected: str) -> str:
    result = run(["imgpipe", "run", "preprocess"], project, check=False)
    message = result.stdout + result.stderr
    assert result.returncode == 1, message
    assert expected in message
    assert "Traceback" not in message, "a user's mistake must not end in a traceback"
    assert not [name for name in OUTPUTS if (project / name).exists()], "a failed stage left outputs behind"
    assert not list((project / "data").rglob(".decoded-*")), "the decoding scratch folder was left behind"
    return message


def _parent_and_key(params: dict, path: str) -> tuple[dict, str]:
    *parents, key = path.split(".")
    for parent in parents:
        params = params[parent]
    return params, key


def _set(path: str, value: object) -> callable:
    def edit(params: dict) -> None:
        section, key = _parent_and_key(params, path)
        section[key] = value
    return edit


def _drop(path: str) -> callable:
    def edit(params: dict) -> None:
        section, key = _parent_and_key(params, path)
        del section[key]
    return edit


@pytest.mark.parametrize(("edit", "expected"), [
    (_set("crossval.models", ["cnn", "mlp"]), "key 'crossval.models.1' has value 'mlp'; Input should be 'cnn', 'rnn' or 'attention'"),
    (_set("train.cnn.epochs", 0), "key 'train.cnn.epochs' has value 0; Input should be greater than or equal to 1"),
    (_set("train.rnn.epochs", -3), "key 'train.rnn.epochs' has value -3"),
    (_set("split.val_fraction", 1.2), "key 'split.val_fraction' has value 1.2; Input should be less than 1"),
    (_set("split.test_fraction", 0.95), "val_fraction + test_fraction = 1.05 must stay below 1"),
    (_set("train.attention.optimizer", "rmsprop"), "key 'train.attention.optimizer' has value 'rmsprop'; Input should be 'adam' or 'sgd'"),
    (lambda p: (p["preprocess"].update(image_size=[12, 12]), p["train"]["cnn"]["architecture"].update(
        filters=[8, 16, 32, 64])), "preprocess.image_size=[12, 12]: 12×12 images are too small for the cnn model: "
                                   "its 4 pooling blocks (filters=[8, 16, 32, 64]) need at least 16 pixels per side"),
    (_set("preprocess.path", "/home/me/photos"), "path='/home/me/photos' must lie under data/raw"),
    (_set("preprocess.source", "folder"), "source='folder' needs an explicit image_size and channels"),
    (_drop("evaluate"), "key 'evaluate' is missing"),
    (_set("train.cnn.learnig_rate", 0.1), "key 'train.cnn.learnig_rate' is not a known parameter (misspelled?)"),
])
def test_a_bad_parameter_stops_the_stage_before_any_work(project: Path, edit: callable, expected: str) -> None:
    edit_params(project, edit)
    message = assert_stopped_cleanly(project, expected)
    assert "params.yaml" in message
    assert not (project / "reports" / "preprocess.ipynb").exists(), "no kernel should start for a bad parameter"


@pytest.mark.notebook
def test_an_empty_class_folder_stops_the_stage_naming_it(project: Path) -> None:
    root = project / "data" / "raw" / "shapes"
    synthetic.write_shapes_dataset(root, per_class=12)
    (root / "zebra").mkdir()
    edit_params(project, lambda p: p["preprocess"].update(source="folder", path="data/raw/shapes",
                                                          image_size=[32, 32], channels=3))
    assert_stopped_cleanly(project, f"{root / 'zebra'}: class folder 'zebra' holds no image files")


@pytest.mark.notebook
def test_a_corrupt_idx_header_stops_the_stage_naming_the_file(project: Path) -> None:
    damaged = project / "data" / "raw" / "t10k-images-idx3-ubyte.gz"
    damaged.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + bytes(16)))
    message = assert_stopped_cleanly(project, "is not an unsigned-byte IDX header")
    assert f"{damaged}: IDX magic 00000d03" in message
