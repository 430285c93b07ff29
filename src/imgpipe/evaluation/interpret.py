"""What the models look at: Grad-CAM (convolutional models), attention maps (attention
models) and gradient saliency (every model), each as an image-sized map in [0, 1]."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from imgpipe.models.builders import attention_scores_model
from imgpipe.models.registry import family


def sample_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """A seeded choice of ``per_class`` test images of every class, the same for every model."""
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == label), size=per_class, replace=False)
              for label in np.unique(labels)]
    return np.concatenate(chosen)


def _normalize(maps: np.ndarray) -> np.ndarray:
    """Scale each map to [0, 1] (all-zero maps stay zero)."""
    flat = maps.reshape(len(maps), -1)
    low, high = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    return ((flat - low) / np.where(high > low, high - low, 1.0)).reshape(maps.shape)


def _resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return tf.image.resize(maps[..., np.newaxis], size, method="bilinear").numpy()[..., 0]


def gradient_saliency(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """|∂ p(predicted class) / ∂ pixel|, maximum over channels: which pixels move the decision."""
    inputs = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        probabilities = model(inputs, training=False)
        top = tf.reduce_max(probabilities, axis=1)
    gradients = tape.gradient(top, inputs).numpy()
    return _normalize(np.abs(gradients).max(axis=-1))


def last_feature_map_layer(model: keras.Model, min_fraction: float = 0.25) -> layers.Layer:
    """The last spatial feature map (rank 4) still at least ``min_fraction`` of the input's side.

    Deep maps (3×3 for a 28×28 image) give Grad-CAM blobs of a few cells; a map at a quarter of the
    input (7×7) still locates parts of the object. Without such a map, the last spatial one is used."""
    spatial = [layer for layer in model.layers
               if len(getattr(layer, "output", None).shape or ()) == 4 and not isinstance(layer, layers.InputLayer)
               and not isinstance(layer, (layers.MaxPooling2D, layers.Normalization))]
    if not spatial:
        raise ValueError(f"model {model.name!r} has no spatial feature map for Grad-CAM.")
    input_side = min(model.input_shape[1:3])
    fine = [layer for layer in spatial if min(layer.output.shape[1:3]) >= min_fraction * input_side]
    return (fine or spatial)[-1]


def grad_cam(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Grad-CAM of the predicted class on the last feature map at a useful resolution, upsampled to the image."""
    features_model = keras.Model(model.inputs, [last_feature_map_layer(model).output, model.outputs[0]])
    inputs = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        features, probabilities = features_model(inputs, training=False)
        top = tf.reduce_max(probabilities, axis=1)
    gradients = tape.gradient(top, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
    return _normalize(_resize(cam, images.shape[1:3]))


def attention_map(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Attention each image region receives in the last block, averaged over heads and queries."""
    scores = attention_scores_model(model).predict(images.astype(np.float32), verbose=0)
    last = scores[-1] if isinstance(scores, list) else scores
    received = last.mean(axis=(1, 2))                                  # (N, tokens)
    grid = model.get_layer("tokens").input.shape[1:3]
    return _normalize(_resize(received.reshape(len(images), *grid), images.shape[1:3]))


METHODS = {"saliency": gradient_saliency, "grad_cam": grad_cam, "attention": attention_map}


def explain(model: keras.Model, images: np.ndarray, model_name: str) -> dict[str, np.ndarray]:
    """Every map the model's family supports (its registry entry), keyed by method name."""
    return {method: METHODS[method](model, images) for method in family(model_name).interpretations}
