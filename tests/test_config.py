"""The params.yaml schema accepts the project's file and names the key, value and rule of every bad one."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from imgpipe.config.schema import ParamsError, load_params, validate_params
from imgpipe.pipeline.stages import stage


@pytest.fixture
def raw_params(project_root: Path) -> dict:
    return yaml.safe_load((project_root / "params.yaml").read_text())


def test_project_params_and_tiny_params_are_valid(project_root: Path) -> None:
    for name in ("params.yaml", "tests/tiny_params.yaml"):
        params = load_params(project_root / name)
        assert params.train.cnn.epochs >= 1


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("train", "cnn", "epochs"), 0, "train.cnn.epochs' has value 0"),
        (("train", "rnn", "optimizer"), "rmsprop", "train.rnn.optimizer' has value 'rmsprop'"),
        (("split", "val_fraction"), 1.5, "split.val_fraction' has value 1.5"),
        (("train", "rnn", "architecture", "cell"), "transformer", "'lstm' or 'gru'"),
        (("train", "attention", "architecture", "heads"), 3, "divisible by heads=3"),
        (("train", "attention", "architecture", "stem_strides"), [2], "one stride from 1 to 4 for each of"),
        (("train", "attention", "architecture", "stem_strides"), [2, 2, 5], "stem_strides=[2, 2, 5]"),
        (("train", "attention", "architecture", "stem_filters"), [], "train.attention.architecture.stem_filters"),
        (("train", "rnn", "architecture", "stem_strides"), [], "one stride from 1 to 4 for each of stem_filters=[32]"),
        (("train", "rnn", "architecture", "stem_filters"), [0], "stem_filters=[0] must all be at least 1"),
        (("train", "cnn", "architecture", "convs_per_block"), [2, 2], "one count for each of the 4 blocks"),
        (("train", "cnn", "architecture", "convs_per_block"), [2, 0, 2, 1], "convs_per_block=[2, 0, 2, 1] must be"),
        (("train", "cnn", "architecture", "convs_per_block"), 5, "from 1 to 4 convolutions a block"),
    ],
)
def test_invalid_value_is_named(raw_params: dict, path: tuple, value: object, expected: str) -> None:
    broken = copy.deepcopy(raw_params)
    section = broken
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    with pytest.raises(ParamsError) as error:
        validate_params(broken, Path("params.yaml"))
    assert expected in str(error.value)
    assert str(error.value).startswith(("params.yaml: key", "params.yaml: section"))


def test_misspelled_and_missing_keys_are_named(raw_params: dict) -> None:
    broken = copy.deepcopy(raw_params)
    broken["train"]["cnn"]["learnig_rate"] = broken["train"]["cnn"].pop("learning_rate")
    with pytest.raises(ParamsError) as error:
        validate_params(broken, Path("params.yaml"))
    message = str(error.value)
    assert "train.cnn.learnig_rate' is not a known parameter" in message
    assert "train.cnn.learning_rate' is missing" in message


def test_unreadable_file_is_a_params_error(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_stage_parameters_are_exactly_the_stage_keys(project_root: Path, raw_params: dict) -> None:
    params = load_params(project_root / "params.yaml")
    train = stage("train").parameters(params, "rnn")["params"]
    assert train["model_name"] == "rnn"
    assert train["model"] == raw_params["train"]["rnn"]
    assert set(train) == {"model_name", "seed", "deterministic", "strategy", "memory_budget_mb", "model"}
    assert stage("split").parameters(params)["params"] == raw_params["split"]
    crossval = stage("crossval").parameters(params, "cnn")["params"]
    assert set(crossval) == {"folds", "seed", "epochs", "train"} and crossval["train"]["model"] == raw_params["train"]["cnn"]
    with pytest.raises(ParamsError, match="unknown model name 'mlp'"):
        stage("train").parameters(params, "mlp")


def test_a_bad_value_in_a_notebooks_params_names_the_key() -> None:
    with pytest.raises(ParamsError, match=r"key 'model.epochs' has value 0"):
        stage("train").typed({"seed": 1, "deterministic": True, "strategy": "default", "memory_budget_mb": 0,
                              "model_name": "cnn", "model": {"epochs": 0}})
