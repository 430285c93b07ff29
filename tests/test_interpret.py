"""Interpretability maps: shapes, ranges, and saliency that is zero where a model cannot look."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from imgpipe.evaluation import interpret
from imgpipe.models import builders as models
from tests.test_models_and_training import ARCHITECTURES


def test_saliency_is_zero_where_the_model_does_not_look() -> None:
    inputs = keras.Input((8, 8, 1))
    left_half = keras.layers.Cropping2D(((0, 0), (0, 4)))(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(left_half))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).normal(size=(5, 8, 8, 1)).astype(np.float32)
    saliency = interpret.gradient_saliency(model, images)
    assert saliency.shape == (5, 8, 8)
    assert np.all(saliency[:, :, 4:] == 0) and np.all(saliency.max(axis=(1, 2)) == 1.0)


@pytest.mark.parametrize(("name", "methods"), [("cnn", {"saliency", "grad_cam"}), ("rnn", {"saliency"}),
                                                ("attention", {"saliency", "attention"})])
def test_each_family_gets_its_maps(name: str, methods: set[str]) -> None:
    model = models.build_model(name, (28, 28, 1), 10, [0.0], [1.0], ARCHITECTURES[name], 0.0, 0.0)
    images = np.random.default_rng(1).integers(0, 255, (3, 28, 28, 1)).astype(np.float32)
    maps = interpret.explain(model, images, name)
    assert set(maps) == methods
    for values in maps.values():
        assert values.shape == (3, 28, 28) and values.min() >= 0.0 and values.max() <= 1.0


def test_sample_indices_are_seeded_and_balanced() -> None:
    labels = np.repeat(np.arange(4), 10)
    chosen = interpret.sample_indices(labels, 2, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [2, 2, 2, 2]
    assert np.array_equal(chosen, interpret.sample_indices(labels, 2, seed=0))
