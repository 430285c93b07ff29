"""attention: a hybrid vision transformer — convolutional stem, tokens with positions, self-attention blocks."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, model_validator

from imgpipe.models.registry import Family
from imgpipe.models.stem import ConvStem, conv_stem, stem_description, stem_downsampling


class AttentionArchitecture(ConvStem):
    dim: int = Field(gt=0)
    heads: int = Field(ge=1)
    depth: int = Field(ge=1, le=12)
    mlp_ratio: int = Field(ge=1)
    stem_filters: list[int] = Field(min_length=1, description="widths of the stem's 3×3 conv-BN-ReLU layers")

    @model_validator(mode="after")
    def _consistent(self) -> "AttentionArchitecture":
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        return self


def _transformer_block(x, index: int, dim: int, heads: int, mlp_ratio: int, dropout: float, l2: float):
    from keras import layers

    from imgpipe.models.layers import (ErfGeluDense, FusedLayerNormalization, PackedDropout, PackedDropoutAttention,
                                       regularizer)

    # Self-attention with a residual connection; the scores stay in the graph for inspection.
    attended, _scores = PackedDropoutAttention(
        heads, dim // heads, dropout=dropout, kernel_regularizer=regularizer(l2), name=f"attention{index}",
    )(FusedLayerNormalization(name=f"attention{index}_norm")(x),
      FusedLayerNormalization(name=f"attention{index}_norm_kv")(x), return_attention_scores=True)
    x = layers.Add(name=f"attention{index}_residual")([x, attended])
    # Position-wise MLP with a residual connection.
    hidden = FusedLayerNormalization(name=f"mlp{index}_norm")(x)
    hidden = ErfGeluDense(dim * mlp_ratio, activation="gelu", kernel_regularizer=regularizer(l2),
                          name=f"mlp{index}_expand")(hidden)
    hidden = PackedDropout(dropout, name=f"mlp{index}_dropout")(hidden)
    hidden = layers.Dense(dim, kernel_regularizer=regularizer(l2), name=f"mlp{index}_project")(hidden)
    return layers.Add(name=f"mlp{index}_residual")([x, hidden])


def build(input_shape: tuple[int, ...], num_classes: int, mean: Sequence[float], std: Sequence[float],
          architecture: AttentionArchitecture, dropout: float, l2: float):
    """Convolutional stem → tokens + positions → attention blocks → pooled softmax."""
    import keras
    from keras import layers

    from imgpipe.models.layers import FusedLayerNormalization, PackedDropout, PositionEmbedding, classifier, normalizer

    inputs = keras.Input(input_shape, name="image")
    x = normalizer(mean, std)(inputs)
    # Stem: 3×3 conv-BN-ReLU layers turn the image into a coarse grid of features (Xiao et al., 2021).
    x = conv_stem(x, architecture, l2)
    # Tokens: a 1×1 projection of every grid cell to dim, plus a learned position embedding.
    x = layers.Conv2D(architecture.dim, 1, name="token_projection")(x)
    grid_height, grid_width = x.shape[1], x.shape[2]
    x = layers.Reshape((grid_height * grid_width, architecture.dim), name="tokens")(x)
    x = PositionEmbedding(name="positions")(x)
    for index in range(architecture.depth):
        x = _transformer_block(x, index, architecture.dim, architecture.heads, architecture.mlp_ratio, dropout, l2)
    # Head: normalize, average the tokens, classify.
    x = FusedLayerNormalization(name="head_norm")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    x = PackedDropout(dropout, name="dropout")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="attention")


FAMILY = Family(
    name="attention", rank=30, description="a hybrid vision transformer: conv stem, tokens, self-attention blocks",
    architecture=AttentionArchitecture, build=build,
    minimum_side=stem_downsampling,
    downsampling=stem_description,
    interpretations=("saliency", "attention"),
)
