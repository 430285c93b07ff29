"""Model builders, attention-score retrieval, the tf.data pipeline and a real (tiny) fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from imgpipe.training import batches
from imgpipe.config.schema import model_train_schema
from imgpipe.models import builders as models
from imgpipe.training.recipe import compiled_model
from imgpipe.training import train

ARCHITECTURES = {
    "cnn": {"filters": [8, 16], "convs_per_block": 1, "dense_units": 16},
    "rnn": {"cell": "lstm", "units": 8, "layers": 2, "bidirectional": True, "stem_filters": [], "stem_strides": []},
    "attention": {"dim": 16, "heads": 2, "depth": 1, "mlp_ratio": 2, "stem_filters": [8, 16],
                  "stem_strides": [2, 2]},
}
SETTINGS = {"optimizer": "adam", "learning_rate": 0.01, "momentum": 0.9, "lr_schedule": "constant",
            "warmup_epochs": 0, "epochs": 6, "batch_size": 16, "dropout": 0.0, "l2": 0.0, "label_smoothing": 0.0,
            "early_stopping_patience": 0, "jit_compile": False,
            "augment": {"horizontal_flip": False, "crop_padding": 0, "random_erasing": 0.0},
            "architecture": ARCHITECTURES["cnn"]}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("shape", [(28, 28, 1), (20, 24, 3)])
def test_every_family_builds_for_any_image_shape(name: str, shape: tuple[int, int, int]) -> None:
    model = models.build_model(name, shape, 5, [100.0] * shape[2], [50.0] * shape[2], ARCHITECTURES[name], 0.1, 1e-4)
    probabilities = model.predict(np.zeros((2, *shape), np.float32), verbose=0)
    assert probabilities.shape == (2, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_attention_scores_are_retrievable_after_saving(tmp_path: Path) -> None:
    model = models.build_model("attention", (28, 28, 1), 10, [0.0], [1.0], ARCHITECTURES["attention"], 0.0, 0.0)
    path = tmp_path / "attention.keras"
    train.save_model(model, path)
    loaded = models.load_model(path)
    images = np.random.default_rng(0).integers(0, 255, (3, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    scores = models.attention_scores_model(loaded).predict(images, verbose=0)
    scores = scores if isinstance(scores, np.ndarray) else scores[0]
    assert scores.shape == (3, 2, 49, 49)                       # heads × 7·7 tokens × 7·7 tokens
    np.testing.assert_allclose(scores.sum(axis=-1), 1.0, rtol=1e-5)


def test_dataset_is_deterministic_under_a_seed(stripes: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = stripes
    augment = {"horizontal_flip": True, "crop_padding": 2}

    def first_batch(seed: int) -> np.ndarray:
        data = batches.EpochBatches(images, labels, 3, 16, seed, augment).from_epoch(0)
        return next(iter(data))[0].numpy()

    assert first_batch(5).shape == (16, 12, 12, 1)
    np.testing.assert_array_equal(first_batch(5), first_batch(5))
    assert not np.array_equal(first_batch(5), first_batch(6))


def test_random_crops_shift_each_image_by_its_own_offset_within_the_padding() -> None:
    grid = np.arange(12 * 12, dtype=np.float32).reshape(1, 12, 12, 1) + 1       # every pixel unique, none 0
    images, labels = tf.constant(np.repeat(grid, 64, axis=0)), tf.zeros((64, 3))
    crop = {"horizontal_flip": False, "crop_padding": 2, "random_erasing": 0.0}
    shifted = batches._augmenter(crop, seed=3)(images, labels, 7)[0].numpy()
    np.testing.assert_array_equal(shifted, batches._augmenter(crop, seed=3)(images, labels, 7)[0].numpy())
    padded = np.pad(grid[0, ..., 0], 2)
    offsets = []
    for image in shifted[..., 0]:                 # each is the padded grid cut at one offset of at most 2 each way
        matches = [(row, col) for row in range(5) for col in range(5)
                   if np.array_equal(image, padded[row:row + 12, col:col + 12])]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) >= 15                # per image, not one offset for the whole batch (25 possible)


def test_random_erasing_zeroes_one_rectangle_per_chosen_image_deterministically() -> None:
    images = tf.constant(np.full((64, 20, 20, 1), 200.0, np.float32))
    labels = tf.zeros((64, 3))
    off = {"horizontal_flip": False, "crop_padding": 0, "random_erasing": 0.0}
    on = {**off, "random_erasing": 0.5}
    erased = batches._augmenter(on, seed=3)(images, labels, 7)[0].numpy()
    assert np.array_equal(erased, batches._augmenter(on, seed=3)(images, labels, 7)[0].numpy())
    assert not np.array_equal(erased, batches._augmenter(on, seed=3)(images, labels, 8)[0].numpy())
    zeroed = (erased == 0).reshape(64, -1).mean(axis=1)
    touched = zeroed > 0
    assert 16 <= touched.sum() <= 48                                  # about half of the images
    assert np.all(zeroed[touched] <= 0.30) and np.all(zeroed[touched] >= 0.01)   # 2–25% of the area, rounded
    for image in erased[touched, ..., 0]:                             # one axis-aligned rectangle
        rows, cols = np.nonzero(image == 0)
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == len(rows)
    assert batches._augmenter(off, seed=3)(images, labels, 7)[0].numpy().min() == 200.0


def test_channel_statistics_per_channel() -> None:
    images = np.stack([np.full((2, 2), 10), np.full((2, 2), 30)], axis=-1)[np.newaxis].astype(np.uint8)
    mean, std = batches.channel_statistics(np.concatenate([images, images]))
    assert mean == [10.0, 30.0] and std == [1.0, 1.0]           # zero spread falls back to 1


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_real_fit_learns_a_learnable_problem(stripes: tuple[np.ndarray, np.ndarray], optimizer: str) -> None:
    train.seed_everything(0, deterministic=True)
    images, labels = stripes
    mean, std = batches.channel_statistics(images)
    data = batches.EpochBatches(images, labels, 3, 16, 0, None)
    settings = model_train_schema("cnn").model_validate({
        **SETTINGS, "optimizer": optimizer, "learning_rate": 0.01 if optimizer == "adam" else 0.05,
        "lr_schedule": "cosine", "warmup_epochs": 1, "epochs": 8, "label_smoothing": 0.1})
    model = compiled_model("cnn", settings, images.shape[1:], 3, mean, std, data.steps)
    result = train.fit(model, data, batches.validation_dataset(images, labels, 3, 64), 8, len(labels), 0, [])
    assert result.epochs_run == 8
    assert max(result.history["val_accuracy"]) > 0.9            # chance is 1/3
    facts = train.training_facts(model, result, {"batch_size": 16, "optimizer": optimizer})
    assert facts["parameters"] == model.count_params() and facts["images_per_second"] > 0
