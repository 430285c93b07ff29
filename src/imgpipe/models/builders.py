"""Model builders for the three families. Every hyperparameter is an argument.

Each model takes raw pixel values (0..255, any H×W×C) and normalizes them itself with
statistics computed on the training split, so an exported model needs no preprocessing.
The softmax output is float32 even under a mixed-precision policy (GPU training).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from keras import layers

from imgpipe.models.shapes import input_size_problem


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


def _regularizer(l2: float) -> keras.regularizers.Regularizer | None:
    return keras.regularizers.L2(l2) if l2 > 0 else None


def build_cnn(input_shape: tuple[int, ...], num_classes: int, mean: Sequence[float], std: Sequence[float],
              filters: Sequence[int], convs_per_block: int, dense_units: int, dropout: float,
              l2: float) -> keras.Model:
    """Blocks of 3×3 conv-BN-ReLU then 2×2 max-pool, flattened into dense-ReLU, dropout and softmax."""
    inputs = keras.Input(input_shape, name="image")
    x = normalizer(mean, std)(inputs)
    for block, width in enumerate(filters):
        # Block: convolutions at one resolution, then halve it.
        for conv in range(convs_per_block):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_regularizer=_regularizer(l2),
                              name=f"block{block}_conv{conv}")(x)
            x = layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    # Head: flatten → dense → dropout → softmax.
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="flatten_dropout")(x)
    x = layers.Dense(dense_units, activation="relu", kernel_regularizer=_regularizer(l2), name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")


def build_rnn(input_shape: tuple[int, ...], num_classes: int, mean: Sequence[float], std: Sequence[float],
              cell: str, units: int, layers_count: int, bidirectional: bool, dropout: float, l2: float) -> keras.Model:
    """Recurrent layers reading the image one row at a time (row = time step, pixels × channels = features)."""
    height, width, channels = input_shape
    inputs = keras.Input(input_shape, name="image")
    x = normalizer(mean, std)(inputs)
    x = layers.Reshape((height, width * channels), name="rows")(x)
    recurrent = {"lstm": layers.LSTM, "gru": layers.GRU}[cell]
    for index in range(layers_count):
        last = index == layers_count - 1
        rnn = recurrent(units, return_sequences=not last, kernel_regularizer=_regularizer(l2), name=f"{cell}{index}")
        x = layers.Bidirectional(rnn, name=f"bi_{cell}{index}")(x) if bidirectional else rnn(x)
        x = layers.Dropout(dropout, name=f"dropout{index}")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="rnn")


def _transformer_block(x: keras.KerasTensor, index: int, dim: int, heads: int, mlp_ratio: int,
                       dropout: float, l2: float) -> keras.KerasTensor:
    # Self-attention with a residual connection; the scores stay in the graph for inspection.
    attended, _scores = layers.MultiHeadAttention(
        heads, dim // heads, dropout=dropout, kernel_regularizer=_regularizer(l2), name=f"attention{index}",
    )(layers.LayerNormalization(name=f"attention{index}_norm")(x),
      layers.LayerNormalization(name=f"attention{index}_norm_kv")(x), return_attention_scores=True)
    x = layers.Add(name=f"attention{index}_residual")([x, attended])
    # Position-wise MLP with a residual connection.
    hidden = layers.LayerNormalization(name=f"mlp{index}_norm")(x)
    hidden = layers.Dense(dim * mlp_ratio, activation="gelu", kernel_regularizer=_regularizer(l2),
                          name=f"mlp{index}_expand")(hidden)
    hidden = layers.Dropout(dropout, name=f"mlp{index}_dropout")(hidden)
    hidden = layers.Dense(dim, kernel_regularizer=_regularizer(l2), name=f"mlp{index}_project")(hidden)
    return layers.Add(name=f"mlp{index}_residual")([x, hidden])


def build_attention(input_shape: tuple[int, ...], num_classes: int, mean: Sequence[float], std: Sequence[float],
                    dim: int, heads: int, depth: int, mlp_ratio: int, stem_filters: Sequence[int],
                    stem_strides: Sequence[int], dropout: float, l2: float) -> keras.Model:
    """A hybrid vision transformer: convolutional stem → tokens + positions → attention blocks → pooled softmax."""
    inputs = keras.Input(input_shape, name="image")
    x = normalizer(mean, std)(inputs)
    # Stem: 3×3 conv-BN-ReLU layers turn the image into a coarse grid of features (Xiao et al., 2021).
    for index, (width, stride) in enumerate(zip(stem_filters, stem_strides, strict=True)):
        x = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, kernel_regularizer=_regularizer(l2),
                          name=f"stem_conv{index}")(x)
        x = layers.BatchNormalization(name=f"stem_bn{index}")(x)
        x = layers.ReLU(name=f"stem_relu{index}")(x)
    # Tokens: a 1×1 projection of every grid cell to dim, plus a learned position embedding.
    x = layers.Conv2D(dim, 1, name="token_projection")(x)
    grid_height, grid_width = x.shape[1], x.shape[2]
    x = layers.Reshape((grid_height * grid_width, dim), name="tokens")(x)
    x = PositionEmbedding(name="positions")(x)
    for index in range(depth):
        x = _transformer_block(x, index, dim, heads, mlp_ratio, dropout, l2)
    # Head: normalize, average the tokens, classify.
    x = layers.LayerNormalization(name="head_norm")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="attention")


def attention_scores_model(model: keras.Model) -> keras.Model:
    """A model mapping images to every attention layer's scores, shape (N, heads, tokens, tokens)."""
    outputs = [layer.output[1] for layer in model.layers if isinstance(layer, layers.MultiHeadAttention)]
    if not outputs:
        raise ValueError(f"model {model.name!r} has no MultiHeadAttention layer to read scores from.")
    return keras.Model(model.inputs, outputs, name=f"{model.name}_attention_scores")


def build_model(model_name: str, input_shape: tuple[int, ...], num_classes: int, mean: Sequence[float],
                std: Sequence[float], architecture: dict, dropout: float, l2: float) -> keras.Model:
    """Dispatch to the builder of one family with its architecture parameters."""
    if problem := input_size_problem(model_name, architecture, input_shape[0], input_shape[1]):
        raise ValueError(f"{problem}; set preprocess.image_size larger or use fewer downsampling steps.")
    common = {"input_shape": input_shape, "num_classes": num_classes, "mean": mean, "std": std,
              "dropout": dropout, "l2": l2}
    if model_name == "cnn":
        return build_cnn(**common, **architecture)
    if model_name == "rnn":
        arch = dict(architecture)
        return build_rnn(**common, cell=arch["cell"], units=arch["units"], layers_count=arch["layers"],
                         bidirectional=arch["bidirectional"])
    if model_name == "attention":
        return build_attention(**common, **architecture)
    raise ValueError(f"unknown model name {model_name!r}; expected cnn, rnn or attention.")


def load_model(path: Path) -> keras.Model:
    """Load a saved model for inference in Keras safe mode: no code stored in the file is run."""
    return keras.models.load_model(path, compile=False, safe_mode=True)
