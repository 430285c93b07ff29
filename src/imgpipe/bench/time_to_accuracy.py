"""Time-to-accuracy benchmark: each family's pipeline recipe against a tutorial peer of the same family.

The peers are what a tutorial writes for Fashion-MNIST, each trained with plain
``model.fit(x, y, batch_size=128)``, Adam at its default rate, for 12 epochs:

* cnn: two 3×3 convolutions (32, 64) with batch normalization, 2×2 max-pool, dense 128, dropout 0.3;
* rnn: two stacked LSTM(128) layers reading the image one row at a time;
* attention: a keras-io-style vision transformer (4×4 patches, width 64, 4 blocks of 4 heads, MLP head).

The pipeline trains through its own path (seeded ``tf.data`` batches, the family's optimizer, schedule,
augmentation and precision from ``params.yaml``). Both see the same training images and are scored on
the same validation images after every epoch, against the wall time of the epochs so far. The figure of
merit is the time the pipeline needs to reach the peer's final validation accuracy, and its ratio to the
peer's whole training time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from imgpipe.artifacts.paths import ProjectPaths
from imgpipe.bench.training import machine_description
from imgpipe.config.schema import ModelTrainParams, load_params
from imgpipe.data.shards import open_part
from imgpipe.models.layers import PositionEmbedding, normalizer
from imgpipe.models.registry import family_names
from imgpipe.training import batches, precision, train
from imgpipe.training.recipe import compiled_model

LOGGER = logging.getLogger(__name__)
PEER_EPOCHS = 12
PEER_BATCH_SIZE = 128


class AccuracyClock(keras.callbacks.Callback):
    """Validation accuracy after every epoch against the wall time of the epochs so far (evaluation included)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.accuracy: list[float] = []
        self._started = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)
        self.accuracy.append(float((logs or {})["val_accuracy"]))


def peer_cnn(inputs: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """Two 3×3 convolutions with batch normalization, max-pool, dense 128, dropout 0.3."""
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    return layers.Dense(num_classes, activation="softmax")(x)


def peer_rnn(inputs: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """Two stacked LSTM(128) layers reading rows."""
    height, width, channels = inputs.shape[1:]
    x = layers.Reshape((height, width * channels))(inputs)
    x = layers.LSTM(128, return_sequences=True)(x)
    x = layers.LSTM(128)(x)
    return layers.Dense(num_classes, activation="softmax")(x)


def peer_attention(inputs: keras.KerasTensor, num_classes: int, patch: int = 4, dim: int = 64,
                   depth: int = 4, heads: int = 4) -> keras.KerasTensor:
    """keras-io's "Image classification with Vision Transformer", sized for 28×28 images."""
    x = layers.Conv2D(dim, patch, strides=patch)(inputs)                  # patches → linear projection
    x = layers.Reshape((-1, dim))(x)
    x = PositionEmbedding()(x)
    for _ in range(depth):
        attended = layers.MultiHeadAttention(heads, dim, dropout=0.1)(
            layers.LayerNormalization(epsilon=1e-6)(x), layers.LayerNormalization(epsilon=1e-6)(x))
        x = layers.Add()([attended, x])
        hidden = layers.LayerNormalization(epsilon=1e-6)(x)
        hidden = layers.Dropout(0.1)(layers.Dense(2 * dim, activation="gelu")(hidden))
        hidden = layers.Dropout(0.1)(layers.Dense(dim, activation="gelu")(hidden))
        x = layers.Add()([hidden, x])
    x = layers.Dropout(0.5)(layers.Flatten()(layers.LayerNormalization(epsilon=1e-6)(x)))
    for units in (512, 256):
        x = layers.Dropout(0.5)(layers.Dense(units, activation="gelu")(x))
    return layers.Dense(num_classes, activation="softmax")(x)


PEERS = {"cnn": peer_cnn, "rnn": peer_rnn, "attention": peer_attention}


def build_peer(model_name: str, input_shape: tuple[int, ...], num_classes: int, mean: list[float],
               std: list[float]) -> keras.Model:
    """The tutorial peer of one family; like the pipeline's models it normalizes raw pixels itself."""
    inputs = keras.Input(input_shape)
    outputs = PEERS[model_name](normalizer(mean, std)(inputs), num_classes)
    return keras.Model(inputs, outputs, name=f"peer_{model_name}")


@dataclass(frozen=True)
class Curve:
    """Validation accuracy after each epoch and the wall time at which it was reached."""

    seconds: list[float]
    accuracy: list[float]

    def time_to(self, target: float) -> float | None:
        """Seconds until the accuracy first reached ``target``; None if it never did."""
        reached = [s for s, a in zip(self.seconds, self.accuracy, strict=True) if a >= target]
        return reached[0] if reached else None


@dataclass(frozen=True)
class FamilyRace:
    """One family's pipeline recipe against its peer."""

    model: str
    peer_final_accuracy: float
    pipeline_final_accuracy: float
    peer_seconds: float
    pipeline_seconds: float
    pipeline_seconds_to_peer_accuracy: float | None
    ratio_to_peer_time: float | None
    peer: Curve
    pipeline: Curve


def peer_curve(model_name: str, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
               epochs: int) -> Curve:
    """Train the family's peer as a tutorial does and record its accuracy curve."""
    mean, std = batches.channel_statistics(x)
    model = build_peer(model_name, x.shape[1:], int(y.max()) + 1, mean, std)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=False)
    clock = AccuracyClock()
    model.fit(x.astype(np.float32), y, batch_size=PEER_BATCH_SIZE, epochs=epochs, verbose=0, callbacks=[clock],
              validation_data=(x_val.astype(np.float32), y_val))
    return Curve(clock.seconds, clock.accuracy)


def pipeline_curve(model_name: str, settings: ModelTrainParams, seed: int, x: np.ndarray, y: np.ndarray,
                   x_val: np.ndarray, y_val: np.ndarray) -> Curve:
    """Train the family through the pipeline's own recipe and record its accuracy curve."""
    num_classes = int(y.max()) + 1
    precision.set_precision(settings.precision)
    try:
        mean, std = batches.channel_statistics(x)
        data = batches.EpochBatches(x, y, num_classes, settings.batch_size, seed, settings.augment.model_dump())
        model = compiled_model(model_name, settings, x.shape[1:], num_classes, mean, std, data.steps)
        val = batches.validation_dataset(x_val, y_val, num_classes, settings.batch_size)
        clock = AccuracyClock()
        model.fit(data.from_epoch(0, settings.epochs), validation_data=val, epochs=settings.epochs,
                  steps_per_epoch=data.steps, verbose=0, callbacks=[clock], shuffle=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return Curve(clock.seconds, clock.accuracy)


def race(model_name: str, peer: Curve, pipeline: Curve) -> FamilyRace:
    """Compare the two curves: when the pipeline reached the peer's final accuracy, and the ratio of times."""
    target = peer.accuracy[-1]
    reached = pipeline.time_to(target)
    return FamilyRace(model=model_name, peer_final_accuracy=round(target, 4),
                      pipeline_final_accuracy=round(pipeline.accuracy[-1], 4),
                      peer_seconds=round(peer.seconds[-1], 1), pipeline_seconds=round(pipeline.seconds[-1], 1),
                      pipeline_seconds_to_peer_accuracy=None if reached is None else round(reached, 1),
                      ratio_to_peer_time=None if reached is None else round(reached / peer.seconds[-1], 3),
                      peer=peer, pipeline=pipeline)


def raced_models(models: list[str] | None) -> list[str]:
    """The families to race: ``models`` (each must have a tutorial peer), or every family that has one."""
    with_peer = [name for name in family_names() if name in PEERS]
    unknown = sorted(set(models or ()) - set(with_peer))
    if unknown:
        raise ValueError(f"--race-models {' '.join(unknown)}: no tutorial peer for that family; "
                         f"expected some of {', '.join(with_peer)}.")
    return [name for name in with_peer if models is None or name in models]


def race_families(params: Any, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                  peer_epochs: int = PEER_EPOCHS, models: list[str] | None = None) -> list[FamilyRace]:
    """Race the families' pipeline recipes (``params``: the whole params.yaml) against their peers:
    ``models``, or every family that has a peer."""
    results = []
    for model_name in raced_models(models):
        keras.utils.set_random_seed(params.train.seed)
        peer = peer_curve(model_name, x, y, x_val, y_val, peer_epochs)
        LOGGER.info("%s peer: %.4f after %.0f s", model_name, peer.accuracy[-1], peer.seconds[-1])
        keras.utils.set_random_seed(params.train.seed)
        pipeline = pipeline_curve(model_name, getattr(params.train, model_name), params.train.seed, x, y, x_val,
                                  y_val)
        LOGGER.info("%s pipeline: %.4f after %.0f s", model_name, pipeline.accuracy[-1], pipeline.seconds[-1])
        results.append(race(model_name, peer, pipeline))
    return results


def run_benchmark(paths: ProjectPaths, images: int = 0, val_images: int = 0,
                  peer_epochs: int = PEER_EPOCHS, models: list[str] | None = None) -> dict[str, Any]:
    """Race ``models`` (default: every family with a peer) on the split stage's train and validation images
    (``dvc repro split`` makes them).

    ``images`` / ``val_images`` > 0 take only the first so many (a quick check); 0 takes them all.
    """
    models = raced_models(models)
    params = load_params(paths.params)
    train.seed_everything(params.train.seed, params.train.deterministic)
    (x, y), (x_val, y_val) = open_part(paths.split_shards, "train").load(), open_part(paths.split_shards, "val").load()
    x, y = (x[:images], y[:images]) if images else (x, y)
    x_val, y_val = (x_val[:val_images], y_val[:val_images]) if val_images else (x_val, y_val)
    results = race_families(params, x, y, x_val, y_val, peer_epochs, models)
    return {"machine": machine_description(), "images": len(y), "val_images": len(y_val), "peer_epochs": peer_epochs,
            "deterministic": params.train.deterministic, "families": [asdict(r) for r in results]}


def markdown_table(benchmark: dict[str, Any]) -> str:
    """Time to the peer's final validation accuracy, and both final accuracies."""
    rows = ["| model | peer final val acc | peer time s | pipeline final val acc | pipeline time s "
            "| pipeline time to peer's acc s | ratio to peer's time |", "|---|---:|---:|---:|---:|---:|---:|"]
    for f in benchmark["families"]:
        reached = f["pipeline_seconds_to_peer_accuracy"]
        rows.append(f"| {f['model']} | {f['peer_final_accuracy']:.2%} | {f['peer_seconds']:.0f} "
                    f"| {f['pipeline_final_accuracy']:.2%} | {f['pipeline_seconds']:.0f} "
                    f"| {'not reached' if reached is None else f'{reached:.0f}'} "
                    f"| {'—' if reached is None else format(f['ratio_to_peer_time'], '.2f')} |")
    return "\n".join(rows) + (f"\n\n{benchmark['images']:,} training and {benchmark['val_images']:,} validation "
                              f"images; peers: {benchmark['peer_epochs']} epochs of "
                              f"model.fit(batch_size={PEER_BATCH_SIZE}), Adam; "
                              f"{benchmark['machine']['cpu_count']} CPUs.")

