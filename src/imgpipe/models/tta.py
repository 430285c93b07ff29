"""Test-time augmentation inside the model: the average of the probabilities of a few views of each image.

The views are built by Keras layers in the graph, so the evaluate stage, the exported SavedModel and
``imgpipe predict`` all compute the same averaged probabilities from the same raw pixels.

Modes (``evaluate.test_time_augmentation.<model>``):

* ``none``: the image as it is (one view);
* ``mirror``: the image and its left-right mirror (two views);
* ``mirror_translate``: the image and its mirror, each as it is and shifted by one pixel down-right and
  one pixel up-left (six views; the airbench recipe's test-time augmentation).
"""

from __future__ import annotations

import keras
from keras import layers, ops

TTA_MODES = ("none", "mirror", "mirror_translate")


@keras.saving.register_keras_serializable(package="imgpipe")
class View(layers.Layer):
    """One view of an image batch: optionally mirrored left-right, then shifted by whole pixels (zeros fill in)."""

    def __init__(self, mirror: bool = False, shift: tuple[int, int] = (0, 0), **kwargs) -> None:
        super().__init__(**kwargs)
        self.mirror = bool(mirror)
        self.shift = (int(shift[0]), int(shift[1]))

    def call(self, images: keras.KerasTensor) -> keras.KerasTensor:
        if self.mirror:
            images = ops.flip(images, axis=2)
        rows, cols = self.shift
        if rows or cols:
            height, width = images.shape[1], images.shape[2]
            padded = ops.pad(images, [[0, 0], [abs(rows), abs(rows)], [abs(cols), abs(cols)], [0, 0]])
            top, left = abs(rows) - rows, abs(cols) - cols
            images = padded[:, top:top + height, left:left + width, :]
        return images

    def get_config(self) -> dict:
        return {**super().get_config(), "mirror": self.mirror, "shift": list(self.shift)}


def views(mode: str) -> list[tuple[bool, tuple[int, int]]]:
    """The (mirror, (rows, cols) shift) of each view a mode averages over."""
    if mode not in TTA_MODES:
        raise ValueError(f"test_time_augmentation={mode!r} is not known; expected one of {', '.join(TTA_MODES)}.")
    mirrors = [False] if mode == "none" else [False, True]
    shifts = [(0, 0), (1, 1), (-1, -1)] if mode == "mirror_translate" else [(0, 0)]
    return [(mirror, shift) for mirror in mirrors for shift in shifts]


def with_test_time_augmentation(model: keras.Model, mode: str) -> keras.Model:
    """``model`` itself for ``none``; otherwise a model averaging its probabilities over the mode's views."""
    chosen = views(mode)
    if len(chosen) == 1:
        return model
    inputs = keras.Input(model.input_shape[1:], name="image")
    outputs = [model(View(mirror, shift, name=f"view{index}")(inputs)) for index, (mirror, shift) in enumerate(chosen)]
    averaged = layers.Average(dtype="float32", name="probabilities_tta")(outputs)
    return keras.Model(inputs, averaged, name=f"{model.name}_tta")
