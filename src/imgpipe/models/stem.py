"""The convolutional stem the rnn and attention families share: 3×3 conv-BN-ReLU layers, one stride each."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, model_validator

from imgpipe.models.registry import StrictSchema


class ConvStem(StrictSchema):
    """``stem_filters`` and ``stem_strides`` of an architecture section (an empty stem reads the raw image)."""

    stem_filters: list[int] = Field(description="widths of the stem's 3×3 conv-BN-ReLU layers")
    stem_strides: list[int] = Field(description="the stride of each stem convolution (1 to 4)")

    @model_validator(mode="after")
    def _stem_consistent(self) -> "ConvStem":
        if len(self.stem_filters) != len(self.stem_strides) or not all(1 <= s <= 4 for s in self.stem_strides):
            raise ValueError(f"stem_strides={self.stem_strides} must hold one stride from 1 to 4 for each of "
                             f"stem_filters={self.stem_filters}")
        if self.stem_filters and min(self.stem_filters) < 1:
            raise ValueError(f"stem_filters={self.stem_filters} must all be at least 1")
        return self


def stem_downsampling(architecture: ConvStem) -> int:
    """How many times smaller each side of the image leaves the stem (the product of its strides)."""
    return math.prod(architecture.stem_strides)


def stem_description(architecture: ConvStem) -> str:
    """What in the architecture sets its smallest readable image (for error messages)."""
    return f"stem convolutions of strides {architecture.stem_strides}"


def conv_stem(x: Any, architecture: ConvStem, l2: float) -> Any:
    """Apply the stem's conv-BN-ReLU layers to ``x`` (a Keras tensor); no layers for an empty stem."""
    from keras import layers

    from imgpipe.models.layers import FusedBatchNormalization, regularizer

    for index, (width, stride) in enumerate(zip(architecture.stem_filters, architecture.stem_strides, strict=True)):
        x = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, kernel_regularizer=regularizer(l2),
                          name=f"stem_conv{index}")(x)
        x = FusedBatchNormalization(name=f"stem_bn{index}")(x)
        x = layers.ReLU(name=f"stem_relu{index}")(x)
    return x
