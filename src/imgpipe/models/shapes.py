"""The smallest image each model family can read, shared by the params check and the model builders."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def minimum_input_side(model_name: str, architecture: Mapping[str, Any]) -> int:
    """Shortest image side (pixels) the family's downsampling leaves at least one pixel of."""
    if model_name == "cnn":
        return 2 ** len(architecture["filters"])
    if model_name == "attention":
        return math.prod(int(stride) for stride in architecture["stem_strides"])
    return 1


def input_size_problem(model_name: str, architecture: Mapping[str, Any], height: int, width: int) -> str | None:
    """Why a ``height``×``width`` image is too small for the model, or None when it fits."""
    needed = minimum_input_side(model_name, architecture)
    if min(height, width) >= needed:
        return None
    cause = (f"{len(architecture['filters'])} pooling blocks (filters={list(architecture['filters'])})"
             if model_name == "cnn" else f"stem convolutions of strides {list(architecture.get('stem_strides', []))}")
    return (f"{height}×{width} images are too small for the {model_name} model: its {cause} need at least "
            f"{needed} pixels per side")
