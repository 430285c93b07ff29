"""Multi-worker training on TensorFlow's own engine: two workers on loopback, each in its own copy of the
project (as on two hosts), run the same `imgpipe run train cnn` with `train.strategy: multi_worker` and a
TF_CONFIG naming both. Both must finish; only the chief writes the model, metrics and curves.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import BIN, GIT_IDENTITY
from tests.test_resume import split_copy  # noqa: F401  (the shared fixture: a tiny copy with data split)

pytestmark = pytest.mark.pipeline

EPOCHS = 2


def free_ports(count: int) -> list[int]:
    """Ports on loopback that nothing listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def worker_copy(source: Path, target: Path) -> Path:
    """A copy of the project for one worker, with the multi-worker strategy and few epochs."""
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("models", "metrics", "dvclive"))
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["train"]["strategy"] = "multi_worker"
    params["train"]["cnn"]["epochs"] = EPOCHS
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return target


def start_worker(repo: Path, cluster: list[str], index: int, scratch: Path) -> subprocess.Popen[str]:
    env = {**os.environ, **GIT_IDENTITY, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(scratch),
           "TF_CONFIG": json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}),
           "IMGPIPE_VERBOSE": "1"}                  # the full kernel log: the test reads each epoch's line
    env.pop("IMGPIPE_ROOT", None)
    log = scratch.with_name(f"{scratch.name}.log")     # a file, not a pipe: a full pipe would block the worker
    with log.open("w") as output:
        process = subprocess.Popen(["imgpipe", "run", "train", "cnn"], cwd=repo, env=env, text=True,
                                   stdout=output, stderr=subprocess.STDOUT)
    process.log = log
    return process


def wait_all(processes: list[subprocess.Popen[str]], timeout_s: float) -> list[tuple[int | None, str]]:
    """Wait for every process; if one fails or time runs out, stop the others (a lone worker would wait forever)."""
    deadline = time.monotonic() + timeout_s
    while any(process.poll() is None for process in processes) and time.monotonic() < deadline:
        if any(process.poll() not in (None, 0) for process in processes):
            break
        time.sleep(0.5)
    for process in processes:
        if process.poll() is None:
            process.kill()
    return [(process.wait(), process.log.read_text()) for process in processes]


def test_two_workers_train_together_and_only_the_chief_writes(split_copy: Path, tmp_path: Path) -> None:  # noqa: F811
    cluster = [f"127.0.0.1:{port}" for port in free_ports(2)]
    copies = [worker_copy(split_copy, tmp_path / f"host-{index}") for index in range(2)]
    scratch = [tmp_path / f"tmp-{index}" for index in range(2)]
    for folder in scratch:
        folder.mkdir()
    results = wait_all([start_worker(copy, cluster, index, scratch[index]) for index, copy in enumerate(copies)],
                       timeout_s=900)
    for index, (code, output) in enumerate(results):
        assert code == 0, f"worker {index} exited {code}:\n{output[-6000:]}"

    chief, worker = copies
    facts = json.loads((chief / "metrics/train/cnn.json").read_text())
    assert facts["replicas"] == 2 and facts["epochs_run"] == EPOCHS and facts["batch_size"] == 64
    assert (chief / "models/cnn.keras").stat().st_size > 0
    assert (chief / "dvclive/train/cnn/plots/metrics/eval/accuracy.tsv").read_text().count("\n") == EPOCHS + 1
    for output in ("models/cnn.keras", "metrics/train/cnn.json", "dvclive/train/cnn"):
        assert not (worker / output).exists(), f"worker 1 wrote {output} into its project"
    assert f"writes its model, metrics and curves to {scratch[1]}/imgpipe-worker-1-" in results[1][1]
    assert not list(scratch[1].glob("imgpipe-worker-1-*")), "worker 1 removes its temp folder when it finishes"
    assert not list((chief / "checkpoints/cnn").glob("*.h5")) and not list((worker / "checkpoints/cnn").rglob("*.h5"))
    # the workers trained one model together: they report the same validation accuracy every epoch
    accuracies = [[line.split("val_accuracy: ")[1].split()[0] for line in output.splitlines()
                   if "val_accuracy: " in line and " kernel.train-cnn " in line] for _, output in results]
    assert accuracies[0] == accuracies[1] and len(accuracies[0]) == EPOCHS
