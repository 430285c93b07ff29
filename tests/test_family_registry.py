"""The model-family registry: one entry per family, read by config, the builder, interpretation and the report.

The last test adds a fourth family the way a user would — its module, its params.yaml section and its
name in dvc.yaml's models list, nothing else — and reproduces the tiny DAG with it.
"""

from __future__ import annotations

import math
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from imgpipe.config.schema import ParamsError, load_params, model_train_schema
from imgpipe.models.registry import all_families, family, family_names
from tests.helpers import copy_working_tree, run

MLP_MODULE = textwrap.dedent('''
    """mlp: dense layers on the flattened image (a small family added by the test suite)."""

    from __future__ import annotations

    from pydantic import Field

    from imgpipe.models.registry import Family, StrictSchema


    class MlpArchitecture(StrictSchema):
        units: list[int] = Field(min_length=1)


    def build(input_shape, num_classes, mean, std, architecture, dropout, l2):
        import keras
        from keras import layers

        from imgpipe.models.layers import classifier, normalizer, regularizer

        inputs = keras.Input(input_shape, name="image")
        x = layers.Flatten(name="flatten")(normalizer(mean, std)(inputs))
        for index, units in enumerate(architecture.units):
            x = layers.Dense(units, activation="relu", kernel_regularizer=regularizer(l2), name=f"dense{index}")(x)
            x = layers.Dropout(dropout, name=f"dropout{index}")(x)
        return keras.Model(inputs, classifier(x, num_classes), name="mlp")


    FAMILY = Family(name="mlp", rank=40, description="dense layers on the flattened image",
                    architecture=MlpArchitecture, build=build, minimum_side=lambda architecture: 1,
                    downsampling=lambda architecture: "no downsampling", interpretations=("saliency",))
''')


def test_the_registry_lists_the_three_families_in_table_order() -> None:
    assert family_names() == ("cnn", "rnn", "attention")
    assert [entry.interpretations for entry in all_families()] == [
        ("saliency", "grad_cam"), ("saliency",), ("saliency", "attention")]
    with pytest.raises(ValueError, match="unknown model name 'mlp'; expected one of cnn, rnn, attention"):
        family("mlp")


def test_each_familys_schema_and_minimum_size_come_from_its_entry(project_root: Path) -> None:
    params = load_params(project_root / "params.yaml")
    cnn = params.train.cnn.architecture
    assert type(cnn) is family("cnn").architecture
    assert family("cnn").minimum_side(cnn) == 2 ** len(cnn.filters)
    assert family("cnn").input_size_problem(cnn, 8, 8) == (
        f"8×8 images are too small for the cnn model: its {len(cnn.filters)} pooling blocks "
        f"(filters={cnn.filters}) need at least {2 ** len(cnn.filters)} pixels per side")
    rnn = params.train.rnn.architecture
    assert family("rnn").minimum_side(rnn) == math.prod(rnn.stem_strides)
    assert family("rnn").input_size_problem(rnn.model_copy(update={"stem_filters": [], "stem_strides": []}), 1, 1) is None
    with pytest.raises(Exception, match="units"):
        model_train_schema("rnn").model_validate({**params.train.rnn.model_dump(), "architecture": {"cell": "gru"}})


def test_a_section_for_an_unregistered_family_is_refused(project_root: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    raw["train"]["mlp"] = raw["train"]["cnn"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="key 'train.mlp' is not a known parameter"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.pipeline
def test_a_fourth_family_needs_its_module_its_params_and_its_name_in_dvc_yaml(
        project_root: Path, tmp_path: Path) -> None:
    if not (project_root / "data" / "raw" / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("data/raw is empty: run `make data` (make test does it first)")
    copy = tmp_path / "project"
    copy_working_tree(project_root, copy)
    # 1. its module
    (copy / "src/imgpipe/models/families/mlp.py").write_text(MLP_MODULE)
    # 2. its params.yaml section (the tiny parameter set, with an mlp section)
    params = yaml.safe_load((project_root / "tests/tiny_params.yaml").read_text())
    params["train"]["mlp"] = {**params["train"]["rnn"], "architecture": {"units": [32]}}
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # 3. its name in dvc.yaml's models list
    pipeline = (copy / "dvc.yaml").read_text()
    assert "  - models: [cnn, rnn, attention]\n" in pipeline
    (copy / "dvc.yaml").write_text(pipeline.replace("  - models: [cnn, rnn, attention]\n",
                                                    "  - models: [cnn, rnn, attention, mlp]\n"))
    shutil.rmtree(copy / "src/imgpipe.egg-info", ignore_errors=True)
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "a fourth family"]):
        run(command, copy)
    # The copy's own package (with the new module) is the one every stage imports.
    run(["dvc", "repro"], copy, extra_env={"PYTHONPATH": str(copy / "src")})
    evaluated = yaml.safe_load((copy / "metrics/evaluate/mlp.json").read_text())
    assert 0.0 <= evaluated["accuracy"] <= 1.0 and evaluated["test_images"] > 0
    assert (copy / "exported/mlp/1/saved_model.pb").is_file()
    assert (copy / "reports/train-mlp.html").is_file() and (copy / "reports/crossval-mlp.html").is_file()
    report = (copy / "reports/index.html").read_text()
    assert report.count("mlp") >= 3
    status = run(["dvc", "status"], copy, extra_env={"PYTHONPATH": str(copy / "src")})
    assert "up to date" in status.stdout
