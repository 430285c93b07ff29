"""Precision choice, test-time augmentation (in Keras, saved and exported), weight EMA, the finite training
dataset, and the time-to-accuracy race on a few real images."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from imgpipe.bench import time_to_accuracy
from imgpipe.data.preprocess import read_idx_images
from imgpipe.models import builders as models
from imgpipe.models import tta
from imgpipe.config.schema import load_params
from imgpipe.serving import export
from imgpipe.training import batches, fingerprint, precision, train

AUGMENT = {"horizontal_flip": True, "crop_padding": 2, "random_erasing": 0.0}


def test_auto_precision_picks_bfloat16_with_amx_or_on_amd_avx512_bf16_and_float16_on_a_gpu() -> None:
    amx = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    assert precision.auto_policy(amx, False, "GenuineIntel") == "mixed_bfloat16"
    assert precision.auto_policy(frozenset({"avx512f", "avx512_bf16"}), False, "GenuineIntel") == "float32"
    assert precision.auto_policy(frozenset({"avx512f", "avx512_bf16"}), False, "AuthenticAMD") == "mixed_bfloat16"
    assert precision.auto_policy(frozenset({"avx2", "fma"}), False, "AuthenticAMD") == "float32"
    assert precision.resolve_precision("auto", frozenset({"avx512_bf16"}), has_gpu=False, vendor="") == "float32"
    assert precision.auto_policy(frozenset(), True) == "mixed_float16"
    assert precision.resolve_precision("mixed_bfloat16", frozenset(), has_gpu=False) == "mixed_bfloat16"
    assert precision.resolve_precision("float32", frozenset({"amx_bf16"}), has_gpu=False) == "float32"
    with pytest.raises(ValueError, match="precision='bf16'.*float32, mixed_bfloat16, auto"):
        precision.resolve_precision("bf16")


def test_cpu_flags_are_read_from_a_cpuinfo_file(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx512f amx_bf16\n\n"
                       "processor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu\n")
    assert fingerprint.cpu_flags(cpuinfo) == {"fpu", "avx512f", "amx_bf16"}
    assert fingerprint.cpu_vendor(cpuinfo) == "AuthenticAMD"
    assert fingerprint.cpu_flags(tmp_path / "missing") == frozenset()
    assert fingerprint.cpu_vendor(tmp_path / "missing") == ""


def test_views_mirror_and_shift_with_zero_fill() -> None:
    images = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4, 1) + 1
    mirrored = tta.View(mirror=True)(images).numpy()
    np.testing.assert_array_equal(mirrored, images[:, :, ::-1])
    down_right = tta.View(shift=(1, 1))(images).numpy()
    np.testing.assert_array_equal(down_right[:, 1:, 1:], images[:, :-1, :-1])
    assert not down_right[:, 0].any() and not down_right[:, :, 0].any()
    up_left = tta.View(shift=(-1, -1))(images).numpy()
    np.testing.assert_array_equal(up_left[:, :-1, :-1], images[:, 1:, 1:])
    assert len(tta.views("none")) == 1 and len(tta.views("mirror")) == 2 and len(tta.views("mirror_translate")) == 6
    with pytest.raises(ValueError, match="test_time_augmentation='flip'"):
        tta.views("flip")


def _small_cnn() -> keras.Model:
    keras.utils.set_random_seed(3)
    return models.build_model("cnn", (12, 12, 1), 3, [100.0], [50.0],
                              {"filters": [4, 8], "convs_per_block": 2, "dense_units": 8}, dropout=0.0, l2=0.0)


def test_tta_model_averages_the_views_and_survives_saving_and_export(tmp_path: Path) -> None:
    model = _small_cnn()
    images = np.random.default_rng(0).integers(0, 256, (5, 12, 12, 1)).astype(np.uint8)
    pixels = images.astype(np.float32)
    assert tta.with_test_time_augmentation(model, "none") is model
    wrapped = tta.with_test_time_augmentation(model, "mirror")
    expected = (model.predict(pixels, verbose=0) + model.predict(pixels[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(wrapped.predict(pixels, verbose=0), expected, atol=1e-6)

    six = tta.with_test_time_augmentation(model, "mirror_translate")
    probabilities = six.predict(pixels, verbose=0)
    train.save_model(six, tmp_path / "six.keras")
    np.testing.assert_allclose(models.load_model(tmp_path / "six.keras").predict(pixels, verbose=0), probabilities,
                               atol=1e-6)
    served = export.predict_probabilities(
        export.load_serving(export.export_model(six, ("a", "b", "c"), tmp_path / "exported", 1)), images)
    np.testing.assert_allclose(served, probabilities, atol=1e-5)


def test_ema_weights_replace_the_trained_ones_when_fit_ends() -> None:
    optimizer = train.make_optimizer("sgd", 0.1, 0.9, "constant", 0, 2, 4, ema_momentum=0.5)
    assert optimizer.use_ema and optimizer.ema_momentum == 0.5
    assert not train.make_optimizer("adam", 0.1, 0.9, "constant", 0, 2, 4).use_ema
    model = _small_cnn()
    train.compile_model(model, optimizer, 0.0, False)
    x = np.random.default_rng(1).integers(0, 256, (32, 12, 12, 1)).astype(np.float32)
    y = keras.utils.to_categorical(np.arange(32) % 3, 3)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    averages = optimizer._model_variables_moving_average
    for variable, average in zip(model.trainable_variables, averages, strict=True):
        np.testing.assert_allclose(variable.numpy(), average.numpy(), atol=1e-6)


def test_a_finite_training_dataset_holds_exactly_the_epochs_of_the_endless_one() -> None:
    rng = np.random.default_rng(2)
    epochs = batches.EpochBatches(rng.integers(0, 256, (40, 6, 6, 1), dtype=np.uint8), rng.integers(0, 3, 40), 3, 16,
                                  5, AUGMENT)
    finite = [x.numpy() for x, _ in epochs.from_epoch(1, 3)]
    endless = [x.numpy() for x, _ in epochs.from_epoch(1).take(2 * epochs.steps)]
    assert len(finite) == 2 * epochs.steps
    for got, expected in zip(finite, endless, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_curve_time_to_an_accuracy_and_the_race_ratio() -> None:
    peer = time_to_accuracy.Curve([10.0, 20.0, 30.0], [0.80, 0.85, 0.88])
    pipeline = time_to_accuracy.Curve([4.0, 8.0, 12.0], [0.84, 0.89, 0.91])
    result = time_to_accuracy.race("cnn", peer, pipeline)
    assert result.pipeline_seconds_to_peer_accuracy == 8.0 and result.ratio_to_peer_time == pytest.approx(8 / 30, abs=1e-3)
    slow = time_to_accuracy.race("cnn", peer, time_to_accuracy.Curve([40.0], [0.5]))
    assert slow.pipeline_seconds_to_peer_accuracy is None and slow.ratio_to_peer_time is None
    assert "not reached" in time_to_accuracy.markdown_table(
        {"families": [vars(slow)], "images": 1, "val_images": 1, "peer_epochs": 12, "machine": {"cpu_count": 2}})


def test_the_race_can_be_limited_to_some_families_and_names_one_without_a_peer() -> None:
    assert time_to_accuracy.raced_models(None) == ["cnn", "rnn", "attention"]
    assert time_to_accuracy.raced_models(["attention", "cnn"]) == ["cnn", "attention"]
    with pytest.raises(ValueError, match="--race-models mlp: no tutorial peer"):
        time_to_accuracy.raced_models(["mlp", "cnn"])


def test_a_small_race_trains_every_peer_and_recipe(project_root: Path) -> None:
    raw = project_root / "data/raw/train-images-idx3-ubyte.gz"
    if not raw.is_file():
        pytest.fail("data/raw is empty: run `make data` (make test does it first)")
    params = load_params(project_root / "tests/tiny_params.yaml")
    x, y = read_idx_images(raw, 384)
    results = time_to_accuracy.race_families(params, x[:256], y[:256], x[256:], y[256:], peer_epochs=2)
    assert [r.model for r in results] == ["cnn", "rnn", "attention"]
    for result in results:
        assert len(result.peer.accuracy) == 2 and len(result.pipeline.accuracy) == getattr(params.train, result.model).epochs
        assert result.peer_final_accuracy == pytest.approx(result.peer.accuracy[-1], abs=1e-4)
        assert all(later > earlier for earlier, later in zip(result.pipeline.seconds, result.pipeline.seconds[1:]))
    assert keras.mixed_precision.global_policy().name == "float32"
