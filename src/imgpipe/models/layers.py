"""Layers and helpers every model family shares: input normalization, fused batch normalization, L2 and the
position embedding."""

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


@keras.saving.register_keras_serializable(package="imgpipe")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras's batch normalization, computed by TensorFlow's fused kernel for 4-D channels-last inputs.

    Same weights, moving-average update and outputs (to rounding) as ``keras.layers.BatchNormalization``, whose
    TensorFlow path composes a dozen element-wise ops (moments, normalization and their gradients) and upcasts
    bfloat16 to float32 for them: on a CPU that made batch norm, not the convolutions, most of a conv block's
    training step. One fused op, in the compute dtype, is several times faster (docs/performance.md). Masks,
    other ranks or axes, renormalization, synchronized statistics and other backends take Keras's own path.
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        scale, offset = self._affine(inputs.shape[-1])
        if training and self.trainable:
            outputs, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=scale, offset=offset, mean=tf.zeros([0]), variance=tf.zeros([0]),
                epsilon=self.epsilon, is_training=True)
            # The kernel returns the variance with Bessel's correction; Keras's moving average takes the biased one.
            count = tf.cast(tf.size(inputs, out_type=tf.int64) // inputs.shape[-1], tf.float32)
            variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
            return outputs
        outputs, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=scale, offset=offset, mean=tf.convert_to_tensor(self.moving_mean),
            variance=tf.convert_to_tensor(self.moving_variance), epsilon=self.epsilon, is_training=False)
        return outputs

    def _fusable(self, inputs: keras.KerasTensor, mask: keras.KerasTensor | None) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and not self.synchronized and len(inputs.shape) == 4 and self.axis in (-1, 3))

    def _affine(self, channels: int) -> tuple:
        import tensorflow as tf

        scale = tf.convert_to_tensor(self.gamma) if self.scale else tf.ones([channels])
        offset = tf.convert_to_tensor(self.beta) if self.center else tf.zeros([channels])
        return scale, offset


def with_keras_batch_norm(model: keras.Model) -> keras.Model:
    """A fresh copy of ``model`` (new weights) with Keras's own batch-norm layer wherever it has the fused one:
    the same architecture as a user writes it with stock layers, for speed comparisons."""

    def clone(layer: layers.Layer) -> layers.Layer:
        kind = layers.BatchNormalization if isinstance(layer, FusedBatchNormalization) else type(layer)
        return kind.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


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
