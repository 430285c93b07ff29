"""Layers and helpers every model family shares: input normalization, L2 and the position embedding."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers


@keras.saving.register_keras_serializable(package="imgpipe")
class PositionEmbedding(layers.Layer):
    """Adds a learned embedding to each token position."""

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.embedding = self.add_weight(name="embedding", shape=tuple(input_shape[1:]),
                                         initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, tokens: keras.KerasTensor) -> keras.KerasTensor:
        return tokens + self.embedding


def normalizer(mean: Sequence[float], std: Sequence[float]) -> layers.Normalization:
    """Per-channel standardization with fixed training-split statistics."""
    variance = np.square(np.asarray(std, dtype=np.float32))
    return layers.Normalization(axis=-1, mean=list(mean), variance=list(variance), name="normalize")


def regularizer(l2: float) -> keras.regularizers.Regularizer | None:
    """An L2 weight penalty, or None when ``l2`` is 0."""
    return keras.regularizers.L2(l2) if l2 > 0 else None


def classifier(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """The softmax head every family ends with; float32 even under a mixed-precision policy."""
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
