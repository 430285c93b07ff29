"""A training run killed mid-fit resumes after its last completed epoch and ends exactly like an uninterrupted one.

Unit level: each epoch's batches depend only on (seed, epoch), and a fit interrupted in this process and
fitted again from its backup ends with the same weights. Pipeline level, in a temporary copy with tiny
params: train the CNN once without interruption; run it again and SIGKILL `dvc repro` and every process
under it (the Papermill kernel included) as soon as an epoch is backed up; then `dvc repro` once more,
which must resume at the next epoch and produce the same metrics, curves and predictions, bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import keras
import numpy as np
import psutil
import pytest
import yaml

from imgpipe.training import batches
from imgpipe.models import builders as models
from imgpipe.training import train
from tests.helpers import BIN, GIT_IDENTITY, copy_working_tree, run

EPOCHS = 6                      # enough epochs that the kill lands with some still to run
TIMINGS = {"wall_time_s", "images_per_second"}


AUGMENT = {"horizontal_flip": True, "crop_padding": 2}
CNN = {"filters": [8, 16], "convs_per_block": 1, "dense_units": 16}


def batches_of(dataset, count: int) -> list[np.ndarray]:
    return [images.numpy() for images, _ in dataset.take(count)]


def test_each_epoch_is_a_pure_function_of_seed_and_epoch(stripes: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = stripes
    epochs = batches.EpochBatches(images, labels, 3, 16, 5, AUGMENT)
    from_start = batches_of(epochs.from_epoch(0), 3 * epochs.steps)
    from_epoch_2 = batches_of(epochs.from_epoch(2), epochs.steps)
    for got, expected in zip(from_epoch_2, from_start[2 * epochs.steps:], strict=True):
        np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(from_start[0], from_start[epochs.steps]), "epochs must differ from each other"
    other_seed = batches_of(batches.EpochBatches(images, labels, 3, 16, 6, AUGMENT).from_epoch(0), 1)
    assert not np.array_equal(other_seed[0], from_start[0])


class Interrupt(keras.callbacks.Callback):
    """Stops the fit with an exception as an epoch begins, as a crash would."""

    def __init__(self, at_epoch: int) -> None:
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.at_epoch:
            raise KeyboardInterrupt(f"interrupted at epoch {epoch + 1}")


def fit_cnn(images: np.ndarray, labels: np.ndarray, backup: Path, callbacks: list) -> tuple[keras.Model, train.TrainingResult]:
    """A fresh, seeded CNN (dropout on, cosine schedule, augmentation) fitted 4 epochs with a backup folder."""
    keras.backend.clear_session()                      # same layer names as the first model
    train.seed_everything(0, deterministic=True)
    mean, std = batches.channel_statistics(images)
    model = models.build_model("cnn", images.shape[1:], 3, mean, std, CNN, 0.3, 1e-4)
    epochs = batches.EpochBatches(images, labels, 3, 16, 0, AUGMENT)
    train.compile_model(model, train.make_optimizer("adam", 0.01, 0.9, "cosine", 1, 4, epochs.steps), 0.0, False)
    val = batches.validation_dataset(images, labels, 3, 64)
    return model, train.fit(model, epochs, val, 4, len(labels), 0, callbacks, backup)


def test_an_interrupted_fit_resumes_to_the_same_weights(stripes: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    images, labels = stripes
    whole_model, whole = fit_cnn(images, labels, tmp_path / "whole", [])
    assert list((tmp_path / "whole").iterdir()) == [], "a finished fit removes its backup"
    with pytest.raises(KeyboardInterrupt):
        fit_cnn(images, labels, tmp_path / "interrupted", [Interrupt(at_epoch=2)])
    assert len(json.loads((tmp_path / "interrupted/state.json").read_text())["epoch_logs"]) == 2
    model, resumed = fit_cnn(images, labels, tmp_path / "interrupted", [])
    assert resumed.resumed_at_epoch == 3 and resumed.epochs_run == 4
    assert resumed.history == whole.history
    assert int(model.optimizer.iterations) == int(whole_model.optimizer.iterations)
    for got, expected in zip(model.get_weights(), whole_model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.fixture(scope="session")
def split_copy(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-params copy of the project with the preprocess and split stages run, and the CNN at EPOCHS epochs."""
    copy = tmp_path_factory.mktemp("resume")
    copy_working_tree(project_root, copy)
    params = yaml.safe_load((project_root / "tests" / "tiny_params.yaml").read_text())
    params["train"]["cnn"]["epochs"] = EPOCHS
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny copy"]):
        run(command, copy)
    run(["dvc", "repro", "split"], copy)
    return copy


def train_outputs(repo: Path) -> dict[str, object]:
    """What the train stage leaves: facts (timings aside), DVCLive curves (timestamps aside), predictions."""
    facts = json.loads((repo / "metrics/train/cnn.json").read_text())
    curves = {}
    for tsv in sorted((repo / "dvclive/train/cnn/plots/metrics").rglob("*.tsv")):
        rows = [line.split("\t") for line in tsv.read_text().splitlines()]
        curves[str(tsv.relative_to(repo))] = [row[1:] for row in rows]      # drop the timestamp column
    with np.load(repo / "data/processed/dataset.npz") as dataset:
        images = dataset["images"][:200].astype(np.float32)
    predictions = keras.saving.load_model(repo / "models/cnn.keras").predict(images, verbose=0)
    return {"facts": {key: value for key, value in facts.items() if key not in TIMINGS}, "curves": curves,
            "predictions": predictions}


def kill_after_first_backup(repo: Path, state: Path, timeout_s: float = 600) -> int:
    """Start a forced `dvc repro train@cnn`, SIGKILL it and all its descendants once an epoch is backed up;
    return the number of epochs the backup holds."""
    env = {**os.environ, **GIT_IDENTITY, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("IMGPIPE_ROOT", None)
    process = subprocess.Popen(["dvc", "repro", "--force", "train@cnn"], cwd=repo, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    try:
        while not state.is_file():
            assert process.poll() is None, "the run ended before backing up any epoch"
            assert time.monotonic() < deadline, "no epoch was backed up in time"
            time.sleep(0.02)
    finally:
        family = [process.pid] + [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
        for pid in family:                         # the kernel runs in its own session: kill it by id too
            with_ignored_exit(lambda pid=pid: os.kill(pid, signal.SIGKILL))
        with_ignored_exit(lambda: os.killpg(process.pid, signal.SIGKILL))
        process.wait()
        for pid in family:
            with_ignored_exit(lambda pid=pid: psutil.Process(pid).wait(timeout=30))
    return len(json.loads(state.read_text())["epoch_logs"])


def with_ignored_exit(action) -> None:
    """Run ``action``, ignoring that its process has already exited."""
    try:
        action()
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass


@pytest.mark.pipeline
def test_a_killed_training_resumes_and_ends_like_an_uninterrupted_one(split_copy: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGPIPE_VERBOSE", "1")          # the full kernel log: the test reads the epoch lines
    repo = split_copy
    state = repo / "checkpoints/cnn/state.json"
    run(["dvc", "repro", "train@cnn"], repo)
    assert not state.exists(), "a finished fit removes its backup"
    uninterrupted = train_outputs(repo)
    previous = {output: (repo / output).read_bytes() for output in ("models/cnn.keras", "metrics/train/cnn.json")}

    backed_up = kill_after_first_backup(repo, state)
    assert 1 <= backed_up < EPOCHS, f"the kill came after {backed_up} of {EPOCHS} epochs"
    print(f"killed after epoch {backed_up} of {EPOCHS} was backed up")
    for output, content in previous.items():       # outputs persist; a killed run never half-writes one
        assert (repo / output).read_bytes() == content, f"a killed run changed {output}"
    assert json.loads(run(["dvc", "status", "--json", "train@cnn"], repo).stdout), "DVC must see the stage as stale"

    resumed = run(["dvc", "repro", "train@cnn"], repo)
    log = resumed.stdout + resumed.stderr
    assert f"resuming at epoch {backed_up + 1} of {EPOCHS}" in log
    assert f"Epoch {backed_up + 1}/{EPOCHS}" in log and f"Epoch {backed_up}/{EPOCHS}" not in log
    assert not state.exists()
    again = train_outputs(repo)
    assert again["facts"] == uninterrupted["facts"]
    assert again["curves"] == uninterrupted["curves"]
    np.testing.assert_array_equal(again["predictions"], uninterrupted["predictions"])
    assert run(["dvc", "status", "train@cnn"], repo).stdout.strip() == "Data and pipelines are up to date."


@pytest.mark.pipeline
def test_a_backup_from_other_settings_is_discarded(split_copy: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGPIPE_VERBOSE", "1")
    repo = tmp_path / "copy"
    shutil.copytree(split_copy, repo, symlinks=True)
    state = repo / "checkpoints/cnn/state.json"
    backed_up = kill_after_first_backup(repo, state)
    assert backed_up >= 1
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["cnn"]["learning_rate"] = 0.001
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = run(["dvc", "repro", "train@cnn"], repo)
    log = rerun.stdout + rerun.stderr
    assert "discarding the training backup" in log and "resuming at epoch" not in log
    assert f"Epoch 1/{EPOCHS}" in log
    assert json.loads((repo / "metrics/train/cnn.json").read_text())["epochs_run"] == EPOCHS
