"""``imgpipe bench-streaming``: training on data larger than the memory it is given.

A dataset of random RGB images larger than ``--memory-limit-mb`` is generated and sharded with the
split stage's own code; then the train stage's own input path (``batches.training_input`` →
``train.fit``) trains a small CNN on it for one epoch, in a fresh process placed in a memory cgroup
with that limit, twice: with a budget that holds the data in memory, and with one that streams it.
Each run reports its exit status, peak memory (the cgroup's high-water mark, page cache included,
and the process's peak RSS) and images/second. Needs root and a cgroup memory controller
(v1 or v2); without them the runs are unlimited and the report says so.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from imgpipe.artifacts.files import save_json
from imgpipe.config.schema import model_train_schema
from imgpipe.data.shards import write_shards

LOGGER = logging.getLogger(__name__)
IMAGE_SHAPE = (64, 64, 3)
CNN = model_train_schema("cnn").model_validate({   # a small CNN: the benchmark measures the input path, not the model
    "optimizer": "adam", "learning_rate": 1e-3, "momentum": 0.9, "lr_schedule": "constant", "warmup_epochs": 0,
    "epochs": 1, "batch_size": 128, "dropout": 0.1, "l2": 0.0, "label_smoothing": 0.0, "early_stopping_patience": 0,
    "jit_compile": False, "augment": {"horizontal_flip": True, "crop_padding": 2, "random_erasing": 0.0},
    "architecture": {"filters": [8, 16], "convs_per_block": 1, "dense_units": 32}})
CGROUP_V1, CGROUP_V2 = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")


def write_random_dataset(path: Path, images: int, seed: int = 0) -> None:
    """A dataset.npz of ``images`` random 64×64×3 images in 10 classes, written block by block."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("images.npy", "w", force_zip64=True) as member:
            header = {"descr": "|u1", "fortran_order": False, "shape": (images, *IMAGE_SHAPE)}
            np.lib.format.write_array_header_2_0(member, header)
            for start in range(0, images, 4096):
                member.write(rng.integers(0, 256, (min(4096, images - start), *IMAGE_SHAPE), np.uint8).tobytes())
        for name, array in (("labels", rng.integers(0, 10, images)), ("origin", np.zeros(images, np.int8)),
                            ("class_names", np.array([str(label) for label in range(10)]))):
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


class MemoryCgroup:
    """A cgroup with a memory limit that a child process joins (v1 or v2); ``None`` where none can be made."""

    def __init__(self, limit_bytes: int) -> None:
        v2 = (CGROUP_V2 / "cgroup.controllers").is_file()
        self.folder = (CGROUP_V2 if v2 else CGROUP_V1) / f"imgpipe-bench-{os.getpid()}-{time.monotonic_ns()}"
        self.limit_file, self.peak_file = ("memory.max", "memory.peak") if v2 else (
            "memory.limit_in_bytes", "memory.max_usage_in_bytes")
        self.folder.mkdir()
        (self.folder / self.limit_file).write_text(str(limit_bytes))

    @classmethod
    def create(cls, limit_bytes: int) -> "MemoryCgroup | None":
        try:
            return cls(limit_bytes)
        except OSError as error:
            LOGGER.warning("no memory cgroup (%s): the runs will not be limited", error)
            return None

    def join(self) -> None:
        """Move the calling process into the cgroup (run in the child before it starts TensorFlow)."""
        (self.folder / "cgroup.procs").write_text(str(os.getpid()))

    def peak_mib(self) -> float | None:
        peak = self.folder / self.peak_file
        return round(int(peak.read_text()) / 2**20, 1) if peak.exists() else None

    def remove(self) -> None:
        self.folder.rmdir()


def train_one_epoch(shards_folder: Path, memory_budget_mb: float) -> dict[str, Any]:
    """The train stage's input path and fit, one epoch of a small CNN (run in the limited child)."""
    from imgpipe.data import shards
    from imgpipe.training import batches, train
    from imgpipe.training.recipe import compiled_model

    train.seed_everything(0, deterministic=True)
    data = batches.training_input(shards_folder, CNN.batch_size, 0, CNN.augment.model_dump(), memory_budget_mb)
    mean, std = shards.training_statistics(shards_folder)
    model = compiled_model("cnn", CNN, data.image_shape, len(data.class_names), mean, std, data.train.steps)
    result = train.fit(model, data.train, data.val, 1, data.train.images, 0, [])
    return {"streamed": data.streamed, "shuffle_buffer": data.shuffle_buffer,
            "images_per_second": round(result.images_per_second, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def measure(shards_folder: Path, memory_budget_mb: float, limit_mib: int) -> dict[str, Any]:
    """One child run under the memory limit: exit status, peak memory, speed."""
    cgroup = MemoryCgroup.create(limit_mib * 2**20)
    started = time.perf_counter()
    result_file = shards_folder.with_name(f"result-{memory_budget_mb}.json")
    child = subprocess.run([sys.executable, "-m", "imgpipe.bench.streaming", str(shards_folder), str(memory_budget_mb),
                            str(result_file)], capture_output=True, text=True,
                           preexec_fn=cgroup.join if cgroup else None)
    run: dict[str, Any] = {"memory_budget_mb": memory_budget_mb, "exit_status": child.returncode,
                           "seconds": round(time.perf_counter() - started, 1),
                           "cgroup_peak_mib": cgroup.peak_mib() if cgroup else None, "limited": cgroup is not None}
    if child.returncode == 0:
        run |= json.loads(result_file.read_text())
    else:
        run["outcome"] = "killed by the kernel's OOM killer" if child.returncode in (-9, 137) else child.stderr[-500:]
    if cgroup:
        cgroup.remove()
    LOGGER.info("budget %s MB: %s", memory_budget_mb, run)
    return run


def run_benchmark(images: int, limit_mib: int, budgets_mb: list[float]) -> dict[str, Any]:
    """Generate and shard the dataset, then train on it once per memory budget under the limit."""
    with tempfile.TemporaryDirectory(prefix="imgpipe-bench-streaming-") as scratch:
        dataset = Path(scratch) / "dataset.npz"
        write_random_dataset(dataset, images)
        rows = np.arange(images)
        cut = int(images * 0.9)
        write_shards(dataset, {"train": rows[:cut], "val": rows[cut:]}, 64, Path(scratch) / "shards")
        dataset.unlink()
        runs = [measure(Path(scratch) / "shards", budget, limit_mib) for budget in budgets_mb]
    return {"images": images, "image_shape": list(IMAGE_SHAPE), "dataset_mib": round(images * np.prod(IMAGE_SHAPE) / 2**20, 1),
            "memory_limit_mib": limit_mib, "runs": runs}


def markdown_table(benchmark: dict[str, Any]) -> str:
    """The benchmark as a markdown table."""
    lines = [f"Dataset {benchmark['dataset_mib']:,.0f} MiB ({benchmark['images']:,} images of "
             f"{'×'.join(map(str, benchmark['image_shape']))}), memory limit {benchmark['memory_limit_mib']:,} MiB.", "",
             "| memory_budget_mb | held | exit | peak memory, cgroup (MiB) | peak RSS (MiB) | images/s |",
             "|---:|---|---|---:|---:|---:|"]
    for run in benchmark["runs"]:
        held = "streamed" if run.get("streamed") else ("in memory" if "streamed" in run else "—")
        exit_text = "0" if run["exit_status"] == 0 else f"{run['exit_status']} ({run.get('outcome', '')[:40]})"
        lines.append(f"| {run['memory_budget_mb']:g} | {held} | {exit_text} | {run['cgroup_peak_mib'] or '—'} "
                     f"| {run.get('peak_rss_mib', '—')} | {run.get('images_per_second', '—')} |")
    return "\n".join(lines)



if __name__ == "__main__":          # the limited child: python -m imgpipe.bench.streaming SHARDS BUDGET RESULT_JSON
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    save_json(train_one_epoch(Path(sys.argv[1]), float(sys.argv[2])), Path(sys.argv[3]))
