"""One small real run of the preprocessing benchmark, and the folder-dataset command."""

from __future__ import annotations

import json
from pathlib import Path

from imgpipe.bench.preprocess import markdown_table, run_benchmark
from imgpipe.data.sources import list_class_folders
from tests.helpers import run


def test_a_small_preprocessing_benchmark_measures_each_worker_count(tmp_path: Path) -> None:
    benchmark = run_benchmark(images=240, image_size=32, worker_counts=[1, 2])
    table = markdown_table(benchmark)
    assert [r["workers"] for r in benchmark["runs"]] == [1, 2]
    for result in benchmark["runs"]:
        assert result["images"] == 240 and result["kept"] == 240
        assert result["images_per_second"] > 0 and result["peak_rss_mib"] > 0
    assert benchmark["runs"][0]["speed_up_vs_one_worker"] == 1.0
    assert table.count("\n") == 3 and "| 2 | 240 |" in table


def test_make_folder_dataset_writes_classes_and_broken_files(project_root: Path, tmp_path: Path) -> None:
    run(["imgpipe", "make-folder-dataset", str(tmp_path / "shapes"), "--per-class", "4", "--with-broken-files"],
        project_root)
    listing = list_class_folders(tmp_path / "shapes")
    assert listing.class_names == ("circle", "square", "triangle")
    assert len(listing.files) == 12 + 8 and len(listing.passed_over) == 1  # 8 broken images, one README.txt
