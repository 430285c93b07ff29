"""``imgpipe bench-preprocess``: decoding speed and peak memory on a generated folder of JPEGs.

A folder of ``images`` RGB JPEGs of varied sizes (three classes of shapes) is generated once,
then the preprocess stage's own code (list → decode on N processes → clean → save) runs on it
once per worker count, each in a fresh process so its peak memory is its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any


from imgpipe.data import synthetic
from imgpipe.data.decode import worker_count
from imgpipe.config.schema import PreprocessParams
from imgpipe.data.preprocess import clean, cleaning_metrics, load_raw, save_dataset

LOGGER = logging.getLogger(__name__)
JPEG_ONLY = (("jpg", "JPEG", "RGB"),)


def _generate_part(job: tuple[Path, int, int]) -> None:
    root, per_class, seed = job
    synthetic.write_shapes_dataset(root, per_class, seed=seed, sizes=(80, 240), variants=JPEG_ONLY)


def generate_jpegs(folder: Path, images: int) -> None:
    """``images`` JPEGs in three class folders, written in parallel parts (deterministic per part)."""
    parts = 8
    per_part = images // (parts * len(synthetic.SHAPES))
    with multiprocessing.get_context("fork").Pool(worker_count(0)) as pool:
        pool.map(_generate_part, [(folder / f"part{part}", per_part, part) for part in range(parts)])
    for part in range(parts):      # merge parts into one folder per class (part folders become nested folders)
        for shape in synthetic.SHAPES:
            target = folder / "data" / "raw" / "jpegs" / shape / f"part{part}"
            target.parent.mkdir(parents=True, exist_ok=True)
            (folder / f"part{part}" / shape).rename(target)


def _measure(project: Path, workers: int, image_size: int, queue: multiprocessing.Queue) -> None:
    params = PreprocessParams.model_validate({"source": "folder", "path": "data/raw/jpegs", "class_names": [], "image_size": [image_size] * 2,
              "channels": 3, "resize": "crop", "min_side": 8, "max_pixels": 50_000_000, "min_images_per_class": 1,
              "blank_max_std": 0.0, "drop_exact_duplicates": True, "drop_conflicting_duplicates": True,
              "workers": workers})
    started = time.perf_counter()
    raw = load_raw(params, project, project / f"decoded-{workers}.npy")
    keep, report = clean(raw, params)
    save_dataset(raw, keep, project / f"dataset-{workers}.npz")
    seconds = time.perf_counter() - started
    queue.put({"workers": workers, "images": len(raw.sources), "kept": int(keep.sum()), "seconds": round(seconds, 2),
               "images_per_second": round(len(raw.sources) / seconds, 1),
               "decode_images_per_second": cleaning_metrics(report, raw)["images_per_second"],
               "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "peak_worker_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
               "decoded_dataset_mib": round(len(raw.sources) * image_size ** 2 * 3 / 2 ** 20, 1)})


def measure(project: Path, workers: int, image_size: int) -> dict[str, Any]:
    """One preprocessing run in a fresh process; its timing and peak memory."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(project, workers, image_size, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def run_benchmark(images: int, image_size: int, worker_counts: list[int]) -> dict[str, Any]:
    """Generate the JPEG folder, then measure each worker count on it."""
    with tempfile.TemporaryDirectory(prefix="imgpipe-bench-") as scratch:
        project = Path(scratch)
        started = time.perf_counter()
        generate_jpegs(project, images)
        LOGGER.info("generated %d JPEGs in %.1f s", images, time.perf_counter() - started)
        runs = [measure(project, workers, image_size) for workers in worker_counts]
    for run in runs:
        run["speed_up_vs_one_worker"] = round(run["images_per_second"] / runs[0]["images_per_second"], 2)
    return {"images": images, "image_size": [image_size, image_size, 3], "cpus": worker_count(0), "runs": runs}


def markdown_table(benchmark: dict[str, Any]) -> str:
    """The benchmark as a markdown table."""
    lines = ["| workers | JPEGs | images/s (end to end) | speed-up | peak RSS, main (MiB) | peak RSS, a worker (MiB) "
             "| decoded dataset (MiB) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['workers']} | {r['images']:,} | {r['images_per_second']:,.0f} | {r['speed_up_vs_one_worker']:.2f}× "
              f"| {r['peak_rss_mib']:,.0f} | {r['peak_worker_rss_mib']:,.0f} | {r['decoded_dataset_mib']:,.0f} |"
              for r in benchmark["runs"]]
    return "\n".join(lines)



__all__ = ["generate_jpegs", "markdown_table", "measure", "run_benchmark"]
