"""Build a model of any registered family, and load a saved one.

Each model takes raw pixel values (0..255, any H×W×C) and normalizes them itself with
statistics computed on the training split, so an exported model needs no preprocessing.
The softmax output is float32 even under a mixed-precision policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
from keras import layers

from imgpipe.models import layers as shared_layers  # noqa: F401  (registers PositionEmbedding for loading)
from imgpipe.models.registry import family


def build_model(model_name: str, input_shape: tuple[int, ...], num_classes: int, mean: Sequence[float],
                std: Sequence[float], architecture: Any, dropout: float, l2: float) -> keras.Model:
    """Build the family's model; ``architecture`` is its schema object (or the same as a mapping)."""
    entry = family(model_name)
    if isinstance(architecture, Mapping):
        architecture = entry.architecture.model_validate(dict(architecture))
    if problem := entry.input_size_problem(architecture, input_shape[0], input_shape[1]):
        raise ValueError(f"{problem}; set preprocess.image_size larger or use fewer downsampling steps.")
    return entry.build(tuple(input_shape), num_classes, mean, std, architecture, dropout, l2)


def attention_scores_model(model: keras.Model) -> keras.Model:
    """A model mapping images to every attention layer's scores, shape (N, heads, tokens, tokens)."""
    outputs = [layer.output[1] for layer in model.layers if isinstance(layer, layers.MultiHeadAttention)]
    if not outputs:
        raise ValueError(f"model {model.name!r} has no MultiHeadAttention layer to read scores from.")
    return keras.Model(model.inputs, outputs, name=f"{model.name}_attention_scores")


def load_model(path: Path) -> keras.Model:
    """Load a saved model for inference in Keras safe mode: no code stored in the file is run."""
    return keras.models.load_model(path, compile=False, safe_mode=True)
