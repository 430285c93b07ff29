"""rnn: recurrent layers (GRU or LSTM) reading one row per time step — of the image, or of a conv stem's features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from imgpipe.models.registry import Family
from imgpipe.models.stem import ConvStem, conv_stem, stem_description, stem_downsampling


class RnnArchitecture(ConvStem):
    cell: Literal["lstm", "gru"]
    units: int = Field(gt=0)
    layers: int = Field(ge=1, le=4)
    bidirectional: bool


def build(input_shape: tuple[int, ...], num_classes: int, mean: Sequence[float], std: Sequence[float],
          architecture: RnnArchitecture, dropout: float, l2: float):
    """Recurrent layers reading one row at a time (row = time step, pixels × channels = features).

    With a stem, the rows are those of its feature map: a stride-2 stem halves the sequence and gives
    each step the features of a 3×3 neighbourhood instead of raw pixels.
    """
    import keras
    from keras import layers

    from imgpipe.models.layers import FusedGRU, classifier, normalizer, regularizer

    cell = architecture.cell
    inputs = keras.Input(input_shape, name="image")
    x = conv_stem(normalizer(mean, std)(inputs), architecture, l2)
    height, width, channels = x.shape[1:]
    x = layers.Reshape((height, width * channels), name="rows")(x)
    recurrent = {"lstm": layers.LSTM, "gru": FusedGRU}[cell]
    for index in range(architecture.layers):
        last = index == architecture.layers - 1
        rnn = recurrent(architecture.units, return_sequences=not last, kernel_regularizer=regularizer(l2),
                        name=f"{cell}{index}")
        x = layers.Bidirectional(rnn, name=f"bi_{cell}{index}")(x) if architecture.bidirectional else rnn(x)
        x = layers.Dropout(dropout, name=f"dropout{index}")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="rnn")


FAMILY = Family(
    name="rnn", rank=20, description="recurrent layers reading one row per time step (of a conv stem's features)",
    architecture=RnnArchitecture, build=build, minimum_side=stem_downsampling,
    downsampling=stem_description,
    interpretations=("saliency",),
)
