"""The whole DAG reproduced by `dvc repro` in a temporary copy of the repository, with tiny params.

One copy is built per module; the tests then run in order against it: outputs valid,
`dvc status` clean, a second repro runs nothing, a param change reruns only what it
affects, a failing cell fails its stage loudly, and `dvc exp run -S` shows up in
`dvc exp show`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import papermill
import pytest
import yaml
from PIL import Image

from imgpipe.models.registry import family_names
from imgpipe.evaluation.evaluate import load_test_data
from imgpipe.serving.export import load_serving, predict_probabilities
from tests.helpers import BIN, run

pytestmark = pytest.mark.pipeline


def test_every_stage_output_exists_and_is_valid(repo: Path) -> None:
    with np.load(repo / "data/processed/dataset.npz") as dataset:
        assert dataset["images"].dtype == np.uint8 and dataset["images"].shape[1:] == (28, 28, 1)
        assert len(dataset["class_names"]) == 10
    cleaning = json.loads((repo / "data/processed/cleaning_report.json").read_text())
    assert cleaning["kept_images"] + cleaning["dropped_images"] == 70000
    split = json.loads((repo / "metrics/split.json").read_text())
    # 0.2 MB shards hold 267 images of 28×28×1: four shards of each 1,000-image part
    assert split == {"train_images": 1000, "val_images": 1000, "test_images": 1000, "train_shards": 4, "val_shards": 4}
    for model in family_names():
        facts = json.loads((repo / f"metrics/train/{model}.json").read_text())
        assert facts["epochs_run"] == 3 and facts["parameters"] > 0 and facts["images_per_second"] > 0
        assert facts["streamed"] is True, "the tiny params' memory budget of 0 must stream from the shards"
        scores = json.loads((repo / f"metrics/evaluate/{model}.json").read_text())
        assert scores["test_images"] == 1000
        assert scores["accuracy"] > 0.2, f"{model} does not beat chance (0.1) clearly: {scores}"
        assert 0 < scores["f1_macro"] <= 1
        assert (repo / f"models/{model}.keras").stat().st_size > 0
        assert (repo / f"dvclive/train/{model}/plots/metrics/eval/accuracy.tsv").read_text().count("\n") == 4
        assert np.load(repo / f"data/predictions/{model}.npy").shape == (1000, 10)
        assert scores["accuracy_ci_low"] <= scores["accuracy"] <= scores["accuracy_ci_high"]
        assert 0 <= scores["expected_calibration_error"] <= 1
        with np.load(repo / f"evaluation/{model}/explanations.npz") as maps:
            assert maps["saliency"].shape == (10, 28, 28) and maps["images"].shape == (10, 28, 28, 1)
        assert json.loads((repo / f"metrics/crossval/{model}.json").read_text()) == {}   # skipped: no metrics
        exported = json.loads((repo / f"metrics/export/{model}.json").read_text())
        assert exported["labels_that_differ"] == 0 and exported["largest_probability_difference"] <= 1e-5
        assert (repo / f"exported/{model}/1/saved_model.pb").is_file()
        for page in (f"train-{model}.html", f"evaluate-{model}.html"):
            assert "data:image/png;base64" in (repo / "reports" / page).read_text()
    index = (repo / "reports/index.html").read_text()
    for section in ("McNemar", "Calibration", "What the models look at", "Methods", "git commit", "tensorflow"):
        assert section in index, section
    assert index.count("data:image/png;base64") >= 3
    assert "report.comparison_table(" not in index, "the published report must hide code"
    assert "<script src=" not in index and 'src="http' not in index, "the report must not fetch from the network"


def test_dvc_status_is_clean_and_a_second_repro_runs_nothing(repo: Path) -> None:
    assert run(["dvc", "status"], repo).stdout.strip() == "Data and pipelines are up to date."
    again = run(["dvc", "repro"], repo).stdout
    assert "Running stage" not in again
    assert again.count("didn't change, skipping") == 1 + 15          # data.dvc and the fifteen stages


def test_metrics_and_plots_are_declared(repo: Path) -> None:
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    files = next(iter(metrics.values()))["data"]
    assert {f"metrics/evaluate/{model}.json" for model in family_names()} <= set(files)
    run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert "Validation accuracy per epoch" in page and "Confusion matrix" in page


def test_a_train_param_change_reruns_only_that_model(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["rnn"]["epochs"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(run(["dvc", "status", "--json"], repo).stdout)
        # dvc status lists the stages whose own inputs changed: the RNN's training and cross-validation,
        # and the report, which prints every parameter.
        assert set(status) == {"train@rnn", "crossval@rnn", "report"}
        # --dry cannot know that a retrained model changes; --force-downstream lists what follows from it
        dry = run(["dvc", "repro", "--dry", "--force-downstream"], repo).stdout
        ran = sorted(line.split("'")[1] for line in dry.splitlines() if line.startswith("Running stage"))
        assert ran == ["crossval@rnn", "evaluate@rnn", "export@rnn", "report", "train@rnn"]
    finally:
        run(["git", "checkout", "params.yaml"], repo)


def test_cross_validation_runs_on_request(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["crossval"].update(enabled=True, folds=2, models=["cnn"], epochs=1)
    params["train"]["memory_budget_mb"] = 64          # folds are held in memory; 0 (always stream) refuses them
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        run(["imgpipe", "run", "crossval", "cnn"], repo)
        summary = json.loads((repo / "metrics/crossval/cnn.json").read_text())
        assert summary["enabled"] is True and summary["folds"] == 2
        assert 0.1 < summary["accuracy_mean"] <= 1 and summary["accuracy_std"] >= 0
        assert "cross_validate" in (repo / "reports/crossval-cnn.html").read_text()     # the executed notebook
    finally:
        run(["git", "checkout", "params.yaml"], repo)
        run(["imgpipe", "run", "crossval", "cnn"], repo)          # back to the skipped record dvc.lock knows
    assert run(["dvc", "status"], repo).stdout.strip() == "Data and pipelines are up to date."


def test_a_failing_cell_fails_the_stage_and_shows_the_error(repo: Path) -> None:
    model_file = repo / "models/cnn.keras"
    model_file.unlink()
    try:
        failed = run(["imgpipe", "run", "evaluate", "cnn"], repo, check=False)
        assert failed.returncode == 1
        assert "stage evaluate-cnn failed in cell" in failed.stderr
        assert "cnn.keras" in failed.stderr
    finally:
        run(["dvc", "checkout", "-f"], repo)
    assert model_file.is_file()


def test_a_notebook_runs_from_the_notebooks_folder_as_in_jupyterlab(repo: Path, tmp_path: Path) -> None:
    executed = tmp_path / "split.ipynb"
    papermill.execute_notebook(str(repo / "notebooks/2-split.ipynb"), str(executed), cwd=str(repo / "notebooks"),
                               kernel_name="python3", progress_bar=False,
                               parameters=yaml.safe_load((repo / "params.yaml").read_text())["split"])
    assert "train_images" in executed.read_text()


def test_dvc_exp_run_appears_beside_the_baseline(repo: Path) -> None:
    run(["dvc", "exp", "run", "-S", "train.cnn.learning_rate=0.005", "-n", "faster-cnn"], repo)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    experiments = [exp for row in shown for exp in (row.get("experiments") or [])]
    names = [exp.get("name") for exp in experiments]
    assert "faster-cnn" in names
    revision = experiments[names.index("faster-cnn")]["revs"][0]["data"]
    assert revision["params"]["params.yaml"]["data"]["train"]["cnn"]["learning_rate"] == 0.005
    assert "metrics/evaluate/cnn.json" in revision["metrics"]


def test_a_queued_grid_runs_two_experiments_in_parallel(repo: Path) -> None:
    run(["dvc", "commit", "--force", "data.dvc"], repo)          # queued runs check the raw data out of the cache
    for rate in ("0.001", "0.004"):
        run(["dvc", "exp", "run", "--queue", "-S", f"train.cnn.learning_rate={rate}", "-n", f"cnn-lr-{rate}"], repo)
    run(["dvc", "queue", "start", "-j", "2"], repo)
    deadline = time.monotonic() + 600                            # a guard against a stuck queue, not a timing
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    else:
        run(["dvc", "queue", "kill", "--force", "cnn-lr-0.001", "cnn-lr-0.004"], repo, check=False)
        run(["dvc", "queue", "stop", "--kill"], repo, check=False)
    logs = {name: run(["dvc", "queue", "logs", name], repo, check=False).stdout[-2000:]
            for name in ("cnn-lr-0.001", "cnn-lr-0.004")}
    assert status.count("Success") == 2, f"{status}\n{logs}"
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    experiments = {exp.get("name"): exp for row in shown for exp in (row.get("experiments") or [])}
    for rate in (0.001, 0.004):
        revision = experiments[f"cnn-lr-{rate}"]["revs"][0]["data"]
        assert revision["params"]["params.yaml"]["data"]["train"]["cnn"]["learning_rate"] == rate
        assert 0 < revision["metrics"]["metrics/evaluate/cnn.json"]["data"]["accuracy"] <= 1

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def jupyter_request(url: str, token: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def test_saving_a_run_notebook_in_jupyter_keeps_dvc_clean(repo: Path) -> None:
    """A real Jupyter server (as `make lab` starts it) saves a notebook with outputs; DVC sees no change."""
    port, token = free_port(), "imgpipe-test-token"
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(repo / ".jupyter"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    root_flag = ["--allow-root"] if os.geteuid() == 0 else []          # as `make lab` passes it when run as root
    server_log = repo.parent / f"jupyter-server-{port}.log"
    with server_log.open("w") as log:
        server = subprocess.Popen(
            ["jupyter", "server", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1", *root_flag,
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={repo / 'notebooks'}"],
            cwd=repo / "notebooks", env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(240):
            if server.poll() is not None:
                pytest.fail(f"jupyter server exited with {server.returncode}:\n{server_log.read_text()}")
            try:
                jupyter_request(f"{base}/status", token)
                break
            except OSError:
                time.sleep(0.5)
        notebook_file = repo / "notebooks" / "3-train.ipynb"
        before = notebook_file.read_text()
        model = jupyter_request(f"{base}/contents/3-train.ipynb", token)
        code = [cell for cell in model["content"]["cells"] if cell["cell_type"] == "code"]
        code[1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "trained\n"}]
        code[1]["execution_count"] = 7
        code[1]["metadata"]["execution"] = {"iopub.execute_input": "2026-11-23T08:00:00Z"}
        model["content"]["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
        jupyter_request(f"{base}/contents/3-train.ipynb", token, "PUT",
                        {"type": "notebook", "format": "json", "content": model["content"]})
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert notebook_file.read_text() == before
    assert run(["dvc", "status"], repo).stdout.strip() == "Data and pipelines are up to date."


def test_the_exported_model_reproduces_the_pipeline_predictions(repo: Path) -> None:
    x_test, _, _ = load_test_data(repo / "data/processed/dataset.npz", repo / "data/split/indices.npz")
    for model in family_names():
        exported = predict_probabilities(load_serving(repo / f"exported/{model}/1"), x_test)
        pipeline = np.load(repo / f"data/predictions/{model}.npy")
        np.testing.assert_allclose(exported, pipeline, atol=1e-5)
        assert (exported.argmax(1) == pipeline.argmax(1)).all()


def _write_mixed_image_folder(repo: Path, folder: Path) -> tuple[list[Path], list[Path], np.ndarray]:
    """Six test images in PNG, JPEG, GIF, WebP, BMP and TIFF (gray, RGB, palette, RGBA), and four broken files."""
    x_test, _, _ = load_test_data(repo / "data/processed/dataset.npz", repo / "data/split/indices.npz")
    gray = [Image.fromarray(x_test[i, ..., 0]) for i in range(6)]
    good = [folder / "exact_gray.png", folder / "nested" / "rgb_large.JPG", folder / "palette.gif",
            folder / "rgba.webp", folder / "gray.bmp", folder / "rgb.tiff"]
    good[1].parent.mkdir(parents=True)
    gray[0].save(good[0])
    gray[1].convert("RGB").resize((84, 84)).save(good[1], quality=95)
    gray[2].convert("P").save(good[2])
    gray[3].convert("RGBA").save(good[3], lossless=True)
    gray[4].save(good[4])
    gray[5].convert("RGB").save(good[5])
    broken = [folder / "empty.jpg", folder / "text.png", folder / "truncated.png", folder / "nested" / "missing.png"]
    broken[0].write_bytes(b"")
    broken[1].write_text("not an image\n")
    broken[2].write_bytes(good[0].read_bytes()[:60])
    return good, broken, np.load(repo / "data/predictions/cnn.npy")[:6].argmax(1)


def test_predict_labels_good_files_and_names_each_broken_one(repo: Path, tmp_path: Path) -> None:
    good, broken, pipeline_labels = _write_mixed_image_folder(repo, tmp_path / "images")
    result = run(["imgpipe", "predict", "--model", "cnn", "--json", str(tmp_path / "images"), str(broken[3])],
                 repo, check=False)
    assert result.returncode == 1, "a failed file must make the exit code non-zero"
    records = {Path(record["path"]).name: record for record in map(json.loads, result.stdout.splitlines())}
    assert set(records) == {path.name for path in good + broken}
    for path in broken:
        assert path.name in records[path.name]["error"] and "class_name" not in records[path.name]
    assert records["exact_gray.png"]["label"] == pipeline_labels[0]   # lossless, same size: the pipeline's answer
    for path in good:
        assert 0 < records[path.name]["probability"] <= 1 and "error" not in records[path.name], records[path.name]
    text = run(["imgpipe", "predict", "--model", "cnn", str(good[0]), str(tmp_path / "images" / "*.bmp")], repo)
    lines = [line.split("\t") for line in text.stdout.splitlines()]
    assert [Path(line[0]).name for line in lines] == ["exact_gray.png", "gray.bmp"]


def test_verify_reruns_the_commit_from_scratch_and_finds_it_bit_identical(repo: Path) -> None:
    """Determinism, measured: a second full run in a fresh clone on the same machine is identical."""
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "results of the tiny run"], repo)
    verified = run(["imgpipe", "verify"], repo, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr[-3000:]
    assert "verified: 0 failure(s)" in verified.stderr
    for model in family_names():
        assert (f"{model}: same machine fingerprint, so a bit-identical rerun is expected; found identical"
                in verified.stdout), verified.stdout
