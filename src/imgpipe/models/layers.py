"""Layers and helpers of the model families: input normalization, fused batch and layer normalization, the fused
GRU, dropout with packed random draws (alone and inside multi-head attention), L2 and the position embedding."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers

from imgpipe.training.fingerprint import gpu_devices


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
        return (_tensorflow_backend() and mask is None and not self.renorm
                and not self.synchronized and len(inputs.shape) == 4 and self.axis in (-1, 3))

    def _affine(self, channels: int) -> tuple:
        import tensorflow as tf

        scale = tf.convert_to_tensor(self.gamma) if self.scale else tf.ones([channels])
        offset = tf.convert_to_tensor(self.beta) if self.center else tf.zeros([channels])
        return scale, offset


@keras.saving.register_keras_serializable(package="imgpipe")
class FusedGRU(layers.GRU):
    """Keras's GRU with the input projections of every time step computed as one matrix product, then the
    recurrence unrolled over the (static) sequence length.

    Same weights, configuration and outputs (to rounding) as ``keras.layers.GRU``, whose CPU path runs a
    ``while`` loop of the whole cell — an input projection, a recurrent one and the gates — once per step: many
    small products and the loop's own overhead (docs/performance.md). Masks, dropout inside the cell, stateful
    or reversed reading, other activations, ``reset_after=False``, sequences longer than
    ``MAX_UNROLLED_STEPS`` or of unknown length, other backends and GPUs (where Keras uses cuDNN) take Keras's
    own path.
    """

    MAX_UNROLLED_STEPS = 64

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._fusable(sequences, mask):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        import tensorflow as tf

        cell, units = self.cell, self.units
        state = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
        kernel, recurrent_kernel = tf.convert_to_tensor(cell.kernel), tf.convert_to_tensor(cell.recurrent_kernel)
        input_bias, recurrent_bias = tf.unstack(tf.convert_to_tensor(cell.bias))
        steps, features = sequences.shape[1], sequences.shape[2]
        projected = tf.matmul(tf.reshape(sequences, [-1, features]), kernel) + input_bias
        # Splits rather than slices: their gradients are concatenations, not zero-padded tensors to add up.
        gate_inputs, candidate_inputs = (tf.unstack(tf.reshape(part, [-1, steps, part.shape[-1]]), axis=1)
                                         for part in tf.split(projected, [2 * units, units], axis=1))
        outputs = []
        for gate_input, candidate_input in zip(gate_inputs, candidate_inputs, strict=True):
            recurrent_gates, recurrent_candidate = tf.split(tf.matmul(state, recurrent_kernel) + recurrent_bias,
                                                            [2 * units, units], axis=1)
            update, reset = tf.split(tf.sigmoid(gate_input + recurrent_gates), 2, axis=1)
            candidate = tf.tanh(candidate_input + reset * recurrent_candidate)
            state = candidate + update * (state - candidate)
            outputs.append(state)
        return state, tf.stack(outputs, axis=1), [state]

    def _fusable(self, sequences: keras.KerasTensor, mask: keras.KerasTensor | None) -> bool:
        cell = self.cell
        steps = sequences.shape[1]
        return (_tensorflow_backend() and mask is None and not self.stateful
                and not self.go_backwards and not cell.dropout and not cell.recurrent_dropout
                and cell.reset_after and cell.use_bias and steps is not None and steps <= self.MAX_UNROLLED_STEPS
                and keras.activations.serialize(cell.activation) == "tanh"
                and keras.activations.serialize(cell.recurrent_activation) == "sigmoid"
                and not gpu_devices())


@keras.saving.register_keras_serializable(package="imgpipe")
class FusedLayerNormalization(layers.LayerNormalization):
    """Keras's layer normalization over the last axis, computed by TensorFlow's fused batch-norm kernel.

    Keras composes it from a dozen element-wise ops and upcasts bfloat16 to float32 for them; the fused kernel,
    fed the tokens as channels (each token normalized over its features), does the statistics and their
    gradients in one op. The tokens go in along the last (NHWC) axis, the layout oneDNN vectorizes; with the
    two transposes it takes 56% of the time of an NCHW layout, forward and backward (docs/performance.md).
    Same weights and outputs (to rounding) as ``keras.layers.LayerNormalization``; other axes, RMS scaling and
    other backends take Keras's own path.
    """

    def call(self, inputs):
        axes = [self.axis] if isinstance(self.axis, int) else list(self.axis)
        rank = len(inputs.shape)
        if (not _tensorflow_backend() or self.rms_scaling or axes not in ([-1], [rank - 1])
                or inputs.shape[-1] is None):
            return super().call(inputs)
        import tensorflow as tf

        features = inputs.shape[-1]
        # NHWC with every row a channel and its features along W: the kernel's vectorized layout.
        columns = tf.reshape(tf.transpose(tf.reshape(inputs, [-1, features])), [1, 1, features, -1])
        dtype = tf.float32
        count = tf.shape(columns)[3]
        normalized, *_ = tf.raw_ops.FusedBatchNormV3(
            x=columns, scale=tf.ones([count], dtype), offset=tf.zeros([count], dtype), mean=tf.zeros([0], dtype),
            variance=tf.zeros([0], dtype), epsilon=self.epsilon, is_training=True, data_format="NHWC")
        outputs = tf.reshape(tf.transpose(tf.reshape(normalized, [features, -1])), tf.shape(inputs))
        if self.scale:
            outputs = outputs * tf.cast(self.gamma, outputs.dtype)
        if self.center:
            outputs = outputs + tf.cast(self.beta, outputs.dtype)
        return tf.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="imgpipe")
class PackedDropout(layers.Dropout):
    """Keras's dropout with its keep-or-drop decisions packed two to a random number: 16 bits each of a 32-bit draw.

    Keras draws one random float per value: for the transformer's attention weights and MLP that was about 10% of
    a training step on a CPU (docs/performance.md). Same rate (rounded to 1/65,536), the kept values scaled so the
    expected output is the input, the same seed generator and inference behaviour as ``keras.layers.Dropout`` —
    but not the same mask for a given seed. Noise shapes and other backends take Keras's path.
    """

    DECISION_LEVELS = 1 << 16

    def call(self, inputs, training=False):
        if not (training and 0.0 < self.rate < 1.0) or self.noise_shape is not None or not _tensorflow_backend():
            return super().call(inputs, training=training)
        import tensorflow as tf

        seed = self.seed_generator.next()
        if seed.dtype != tf.int32:                                   # as Keras's TensorFlow backend casts it
            seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
        count = tf.size(inputs)
        bits = tf.random.stateless_uniform([(count + 1) // 2], seed, minval=None, maxval=None, dtype=tf.uint32)
        decisions = tf.reshape(tf.bitcast(bits, tf.uint16), [-1])[:count]
        dropped = round(self.rate * self.DECISION_LEVELS)
        keep = tf.reshape(decisions >= dropped, tf.shape(inputs))
        scale = tf.cast(self.DECISION_LEVELS / (self.DECISION_LEVELS - dropped), inputs.dtype)
        return tf.where(keep, inputs * scale, tf.zeros([], inputs.dtype))


@keras.saving.register_keras_serializable(package="imgpipe")
class PackedDropoutAttention(layers.MultiHeadAttention):
    """Keras's multi-head attention with ``PackedDropout`` on the attention weights: the same weights, configuration
    and computation as ``keras.layers.MultiHeadAttention`` except for which weights a dropout step drops.

    The attention weights are the largest tensor of a small transformer (batch × heads × tokens², 1.2 million
    values for 49 tokens, 4 heads and batch 128), and drawing their dropout mask was most of the dropout cost.
    """

    def _build_attention(self, rank):
        super()._build_attention(rank)
        self._dropout_layer = PackedDropout(rate=self._dropout, dtype=self.dtype_policy, seed=self.seed)


@keras.saving.register_keras_serializable(package="imgpipe")
class ErfGeluDense(layers.Dense):
    """Keras's dense layer whose exact GELU, x·Φ(x), is computed from erf instead of erfc.

    TensorFlow's ``gelu`` takes ``erfc``, which its CPU kernels evaluate one value at a time (in bfloat16 after a
    conversion each); ``erf`` has a vectorized kernel, several times faster forward and backward. Same weights,
    configuration and outputs (to rounding) as ``keras.layers.Dense`` with ``activation="gelu"``; other
    activations and backends take Keras's path.
    """

    def __init__(self, units: int, activation=None, **kwargs) -> None:
        super().__init__(units, activation=activation, **kwargs)
        if keras.activations.serialize(self.activation) == "gelu" and _tensorflow_backend():
            self.activation = _gelu_by_erf

    def get_config(self) -> dict:
        config = super().get_config()
        if self.activation is _gelu_by_erf:
            config["activation"] = "gelu"
        return config


def _gelu_by_erf(x):
    """Exact GELU, 0.5·x·(1 + erf(x/√2))."""
    import tensorflow as tf

    return 0.5 * x * (1.0 + tf.math.erf(x * 0.7071067811865476))


def _tensorflow_backend() -> bool:
    """Whether Keras runs on TensorFlow, the only backend the fused paths are written for."""
    return keras.backend.backend() == "tensorflow"


STOCK_LAYERS: dict[type, type] = {FusedBatchNormalization: layers.BatchNormalization, FusedGRU: layers.GRU,
                                  FusedLayerNormalization: layers.LayerNormalization, PackedDropout: layers.Dropout,
                                  PackedDropoutAttention: layers.MultiHeadAttention, ErfGeluDense: layers.Dense}
"""Each fused layer and the Keras layer it stands in for (same configuration and weights)."""


def with_keras_layers(model: keras.Model) -> keras.Model:
    """A fresh copy of ``model`` (new weights) with Keras's own layers wherever it has a fused one: the same
    architecture as a user writes it with stock layers, for speed comparisons."""

    def clone(layer: layers.Layer) -> layers.Layer:
        return STOCK_LAYERS.get(type(layer), type(layer)).from_config(layer.get_config())

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
