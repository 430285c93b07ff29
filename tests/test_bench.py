"""The benchmark's FLOP accounting, and one small real run of it."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pytest
from keras import layers

from imgpipe.bench.training import forward_flops_per_image, markdown_table, run_benchmark
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
        assert f"| {family['model']} |" in table
    assert benchmark["sgemm_gflops"] > 0
