"""The benchmark's FLOP accounting, and one small real run of it."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pytest
from keras import layers

from imgpipe.bench.training import (TIMED_EPOCHS, EpochTimes, forward_flops_per_image, markdown_table,
                                    run_benchmark)
from imgpipe.artifacts.paths import ProjectPaths


def test_dense_and_convolution_flops_follow_the_textbook_formulas() -> None:
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)                    # 2·8·8·3·3·3·4
    x = layers.Flatten()(x)
    outputs = layers.Dense(10)(x)                                       # 2·256·10
    model = keras.Model(inputs, outputs)
    assert forward_flops_per_image(model) == 2 * 8 * 8 * 9 * 3 * 4 + 2 * 256 * 10


def test_recurrent_and_attention_flops_count_every_step_and_token() -> None:
    inputs = keras.Input((5, 6))
    x = layers.GRU(7, return_sequences=True)(inputs)                    # 5 steps · 3 gates · 2·(6+7)·7
    x = layers.MultiHeadAttention(2, 4)(x, x)                           # 4 projections + 2 products
    model = keras.Model(inputs, x)
    gru = 5 * 3 * 2 * (6 + 7) * 7
    attention = 2 * 5 * 7 * 2 * 4 * 4 + 2 * 5 * 5 * 2 * 4 * 2
    assert forward_flops_per_image(model) == gru + attention


def test_epoch_times_give_the_speed_as_fit_runs_and_the_best_epochs() -> None:
    times = EpochTimes(images=1000, wall_seconds=(1.0, 2.0, 1.0, 4.0), cpu_seconds=(1.8, 1.0, 2.0, 2.0))
    assert times.as_run == 4000 / 8.0                                   # waits included
    assert times.best_epoch == 1000.0
    assert times.record(cores=2) == {"images_per_second": [1000.0, 500.0, 1000.0, 250.0],
                                     "cores_busy": [0.9, 0.25, 1.0, 0.25]}


def test_a_small_benchmark_run_measures_every_family(project_root: Path, tmp_path: Path) -> None:
    if not (project_root / "data/raw/train-images-idx3-ubyte.gz").is_file():
        pytest.fail("data/raw is empty: run `make data` (make test does it first)")
    benchmark = run_benchmark(ProjectPaths(project_root), images=512, warmup_images=256)
    table = markdown_table(benchmark)
    assert [family["model"] for family in benchmark["families"]] == ["cnn", "rnn", "attention"]
    for family in benchmark["families"]:
        assert family["naive_images_per_second"] > 0 and family["pipeline_images_per_second"] > 0
        assert family["naive_no_xla_images_per_second"] > 0
        assert 0 < family["pipeline_fraction_of_sgemm"] < 1.5, family
        pipeline = family["deterministic_images_per_second"] or family["pipeline_images_per_second"]
        assert family["pipeline_best_epoch_images_per_second"] >= pipeline
        assert family["naive_best_epoch_images_per_second"] >= family["naive_images_per_second"]
        for way in ("naive", "naive_no_xla", "pipeline_determinism_off", "pipeline"):
            epochs = family["epochs"][way]
            assert len(epochs["images_per_second"]) == len(epochs["cores_busy"]) == TIMED_EPOCHS
            assert all(0 < share <= 1.1 for share in epochs["cores_busy"]), epochs
        assert f"| {family['model']} |" in table
    assert benchmark["sgemm_gflops"] > 0 and benchmark["timed_epochs"] == TIMED_EPOCHS
    assert "| cores busy per epoch, naive / pipeline |" in table
