"""Export a trained model as a TensorFlow SavedModel that serves raw images.

The serving signature takes a batch of uint8 images of any height, width and channel count
(1 gray, 3 RGB, 4 RGBA) and does, inside the graph, what the pipeline did before training:
channel conversion to the model's channels and resizing to its input size. Normalization is
already the model's first layer. The layout ``<export_dir>/<model>/<version>/`` is the one
TensorFlow Serving watches.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from imgpipe.artifacts.files import atomic_path

LOGGER = logging.getLogger(__name__)
SIGNATURE = "serving_default"
PROFILE = Path("assets.extra") / "training_profile.json"    # beside the graph; TensorFlow Serving ignores it


def _to_channels(images: tf.Tensor, channels: int) -> tf.Tensor:
    """Gray, RGB or RGBA batches → the model's channel count (alpha is dropped)."""
    have = tf.shape(images)[-1]
    rgb = tf.cond(have >= 3, lambda: images[..., :3], lambda: tf.image.grayscale_to_rgb(images[..., :1]))
    if channels == 3:
        return rgb
    return tf.cond(have >= 3, lambda: tf.image.rgb_to_grayscale(rgb), lambda: images[..., :1])


def _to_size(images: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Float pixels (0..255) at the model's size; images already that size pass unchanged."""
    pixels = tf.cast(images, tf.float32)
    same = tf.logical_and(tf.shape(images)[1] == height, tf.shape(images)[2] == width)
    return tf.cond(same, lambda: tf.ensure_shape(pixels, [None, height, width, None]),
                   lambda: tf.image.resize(pixels, (height, width), antialias=True))


def serving_function(model: keras.Model, class_names: tuple[str, ...]):
    """The tf.function TensorFlow Serving calls: raw uint8 images in; probabilities, label and class out."""
    height, width, channels = model.input_shape[1:]
    names = tf.constant(list(class_names))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")])
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = _to_size(_to_channels(images, channels), height, width)
        probabilities = model(tf.ensure_shape(pixels, [None, height, width, channels]), training=False)
        label = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"probabilities": probabilities, "label": label, "class_name": tf.gather(names, label)}

    return serve


def export_model(model: keras.Model, class_names: tuple[str, ...], export_dir: Path, version: int) -> Path:
    """Write ``export_dir/<version>`` atomically (built beside it, then renamed) and return it."""
    target = export_dir / str(version)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serving_function(model, class_names))
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.WARNING)          # no "Assets written to <absolute path>" in the published page
    try:
        with atomic_path(target) as partial:
            archive.write_out(str(partial), verbose=False)
            (partial / PROFILE).parent.mkdir(parents=True, exist_ok=True)
            (partial / PROFILE).write_text(json.dumps(training_profile(model, class_names), indent=2) + "\n")
    finally:
        tf_logger.setLevel(level)
    for stale in export_dir.iterdir():     # DVC keeps this output between runs: only the current version stays
        if stale.is_dir() and stale.name.isdigit() and stale != target:
            shutil.rmtree(stale)
    LOGGER.info("exported %s", target)
    return target


def training_profile(model: keras.Model, class_names: tuple[str, ...]) -> dict[str, object]:
    """What the model saw in training: input size, channels and the per-channel pixel mean and std
    of the training split (read from the model's own normalization layer)."""
    height, width, channels = model.input_shape[1:]
    profile: dict[str, object] = {"height": height, "width": width, "channels": channels,
                                  "class_names": list(class_names)}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            profile["pixel_mean"] = np.ravel(keras.ops.convert_to_numpy(layer.mean)).round(3).tolist()
            profile["pixel_std"] = np.ravel(np.sqrt(keras.ops.convert_to_numpy(layer.variance))).round(3).tolist()
            break
    return profile


def load_training_profile(version_dir: Path) -> dict[str, object] | None:
    """The training profile saved with an export, or None for an export made without one."""
    path = version_dir / PROFILE
    return json.loads(path.read_text()) if path.is_file() else None


def latest_version(export_dir: Path) -> Path:
    """The highest numbered version folder, as TensorFlow Serving would choose it."""
    versions = sorted((int(p.name), p) for p in export_dir.glob("*") if p.is_dir() and p.name.isdigit())
    if not versions:
        raise FileNotFoundError(f"{export_dir} holds no exported model version (expected a folder like "
                                f"{export_dir / '1'}); run `dvc repro export@<model>` first.")
    return versions[-1][1]


def load_serving(version_dir: Path):
    """The serving signature of an exported model. A SavedModel is a graph: loading runs no Python code."""
    return tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]


def predict_probabilities(serve, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Probabilities for a uint8 batch through the serving signature."""
    parts = [serve(images=tf.constant(images[start:start + batch_size]))["probabilities"].numpy()
             for start in range(0, len(images), batch_size)]
    return np.concatenate(parts)


class ExportMismatch(AssertionError):
    """The exported model does not reproduce the evaluate stage's probabilities."""


def reproduction_check(exported: np.ndarray, evaluated: np.ndarray, tolerance: float) -> dict[str, float | int]:
    """Compare the exported model's test probabilities with evaluate's; raise ExportMismatch beyond ``tolerance``."""
    check = {"largest_probability_difference": float(np.abs(exported - evaluated).max()),
             "labels_that_differ": int((exported.argmax(1) != evaluated.argmax(1)).sum())}
    if check["largest_probability_difference"] > tolerance or check["labels_that_differ"]:
        raise ExportMismatch(f"the exported model does not reproduce the evaluate stage on {len(evaluated):,} "
                             f"test images within tolerance {tolerance:g}: {check}")
    return check
