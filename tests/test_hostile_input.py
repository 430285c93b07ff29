"""Hostile input, faults and signals: nothing outside data/raw is read, nothing committed is lost, nothing
hangs, and every failure ends in one clear message (exit 1, no traceback).

Each test reproduces one way the pipeline used to fail — a manifest pointing outside the tracked data, a
class name that is HTML, a SavedModel that writes files, a bad parameter under `dvc repro`, a signal to
`dvc repro`, a killed kernel or decoding process, a full disk, … — with the real tools: `imgpipe`, DVC,
Papermill kernels, TensorFlow, a tmpfs mount.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from imgpipe.config.schema import PreprocessParams
from imgpipe.artifacts.files import remove_leftovers, remove_path
from imgpipe.data import synthetic
from imgpipe.data.decode import DecodeSettings, DecodeWorkerDied, check_memory, decode_files
from imgpipe.data.preprocess import load_raw
from imgpipe.data.sources import DataError, read_manifest
from imgpipe.pipeline.processes import descendants
from imgpipe.pipeline.safekeeping import ABSENT_LIST, BACKUP_ROOT, OutputBackup
from imgpipe.config.resources import ResourceError
from imgpipe.training.distribute import ClusterConfigError, check_tf_config
from tests.helpers import BIN, GIT_IDENTITY, run

HOSTILE = "<img src=x onerror=alert(2)>"


# ---------------------------------------------------------------- helpers

def edit_params(project: Path, edit: Callable[[dict], None]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    edit(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def assert_one_clear_message(result: subprocess.CompletedProcess[str], expected: str) -> str:
    message = result.stdout + result.stderr
    assert result.returncode == 1, message[-3000:]
    assert expected in message, message[-3000:]
    assert "Traceback" not in message, message[-3000:]
    return message


def committed_copy(repo: Path, target: Path) -> Path:
    """A private copy of the reproduced tiny pipeline, committed, so `git status` starts clean."""
    shutil.copytree(repo, target, symlinks=True)
    shutil.rmtree(target / ".dvc" / "tmp", ignore_errors=True)
    run(["git", "add", "-A"], target)
    run(["git", "commit", "-qm", "a good run", "--allow-empty"], target)
    assert run(["git", "status", "--porcelain"], target).stdout == ""
    return target


def digests(project: Path, names: list[str]) -> dict[str, str]:
    """md5 of every file under each named output (file or folder)."""
    found = {}
    for name in names:
        target = project / name
        files = sorted(target.rglob("*")) if target.is_dir() else [target]
        for file in files:
            if file.is_file():
                found[file.relative_to(project).as_posix()] = hashlib.md5(file.read_bytes()).hexdigest()
    return found


def processes_in(project: Path) -> list[tuple[int, str]]:
    """Processes whose working directory is the project (imgpipe, its kernel, decode workers, dvc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == project or project in cwd.parents:
            found.append((int(entry.name), command))
    return found


def wait_for(condition: Callable[[], object], what: str, seconds: float = 300, log: Path | None = None) -> None:
    """Poll until ``condition`` holds (a guard against hanging, not a timing assertion); on giving up, show
    the end of ``log`` and the processes still alive."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.is_file() else ""
    alive = "\n".join(f"{pid} {command[:160]}" for pid, command in processes_in(log.parent)) if log else ""
    pytest.fail(f"gave up waiting for {what} after {seconds:.0f} s\n{tail}\nstill running:\n{alive}")


def start(command: list[str], project: Path, log: Path, path: str | None = None,
          shell: str | None = None) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session; ``shell`` is the ``SHELL`` DVC runs a stage's command with."""
    env = {**os.environ, **GIT_IDENTITY, "PATH": path or f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    if shell is not None:
        env["SHELL"] = shell
    env.pop("IMGPIPE_ROOT", None)
    with log.open("wb") as output:
        return subprocess.Popen(command, cwd=project, env=env, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def assert_no_live_markup(page: Path, shown: str) -> None:
    """The hostile text appears as text, never as tags or attributes of the page."""
    parser = Tags()
    parser.feed(page.read_text(encoding="utf-8"))
    handlers = [(tag, attrs) for tag, attrs in parser.tags if any(name.startswith("on") for name in attrs)]
    assert not handlers, f"{page.name}: live event handlers {handlers[:3]}"
    assert not [attrs for tag, attrs in parser.tags if tag == "img" and attrs.get("src") == "x"], page.name
    assert not [attrs for tag, attrs in parser.tags if (attrs.get("href") or "").startswith("javascript:")], page.name
    assert shown in "".join(parser.text), f"{page.name} does not show {shown!r} as text"


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the project holding images that must never be read."""
    folder = tmp_path / "outside"
    synthetic.write_shapes_dataset(folder, per_class=12, seed=7)
    return folder


# ---------------------------------------------------------------- 1. nothing outside data/raw is read

@pytest.mark.notebook
def test_a_manifest_pointing_outside_data_raw_is_refused_unread(project: Path, outside: Path) -> None:
    root = project / "data" / "raw" / "shop"
    synthetic.write_shapes_dataset(root, per_class=12)
    secret = outside / "circle" / sorted(os.listdir(outside / "circle"))[0]
    (root / "link.png").symlink_to(secret)
    rows = [f"{path.relative_to(root).as_posix()},{path.relative_to(root).parts[0]}"
            for path in sorted(root.rglob("*.*")) if path.parent != root]
    hostile_rows = [f"{secret},circle", f"../../../../outside/circle/{secret.name},circle", "link.png,circle"]
    (root / "labels.csv").write_text("\ufeffpath,label\n" + "\n".join(rows + hostile_rows) + "\n", encoding="utf-8")
    edit_params(project, lambda p: p["preprocess"].update(source="csv", path="data/raw/shop/labels.csv",
                                                          image_size=[32, 32], channels=3))
    run(["imgpipe", "run", "preprocess"], project)
    report = json.loads((project / "data" / "processed" / "cleaning_report.json").read_text())
    refused = [entry for entry in report["dropped"] if entry["reason"] == "outside_raw_data"]
    assert len(refused) == 3, report["dropped"]
    assert report["dropped_by_reason"]["outside_raw_data"] == 3
    with np.load(project / "data" / "processed" / "dataset.npz") as dataset:
        sources = [str(source) for source in dataset["sources"]]
    assert len(sources) == len(rows) and not [s for s in sources if "outside" in s or "link.png" in s]


@pytest.mark.notebook
def test_symlinked_class_folders_and_files_are_refused_and_class_names_are_escaped(project: Path,
                                                                                   outside: Path) -> None:
    root = project / "data" / "raw" / "shapes"
    synthetic.write_shapes_dataset(root, per_class=12)
    (root / "triangle").rename(root / HOSTILE)
    (root / "stolen").symlink_to(outside / "square", target_is_directory=True)
    secret = outside / "circle" / sorted(os.listdir(outside / "circle"))[0]
    (root / "circle" / "link.png").symlink_to(secret)
    (root / "circle" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    edit_params(project, lambda p: p["preprocess"].update(source="folder", path="data/raw/shapes",
                                                          image_size=[32, 32], channels=3))
    run(["imgpipe", "run", "preprocess"], project)
    report = json.loads((project / "data" / "processed" / "cleaning_report.json").read_text())
    reasons = {Path(entry["file"]).name: entry["reason"] for entry in report["dropped"]}
    assert reasons["stolen"] == "outside_raw_data" and reasons["link.png"] == "outside_raw_data", reasons
    assert reasons[".DS_Store"] == "hidden_file" and report["dropped_by_reason"]["hidden_file"] == 1
    with np.load(project / "data" / "processed" / "dataset.npz") as dataset:
        assert sorted(dataset["class_names"]) == sorted(["circle", "square", HOSTILE])
        assert not [s for s in dataset["sources"] if "stolen" in str(s) or "link.png" in str(s)]
    assert_no_live_markup(project / "reports" / "preprocess.html", HOSTILE)


def test_the_manifest_itself_outside_data_raw_and_its_encodings(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    elsewhere = tmp_path / "labels.csv"
    elsewhere.write_text("path,label\na.png,x\n")
    (raw / "labels.csv").symlink_to(elsewhere)
    with pytest.raises(DataError, match="the manifest itself is a symbolic link to .*outside"):
        read_manifest(raw / "labels.csv", (raw,))
    latin = raw / "latin.csv"
    latin.write_bytes("path,label\ncaf\xe9.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv, line 2: byte 0xe9 is not UTF-8 .*save the manifest as UTF-8"):
        read_manifest(latin, (raw,))
    bom = raw / "bom.csv"
    bom.write_text("\ufeffpath,label\nmissing.png,x\n", encoding="utf-8")
    assert read_manifest(bom, (raw,)).class_names == ("x",)


def test_a_missing_idx_folder_is_named_as_such(tmp_path: Path) -> None:
    params = PreprocessParams(source="idx", path="data/raw/nowhere", class_names=[], image_size=[0, 0], channels=0,
                              resize="stretch", min_side=8, max_pixels=1000, min_images_per_class=1, blank_max_std=0.0,
                              drop_exact_duplicates=True, drop_conflicting_duplicates=True, workers=1)
    with pytest.raises(DataError, match="data/raw/nowhere: folder missing"):
        load_raw(params, tmp_path, tmp_path / "decoded.npy")


# ---------------------------------------------------------------- 3. the report escapes what it did not write

@pytest.mark.pipeline
def test_the_report_escapes_class_names_and_the_title(repo: Path, tmp_path: Path) -> None:
    project = committed_copy(repo, tmp_path / "project")
    for model in ("cnn", "rnn", "attention"):
        table = project / "evaluation" / model / "per_class.csv"
        lines = table.read_text().splitlines()
        table.write_text("\n".join([lines[0], *(f"{HOSTILE}{i}," + line.split(",", 1)[1]
                                                for i, line in enumerate(lines[1:]))]) + "\n")
    title = f"{HOSTILE} [click](javascript:alert(3)) ``` <script>alert(1)</script>"
    edit_params(project, lambda p: p["report"].update(title=title))
    run(["imgpipe", "run", "report"], project)
    page = project / "reports" / "index.html"
    assert_no_live_markup(page, f"{HOSTILE}0")
    assert_no_live_markup(page, "<script>alert(1)</script>")
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page.read_text(encoding="utf-8"), flags=re.S | re.I)
    assert not [script for script in scripts if "alert(" in script], "a script tag carries the title"


# ---------------------------------------------------------------- 4. predict trusts no model, no file

def _hostile_saved_model(folder: Path, marker: Path) -> Path:
    import tensorflow as tf

    class Hostile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            tf.io.write_file(str(marker), "written by the model")
            count = tf.shape(images)[0]
            return {"probabilities": tf.ones([count, 1]), "label": tf.zeros([count], tf.int32),
                    "class_name": tf.fill([count], "anything")}

    module = Hostile()
    tf.saved_model.save(module, str(folder / "1"), signatures={"serving_default": module.serve})
    return folder


@pytest.mark.pipeline
def test_predict_refuses_a_saved_model_with_file_io_unless_trusted(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    export = _hostile_saved_model(tmp_path / "hostile", marker)
    image = tmp_path / "image.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(image)
    refused = run(["imgpipe", "predict", "--model", "cnn", "--export-dir", str(export), str(image)], repo, check=False)
    message = assert_one_clear_message(refused, "refused to load this SavedModel")
    assert "WriteFile" in message and "--trust-model" in message
    assert not marker.exists(), "the model ran"
    run(["imgpipe", "predict", "--model", "cnn", "--export-dir", str(export), "--trust-model", str(image)], repo)
    assert marker.read_text() == "written by the model"    # what the check prevented


def test_every_family_exports_only_allowed_operations(tmp_path: Path) -> None:
    from imgpipe.models import builders
    from imgpipe.models.tta import with_test_time_augmentation
    from imgpipe.serving.export import export_model
    from imgpipe.serving.trust import CHECKPOINT_OPS, SERVING_OPS, foreign_ops

    assert not {"WriteFile", "ReadFile", "PyFunc", "EagerPyFunc", "PyFuncStateless", "MatchingFiles",
                "ImmutableConst", "LoadLibrary"} & (SERVING_OPS | CHECKPOINT_OPS)
    architectures = [("cnn", {"filters": [4, 8], "convs_per_block": 2, "dense_units": 8}),
                     ("rnn", {"cell": "gru", "units": 8, "layers": 2, "bidirectional": False, "stem_filters": [4],
                              "stem_strides": [2]}),
                     ("rnn", {"cell": "lstm", "units": 8, "layers": 1, "bidirectional": True, "stem_filters": [],
                              "stem_strides": []}),
                     ("attention", {"dim": 8, "heads": 2, "depth": 1, "mlp_ratio": 2, "stem_filters": [4, 8],
                                    "stem_strides": [2, 2]})]
    for number, (family, architecture) in enumerate(architectures):
        model = builders.build_model(family, (28, 28, 3), 3, np.zeros(3), np.ones(3), architecture, 0.1, 1e-4)
        version = export_model(model, ("a", "b", "c"), tmp_path / str(number), 1)
        assert foreign_ops(version) == {}, (family, architecture)
    # With every test-time view the evaluate stage can embed (mirror, shifts), as the exports carry them.
    views = with_test_time_augmentation(model, "mirror_translate")
    assert foreign_ops(export_model(views, ("a", "b", "c"), tmp_path / "views", 1)) == {}


@pytest.mark.pipeline
def test_predict_names_bombs_fifos_and_huge_images_and_goes_on(repo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("1", (20000, 10000)).save(folder / "a-bomb.png")           # over Pillow's own bomb limit
    Image.new("L", (12000, 12000)).save(folder / "b-huge.png")            # 144 Mpx in a small file
    os.mkfifo(folder / "c-fifo.png")
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(folder / "d-good.png")
    inputs = [str(folder / name) for name in ("a-bomb.png", "b-huge.png", "c-fifo.png", "d-good.png")]
    result = subprocess.run([str(BIN / "imgpipe"), "predict", "--model", "cnn", "--json", *inputs], cwd=repo,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    records = {Path(record["path"]).name: record for record in map(json.loads, result.stdout.splitlines())}
    assert "more than --max-pixels" in records["a-bomb.png"]["error"]
    assert "more than --max-pixels" in records["b-huge.png"]["error"]
    assert "not a regular file" in records["c-fifo.png"]["error"]
    assert "class_name" in records["d-good.png"]


# ---------------------------------------------------------------- 5. a bad run leaves the committed results alone

SPLIT_OUTPUTS = ["data/split/indices.npz", "data/split/shards", "metrics/split.json", "reports/split.ipynb",
                 "reports/split.html"]
TRAIN_OUTPUTS = ["models/cnn.keras", "metrics/train/cnn.json", "dvclive/train/cnn", "reports/train-cnn.ipynb",
                 "reports/train-cnn.html"]


@pytest.mark.pipeline
def test_a_bad_parameter_or_a_missing_environment_deletes_nothing(repo: Path, tmp_path: Path) -> None:
    project = committed_copy(repo, tmp_path / "project")
    before = digests(project, SPLIT_OUTPUTS)
    edit_params(project, lambda p: p["split"].update(val_fraction=1.5))
    failed = run(["dvc", "repro"], project, check=False)
    assert failed.returncode != 0 and "key 'split.val_fraction' has value 1.5" in failed.stdout + failed.stderr
    assert run(["git", "status", "--porcelain"], project).stdout.splitlines() == [" M params.yaml"]
    assert digests(project, SPLIT_OUTPUTS) == before

    run(["git", "checkout", "params.yaml"], project)
    edit_params(project, lambda p: p["split"].update(seed=43))
    without_env = subprocess.run([str(BIN / "dvc"), "repro"], cwd=project, capture_output=True, text=True,
                                 env={**os.environ, "PATH": "/usr/bin:/bin"})
    said = without_env.stderr + without_env.stdout
    assert without_env.returncode != 0 and re.search(r"imgpipe: (command )?not found", said), said   # bash / dash
    assert run(["git", "status", "--porcelain"], project).stdout.splitlines() == [" M params.yaml"]
    assert digests(project, SPLIT_OUTPUTS) == before


def _long_training(repo: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    project = committed_copy(repo, tmp_path / "project")
    edit_params(project, lambda p: p["train"]["cnn"].update(epochs=60))
    return project, digests(project, TRAIN_OUTPUTS)


def _training_underway(project: Path) -> bool:
    return any((project / "checkpoints" / "cnn").glob("*.weights.h5"))


def _kernels(project: Path) -> list[int]:
    return [pid for pid, command in processes_in(project) if "ipykernel" in command]


@pytest.mark.pipeline
@pytest.mark.parametrize(("target", "shell"), [("dvc repro", "/bin/bash"), ("dvc repro", "/bin/sh"),
                                              ("imgpipe run", None)])
def test_a_signal_stops_the_kernel_and_everything_it_started(repo: Path, tmp_path: Path, target: str,
                                                             shell: str | None) -> None:
    """DVC runs the stage through ``$SHELL -c``; the shell (bash or dash) stays between dvc and ``imgpipe run``."""
    project, before = _long_training(repo, tmp_path)
    command = ["dvc", "repro", "train@cnn"] if target == "dvc repro" else ["imgpipe", "run", "train", "cnn"]
    log = tmp_path / "run.log"
    process = start([str(BIN / command[0]), *command[1:]], project, log, shell=shell)
    try:
        wait_for(lambda: _training_underway(project) or process.poll() is not None, "the first epoch", log=log)
        assert process.poll() is None and _kernels(project), log.read_text()[-3000:]
        os.kill(process.pid, signal.SIGTERM)            # to dvc (or imgpipe) alone, not to its process group
        if target == "imgpipe run":                     # what dvc does: it passes SIGTERM on to the stage and
            time.sleep(0.004)                           # dies, and the stage's parent-death signal follows
            os.kill(process.pid, signal.SIGTERM)
        wait_for(lambda: process.poll() is not None, f"{target} to end after SIGTERM", 300, log)
        wait_for(lambda: not processes_in(project), "every process of the stage to end", 300, log)
    finally:
        for pid, _ in processes_in(project):
            os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert digests(project, TRAIN_OUTPUTS) == before, f"outputs changed after the stop\n{text[-3000:]}"
    assert not remove_leftovers(project), f"partial files were left behind\n{text[-3000:]}"
    assert "stopped by SIGTERM" in text, text[-3000:]


@pytest.mark.pipeline
def test_a_killed_kernel_ends_in_one_message_and_restores_the_outputs(repo: Path, tmp_path: Path) -> None:
    project, before = _long_training(repo, tmp_path)
    log = tmp_path / "run.log"
    process = start([str(BIN / "imgpipe"), "run", "train", "cnn"], project, log)
    try:
        wait_for(lambda: _training_underway(project) or process.poll() is not None, "the first epoch")
        for pid in _kernels(project):
            os.kill(pid, signal.SIGKILL)               # what the kernel's out-of-memory killer does
        assert process.wait(timeout=300) == 1
    finally:
        for pid, _ in processes_in(project):
            os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert "its Jupyter kernel died" in text and "Traceback" not in text, text[-3000:]
    assert digests(project, TRAIN_OUTPUTS) == before
    assert not list((project / "reports").glob("train-cnn.*.ipynb"))


# ---------------------------------------------------------------- 6. no hang, no traceback for the user's mistakes

def test_a_killed_decoding_process_ends_the_run_instead_of_hanging(tmp_path: Path) -> None:
    for index in range(600):
        Image.fromarray(np.full((16, 16), index % 250, np.uint8)).save(tmp_path / f"{index:04d}.png")
    paths = sorted(tmp_path.glob("*.png"))
    settings = DecodeSettings(16, 16, 1, "stretch", 4, 10_000)
    before = set(descendants(os.getpid()))
    results = decode_files(paths, settings, workers=2)
    next(results)
    workers = set(descendants(os.getpid())) - before
    assert workers
    os.kill(workers.pop(), signal.SIGKILL)
    with pytest.raises(DecodeWorkerDied, match="a decoding process died .* lower preprocess.workers"):
        list(results)


def test_settings_too_large_for_memory_are_refused_before_work() -> None:
    from imgpipe.models import builders
    from imgpipe.training import train

    settings = DecodeSettings(100_000, 100_000, 3, "stretch", 8, 50_000_000)
    with pytest.raises(ResourceError, match=r"preprocess.image_size=\[100000, 100000\] .* needs about .* GiB"):
        check_memory(settings, 2)
    model = builders.build_model("cnn", (28, 28, 1), 10, np.zeros(1), np.ones(1),
                                 {"filters": [16, 64, 128, 256], "convs_per_block": 1, "dense_units": 128}, 0.2, 0.0)
    with pytest.raises(ResourceError, match=r"train.cnn.batch_size=1,000,000,000 \(54,000 images a step\)"):
        train.check_batch_memory(model, 1_000_000_000, 54_000, "cnn")
    train.check_batch_memory(model, 128, 54_000, "cnn")


@pytest.mark.notebook
def test_an_image_size_too_large_for_memory_stops_the_stage_with_a_message(project: Path) -> None:
    edit_params(project, lambda p: p["preprocess"].update(image_size=[100_000, 100_000], channels=1))
    result = run(["imgpipe", "run", "preprocess"], project, check=False)
    assert_one_clear_message(result, "ResourceError: preprocess.image_size=[100000, 100000]")
    assert not (project / "data" / "processed" / "dataset.npz").exists()
    assert not remove_leftovers(project)


def test_tf_config_errors_name_tf_config() -> None:
    with pytest.raises(ClusterConfigError, match="TF_CONFIG is not set"):
        check_tf_config(None)
    with pytest.raises(ClusterConfigError, match="TF_CONFIG is not valid JSON"):
        check_tf_config('{"cluster": ')
    with pytest.raises(ClusterConfigError, match="TF_CONFIG's 'task'"):
        check_tf_config('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}')
    check_tf_config('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}')


@pytest.mark.pipeline
def test_a_malformed_tf_config_stops_training_with_one_message(repo: Path, tmp_path: Path) -> None:
    project = committed_copy(repo, tmp_path / "project")
    edit_params(project, lambda p: p["train"].update(strategy="multi_worker"))
    result = subprocess.run([str(BIN / "imgpipe"), "run", "train", "cnn"], cwd=project, capture_output=True,
                            text=True, env={**os.environ, "TF_CONFIG": '{"cluster": '})
    assert_one_clear_message(result, "ClusterConfigError: train.strategy is multi_worker")
    assert "TF_CONFIG is not valid JSON" in result.stderr
    assert run(["git", "status", "--porcelain"], project).stdout.splitlines() == [" M params.yaml"]


def test_leftovers_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    leftovers = [tmp_path / "data/processed/.decoded-abc/decoded.npy", tmp_path / "data/processed/dataset.npz.partial.npz",
                 tmp_path / "data/split/shards.partial/train-00000.npz", tmp_path / "reports/split.partial.ipynb",
                 tmp_path / "models/cnn.partial.keras", tmp_path / "exported/cnn/.1.partial/saved_model.pb"]
    kept = [tmp_path / "data/processed/dataset.npz", tmp_path / "reports/split.ipynb"]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    remove_leftovers(tmp_path)
    assert not [path for path in leftovers if path.exists()] and all(path.exists() for path in kept)


@pytest.mark.notebook
def test_a_full_disk_ends_in_one_message_and_leaves_no_partial_files(project: Path) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    processed = project / "data" / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(processed)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        result = run(["imgpipe", "run", "preprocess"], project, check=False)
        assert_one_clear_message(result, "the disk is full")
        assert list(processed.iterdir()) == [], "scratch or partial files were left on the full disk"
        assert not (project / "reports" / "preprocess.ipynb").exists()
    finally:
        subprocess.run(["umount", "-l", str(processed)], check=False)


def test_a_failed_or_killed_stage_gets_its_previous_outputs_back(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {"foreach": ["cnn"], "do": {
        "cmd": "imgpipe run train ${item}",
        "outs": [{"models/${item}.keras": {"persist": True}}, {"checkpoints/${item}": {"persist": True}},
                 {"dvclive/train/${item}": {"persist": True}}],
        "metrics": [{"metrics/train/${item}.json": {"persist": True}}]}}}}))
    files = {"models/cnn.keras": b"good model", "dvclive/train/cnn/metrics.json": b"{}",
             "metrics/train/cnn.json": b"{\"accuracy\": 0.9}", "checkpoints/cnn/state.json": b"epoch 1"}
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)

    backup = OutputBackup(tmp_path, "train", "cnn")
    backup.save()
    (tmp_path / "models/cnn.keras").write_bytes(b"half a model")
    (tmp_path / "metrics/train/cnn.json").unlink()
    (tmp_path / "dvclive/train/cnn/new.tsv").write_bytes(b"step")
    (tmp_path / "checkpoints/cnn/state.json").write_bytes(b"epoch 2")
    backup.restore()                                   # the stage failed
    assert {name: (tmp_path / name).read_bytes() for name in files} == {**files, "checkpoints/cnn/state.json":
                                                                        b"epoch 2"}   # the resume state stays
    assert not (tmp_path / "dvclive/train/cnn/new.tsv").exists()

    backup.save()
    (tmp_path / "models/cnn.keras").write_bytes(b"half a model")   # then the run is SIGKILLed: no restore
    OutputBackup(tmp_path, "train", "cnn").save()                  # the next run restores first
    assert (tmp_path / "models/cnn.keras").read_bytes() == b"good model"


def _train_stage_outputs(root: Path, present: dict[str, bytes]) -> list[str]:
    """A dvc.yaml whose train stage declares a model, a curves folder and a metrics file; ``present`` written."""
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {"foreach": ["cnn"], "do": {
        "cmd": "imgpipe run train ${item}",
        "outs": [{"models/${item}.keras": {"persist": True}}, {"dvclive/train/${item}": {"persist": True}}],
        "metrics": [{"metrics/train/${item}.json": {"persist": True}}]}}}}))
    for name, content in present.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return ["models", "dvclive", "metrics"]


def _files_under(root: Path, folders: list[str]) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for folder in folders if (root / folder).is_dir()
            for path in (root / folder).rglob("*") if path.is_file()}


def _a_failed_run(root: Path) -> None:
    """What a failed training leaves: a half-written model, new curves, a metrics file that was absent."""
    (root / "models/cnn.keras").write_bytes(b"half a model")
    (root / "dvclive/train/cnn/new.tsv").write_bytes(b"step")
    (root / "metrics/train").mkdir(parents=True, exist_ok=True)
    (root / "metrics/train/cnn.json").write_bytes(b"{\"accuracy\": 0.1}")


@pytest.mark.parametrize("interrupted_at", range(4))
def test_a_restore_stopped_halfway_and_run_again_puts_back_exactly_the_saved_outputs(tmp_path: Path,
                                                                                    interrupted_at: int) -> None:
    """A stop may arrive while a failed stage is being restored; the second restore must not remove what the
    first one already put back. The interrupted output is cut off halfway: a file removed but not yet
    replaced, a folder half deleted."""
    saved = {"models/cnn.keras": b"good model", "dvclive/train/cnn/metrics.json": b"{}",
             "dvclive/train/cnn/plots/loss.tsv": b"step loss"}
    folders = _train_stage_outputs(tmp_path, saved)
    first = OutputBackup(tmp_path, "train", "cnn")
    first.save()                                       # metrics/train/cnn.json does not exist yet
    _a_failed_run(tmp_path)

    for output in first.outputs[:interrupted_at]:
        first.restore_output(output)
    if interrupted_at < len(first.outputs):
        cut_off = first.outputs[interrupted_at]
        remove_path(next(path for path in cut_off.rglob("*") if path.is_file()) if cut_off.is_dir() else cut_off)
    OutputBackup(tmp_path, "train", "cnn").restore()

    assert _files_under(tmp_path, folders) == saved
    assert not (tmp_path / "metrics/train/cnn.json").exists()
    assert not (tmp_path / BACKUP_ROOT / "train-cnn").exists()


def test_a_backup_without_its_list_of_absent_outputs_still_removes_what_the_failed_run_added(tmp_path: Path) -> None:
    """A backup made by an older imgpipe (no list): every output without a kept copy counts as absent."""
    saved = {"models/cnn.keras": b"good model", "dvclive/train/cnn/metrics.json": b"{}"}
    folders = _train_stage_outputs(tmp_path, saved)
    backup = OutputBackup(tmp_path, "train", "cnn")
    backup.save()
    (backup.folder / ABSENT_LIST).unlink()
    _a_failed_run(tmp_path)
    OutputBackup(tmp_path, "train", "cnn").save()      # the next run restores the killed run's backup first
    assert _files_under(tmp_path, folders) == saved
