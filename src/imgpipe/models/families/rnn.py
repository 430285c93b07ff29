"""rnn: recurrent layers (GRU or LSTM) reading the image one row per time step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from imgpipe.models.registry import Family, StrictSchema


class RnnArchitecture(StrictSchema):
    cell: Literal["lstm", "gru"]
    units: int = Field(gt=0)
    layers: int = Field(ge=1, le=4)
    bidirectional: bool


def build(input_shape: tuple[int, ...], num_classes: int, mean: Sequence[float], std: Sequence[float],
          architecture: RnnArchitecture, dropout: float, l2: float):
    """Recurrent layers reading the image one row at a time (row = time step, pixels × channels = features)."""
    import keras
    from keras import layers

    from imgpipe.models.layers import classifier, normalizer, regularizer

    height, width, channels = input_shape
    cell = architecture.cell
    inputs = keras.Input(input_shape, name="image")
    x = normalizer(mean, std)(inputs)
    x = layers.Reshape((height, width * channels), name="rows")(x)
    recurrent = {"lstm": layers.LSTM, "gru": layers.GRU}[cell]
    for index in range(architecture.layers):
        last = index == architecture.layers - 1
        rnn = recurrent(architecture.units, return_sequences=not last, kernel_regularizer=regularizer(l2),
                        name=f"{cell}{index}")
        x = layers.Bidirectional(rnn, name=f"bi_{cell}{index}")(x) if architecture.bidirectional else rnn(x)
        x = layers.Dropout(dropout, name=f"dropout{index}")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="rnn")


FAMILY = Family(
    name="rnn", rank=20, description="recurrent layers reading the image one row per time step",
    architecture=RnnArchitecture, build=build,
    minimum_side=lambda architecture: 1, downsampling=lambda architecture: "rows",
    interpretations=("saliency",),
)
