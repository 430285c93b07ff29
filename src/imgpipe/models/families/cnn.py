"""cnn: blocks of 3×3 conv-BN-ReLU then 2×2 max-pooling, a dense layer, dropout and softmax."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, model_validator

from imgpipe.models.registry import Family, StrictSchema


class CnnArchitecture(StrictSchema):
    filters: list[int] = Field(min_length=1, description="one block per entry, each halving the resolution")
    convs_per_block: int | list[int] = Field(description="3×3 convolutions in every block, or one count per block")
    dense_units: int = Field(gt=0)

    @model_validator(mode="after")
    def _convs_consistent(self) -> "CnnArchitecture":
        counts = self.convs_per_block
        if isinstance(counts, list) and len(counts) != len(self.filters):
            raise ValueError(f"convs_per_block={counts} must be one number or one count for each of the "
                             f"{len(self.filters)} blocks of filters={self.filters}")
        if not all(1 <= count <= 4 for count in self.block_convs()):
            raise ValueError(f"convs_per_block={counts} must be from 1 to 4 convolutions a block")
        return self

    def block_convs(self) -> list[int]:
        """How many convolutions each block has."""
        counts = self.convs_per_block
        return counts if isinstance(counts, list) else [counts] * len(self.filters)


def build(input_shape: tuple[int, ...], num_classes: int, mean: Sequence[float], std: Sequence[float],
          architecture: CnnArchitecture, dropout: float, l2: float):
    """Blocks of 3×3 conv-BN-ReLU then 2×2 max-pool, flattened into dense-ReLU, dropout and softmax."""
    import keras
    from keras import layers

    from imgpipe.models.layers import FusedBatchNormalization, classifier, normalizer, regularizer

    inputs = keras.Input(input_shape, name="image")
    x = normalizer(mean, std)(inputs)
    for block, (width, convs) in enumerate(zip(architecture.filters, architecture.block_convs(), strict=True)):
        # Block: convolutions at one resolution, then halve it.
        for conv in range(convs):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_regularizer=regularizer(l2),
                              name=f"block{block}_conv{conv}")(x)
            x = FusedBatchNormalization(name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    # Head: flatten → dense → dropout → softmax.
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="flatten_dropout")(x)
    x = layers.Dense(architecture.dense_units, activation="relu", kernel_regularizer=regularizer(l2), name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="cnn")


FAMILY = Family(
    name="cnn", rank=10, description="convolution blocks with batch norm and max-pooling, dense head",
    architecture=CnnArchitecture, build=build,
    minimum_side=lambda architecture: 2 ** len(architecture.filters),
    downsampling=lambda architecture: f"{len(architecture.filters)} pooling blocks (filters={architecture.filters})",
    interpretations=("saliency", "grad_cam"),
)
