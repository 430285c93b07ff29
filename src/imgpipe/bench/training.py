"""Training-speed benchmark: the naive `model.fit` baseline against the pipeline's own training path.

For each model family, in one process: the same architecture (from ``params.yaml``) is trained
for a fixed number of images several ways — as a user would write it (Keras's stock layers, float arrays,
``model.fit(x, y, batch_size=128)``, Keras defaults, which include ``jit_compile="auto"``), the same
with XLA off (on a machine without a GPU Keras's "auto" leaves XLA off, so these two are the same computation
measured twice), and through the pipeline's ``tf.data`` path with its fused layers, batch size, precision,
XLA setting and augmentation, with and without op determinism — and the speeds are compared with the machine's
measured sgemm FLOP/s.

Each way trains ``TIMED_EPOCHS`` timed epochs after a warm-up ``fit``, and two speeds come of them:

* **as ``fit`` runs**: images of all timed epochs over their total wall time — what a user waits for. The
  speed-up is this one's ratio. Keras's array input (``fit(x, y)``) makes a new autotuned ``tf.data``
  iterator every epoch, and releasing the last one can wait seconds for its autotuning thread's timer with
  the whole process idle; every epoch pays the wait or not by chance, so these epochs are bimodal.
  The pipeline's datasets run without autotuning and do not wait.
* **best epoch**: images over the fastest epoch's time — the computation's own speed, without such waits.
  The fractions of the sgemm ceiling use it.

Each epoch's speed and the share of the machine's cores the process kept busy in it (its CPU time over wall
time × cores) are recorded too, so a waiting epoch shows as one with the cores idle.

Training FLOPs per image are counted analytically from the layers (multiply-add = 2 FLOPs;
convolutions, dense and recurrent matrix products, attention projections and products), times 3
for the forward pass plus the backward pass (gradients for inputs and for weights). Element-wise
work (normalization, activations, pooling, the optimizer update) is left out, so the fraction of
the ceiling is if anything an underestimate.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from imgpipe.artifacts.paths import ProjectPaths
from imgpipe.config.schema import ModelTrainParams, load_params
from imgpipe.data.preprocess import read_idx_images
from imgpipe.models.builders import build_model
from imgpipe.models.layers import with_keras_layers
from imgpipe.models.registry import family_names
from imgpipe.training import batches, precision, train
from imgpipe.training.fingerprint import gpu_devices
from imgpipe.training.recipe import compiled_model

LOGGER = logging.getLogger(__name__)
NAIVE_BATCH_SIZE = 128
TIMED_EPOCHS = 8
TRAINING_FLOPS_PER_FORWARD_FLOP = 3


@dataclass(frozen=True)
class EpochTimes:
    """Wall and process CPU seconds of each timed epoch of one way of training, and the images in each."""

    images: int
    wall_seconds: tuple[float, ...]
    cpu_seconds: tuple[float, ...]

    @property
    def as_run(self) -> float:
        """Images/s over all the timed epochs, waits included."""
        return self.images * len(self.wall_seconds) / sum(self.wall_seconds)

    @property
    def best_epoch(self) -> float:
        """Images/s of the fastest epoch."""
        return self.images / min(self.wall_seconds)

    def record(self, cores: int) -> dict[str, list[float]]:
        """Each epoch's images/s and share of ``cores`` kept busy, for the JSON."""
        return {"images_per_second": [round(self.images / wall, 1) for wall in self.wall_seconds],
                "cores_busy": [round(cpu / (wall * cores), 2) for wall, cpu in zip(self.wall_seconds,
                                                                                   self.cpu_seconds)]}


@dataclass(frozen=True)
class FamilyResult:
    """One family's measured speeds and FLOP accounting (speeds as ``fit`` runs unless named best-epoch)."""

    model: str
    parameters: int
    forward_mflops_per_image: float
    naive_images_per_second: float
    naive_no_xla_images_per_second: float
    pipeline_images_per_second: float
    deterministic_images_per_second: float | None
    speedup: float
    naive_best_epoch_images_per_second: float
    naive_no_xla_best_epoch_images_per_second: float
    pipeline_best_epoch_images_per_second: float
    best_epoch_speedup: float
    naive_fraction_of_sgemm: float
    pipeline_fraction_of_sgemm: float
    pipeline_batch_size: int
    pipeline_jit_compile: bool
    epochs: dict[str, dict[str, list[float]]]


def sgemm_flops_per_second(size: int = 2048, repeats: int = 10) -> float:
    """Measured float32 matrix-multiply throughput of this machine through TensorFlow (FLOP/s)."""
    a = tf.random.stateless_uniform((size, size), seed=(1, 2))
    b = tf.random.stateless_uniform((size, size), seed=(3, 4))
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def _sequence_length(shape: tuple[int | None, ...]) -> int:
    """Positions a per-position layer is applied to (1 for a plain vector)."""
    return int(np.prod([dim for dim in shape[1:-1]])) if len(shape) > 2 else 1


def _recurrent_flops(cell: layers.Layer, input_shape: tuple[int | None, ...]) -> float:
    steps, features = input_shape[1], input_shape[2]
    gates = 4 if isinstance(cell, layers.LSTM) else 3
    return 2.0 * steps * gates * (features + cell.units) * cell.units


def _attention_flops(layer: layers.MultiHeadAttention, tokens: int, dim: int) -> float:
    key_dim, heads = layer._key_dim, layer._num_heads
    projections = 2.0 * tokens * dim * heads * key_dim * 4          # query, key, value and output
    products = 2.0 * tokens * tokens * heads * key_dim * 2         # scores and weighted sum
    return projections + products


def forward_flops_per_image(model: keras.Model) -> float:
    """Matrix-product FLOPs of one forward pass of one image through ``model``."""
    total = 0.0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            in_channels = layer.input.shape[-1]
            kernel_h, kernel_w = layer.kernel_size
            total += 2.0 * height * width * kernel_h * kernel_w * in_channels * out_channels
        elif isinstance(layer, layers.Dense) and not isinstance(layer, layers.EinsumDense):
            shape = layer.input.shape
            total += 2.0 * _sequence_length(shape) * shape[-1] * layer.units
        elif isinstance(layer, (layers.GRU, layers.LSTM)):
            total += _recurrent_flops(layer, layer.input.shape)
        elif isinstance(layer, layers.MultiHeadAttention):
            shape = layer.input[0].shape if isinstance(layer.input, list) else layer.input.shape
            total += _attention_flops(layer, shape[1], shape[2])
    return total


class EpochTimer(keras.callbacks.Callback):
    """Wall and process CPU time of each epoch, from its start to its end (without what ``fit`` does before and
    after)."""

    def __init__(self) -> None:
        super().__init__()
        self.wall_seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self._started = (0.0, 0.0)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.wall_seconds.append(time.perf_counter() - self._started[0])
        self.cpu_seconds.append(time.process_time() - self._started[1])


def _timed_epochs(run_fit: Any, images: int) -> EpochTimes:
    """The ``TIMED_EPOCHS`` epochs of ``run_fit(epochs, callbacks)``, each of ``images`` images.

    Timing the epochs themselves leaves out what a ``fit`` call pays once, before its first epoch and after its
    last (releasing its input pipeline); a wait at the start of an epoch, as the naive ``fit`` pays between
    epochs, is in.
    """
    timer = EpochTimer()
    run_fit(TIMED_EPOCHS, [timer])
    return EpochTimes(images, tuple(timer.wall_seconds), tuple(timer.cpu_seconds))


def naive_speed(model: keras.Model, x: np.ndarray, y: np.ndarray, warmup_images: int,
                jit_compile: bool | str = "auto") -> EpochTimes:
    """The timed epochs of the baseline a user writes first: NumPy floats, `fit(batch_size=128)`, Keras defaults.

    Keras's default ``jit_compile="auto"`` turns XLA on for every model whose layers support it;
    ``jit_compile=False`` measures the same baseline without XLA.
    """
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=jit_compile)
    x_float = x.astype(np.float32)                               # the model normalizes raw pixels itself
    model.fit(x_float[:warmup_images], y[:warmup_images], batch_size=NAIVE_BATCH_SIZE, epochs=1, verbose=0)
    return _timed_epochs(
        lambda epochs, timer: model.fit(x_float, y, batch_size=NAIVE_BATCH_SIZE, epochs=epochs, verbose=0,
                                        callbacks=timer), len(y))


def pipeline_speed(model_name: str, x: np.ndarray, y: np.ndarray, settings: ModelTrainParams,
                   seed: int, warmup_images: int) -> EpochTimes:
    """The timed epochs of the pipeline's training path (its recipe) with the family's own settings from params.yaml."""
    num_classes = int(y.max()) + 1
    augment = settings.augment.model_dump()
    warmup = batches.EpochBatches(x[:warmup_images], y[:warmup_images], num_classes, settings.batch_size, seed,
                                  augment)
    measured = batches.EpochBatches(x, y, num_classes, settings.batch_size, seed, augment)
    mean, std = batches.channel_statistics(x)
    model = compiled_model(model_name, settings, x.shape[1:], num_classes, mean, std, measured.steps)
    model.fit(warmup.from_epoch(0, 1), epochs=1, steps_per_epoch=warmup.steps, verbose=0, shuffle=False)
    return _timed_epochs(
        lambda epochs, timer: model.fit(measured.from_epoch(0, epochs), epochs=epochs, steps_per_epoch=measured.steps,
                                        verbose=0, shuffle=False, callbacks=timer), len(y))


def _build(model_name: str, x: np.ndarray, num_classes: int, settings: ModelTrainParams) -> keras.Model:
    mean, std = batches.channel_statistics(x)
    return build_model(model_name, x.shape[1:], num_classes, mean, std, settings.architecture, settings.dropout,
                       settings.l2)


def _measure_all(params: Any, x: np.ndarray, y: np.ndarray, warmup_images: int, way: str) -> dict[str, EpochTimes]:
    """The timed epochs of every family trained one ``way``: naive, naive_no_xla or pipeline."""
    speeds = {}
    for model_name in family_names():
        settings = getattr(params.train, model_name)
        keras.utils.set_random_seed(params.train.seed)
        if way == "pipeline":
            precision.set_precision(settings.precision)                 # as the train stage sets it
            try:
                speeds[model_name] = pipeline_speed(model_name, x, y, settings, params.train.seed, warmup_images)
            finally:
                keras.mixed_precision.set_global_policy("float32")
        else:
            model = with_keras_layers(_build(model_name, x, int(y.max()) + 1, settings))
            speeds[model_name] = naive_speed(model, x, y, warmup_images, "auto" if way == "naive" else False)
        LOGGER.info("%s %s: %.0f images/s as fit runs, %.0f in the best epoch", model_name, way,
                    speeds[model_name].as_run, speeds[model_name].best_epoch)
    return speeds


def run_benchmark(paths: ProjectPaths, images: int, warmup_images: int) -> dict[str, Any]:
    """Measure every family: the baseline with and without XLA, the pipeline, then the pipeline under op determinism.

    Op determinism is process-wide and cannot be turned off again, so it is measured last; when
    ``train.deterministic`` is on (the default) those are the pipeline's figures.
    """
    params = load_params(paths.params)
    x, y = read_idx_images(paths.raw_data / "train-images-idx3-ubyte.gz", images)
    ceiling = sgemm_flops_per_second()
    LOGGER.info("sgemm ceiling: %.1f GFLOP/s", ceiling / 1e9)
    naive = _measure_all(params, x, y, warmup_images, "naive")
    naive_no_xla = _measure_all(params, x, y, warmup_images, "naive_no_xla")
    free = _measure_all(params, x, y, warmup_images, "pipeline")
    deterministic = params.train.deterministic
    if deterministic:
        train.seed_everything(params.train.seed, deterministic=True)
    fixed = _measure_all(params, x, y, warmup_images, "pipeline") if deterministic else {}
    cores = os.cpu_count() or 1
    results = []
    for model_name in family_names():
        settings = getattr(params.train, model_name)
        model = _build(model_name, x, int(y.max()) + 1, settings)
        training_flops = TRAINING_FLOPS_PER_FORWARD_FLOP * forward_flops_per_image(model)
        fast = fixed.get(model_name, free[model_name])
        ways = {"naive": naive[model_name], "naive_no_xla": naive_no_xla[model_name],
                "pipeline_determinism_off": free[model_name], "pipeline": fast}
        results.append(FamilyResult(
            model=model_name, parameters=int(model.count_params()),
            forward_mflops_per_image=round(training_flops / TRAINING_FLOPS_PER_FORWARD_FLOP / 1e6, 3),
            naive_images_per_second=round(naive[model_name].as_run, 1),
            naive_no_xla_images_per_second=round(naive_no_xla[model_name].as_run, 1),
            pipeline_images_per_second=round(free[model_name].as_run, 1),
            deterministic_images_per_second=round(fixed[model_name].as_run, 1) if fixed else None,
            speedup=round(fast.as_run / naive[model_name].as_run, 2),
            naive_best_epoch_images_per_second=round(naive[model_name].best_epoch, 1),
            naive_no_xla_best_epoch_images_per_second=round(naive_no_xla[model_name].best_epoch, 1),
            pipeline_best_epoch_images_per_second=round(fast.best_epoch, 1),
            best_epoch_speedup=round(fast.best_epoch / naive[model_name].best_epoch, 2),
            naive_fraction_of_sgemm=round(naive[model_name].best_epoch * training_flops / ceiling, 3),
            pipeline_fraction_of_sgemm=round(fast.best_epoch * training_flops / ceiling, 3),
            pipeline_batch_size=settings.batch_size, pipeline_jit_compile=settings.jit_compile,
            epochs={way: times.record(cores) for way, times in ways.items()}))
    return {"machine": machine_description(), "sgemm_gflops": round(ceiling / 1e9, 1), "images": images,
            "timed_epochs": TIMED_EPOCHS, "deterministic": deterministic, "families": [asdict(r) for r in results]}


def machine_description() -> dict[str, Any]:
    """What the numbers were measured on."""
    gpus = gpu_devices()
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "gpus": [gpu.name for gpu in gpus],
            "tensorflow": tf.__version__, "keras": keras.__version__}


def _cores_busy(family: dict[str, Any], *ways: str) -> str:
    """The least and the most of the cores that ``ways``' timed epochs kept busy, as "52–93%"."""
    busy = [share for way in ways for share in family["epochs"][way]["cores_busy"]]
    return f"{100 * min(busy):.0f}–{100 * max(busy):.0f}%"


def markdown_table(benchmark: dict[str, Any]) -> str:
    """The README's performance table: speeds as ``fit`` runs, best epochs in brackets; speed-ups and % of sgemm
    use the pipeline as params.yaml sets it."""
    rows = ["| model | params | fwd MFLOP/img | naive img/s | naive, XLA off img/s | cores busy per epoch, naive / "
            "pipeline | pipeline, determinism off img/s | pipeline img/s (as `make repro`) "
            "| speed-up vs naive | speed-up vs naive, XLA off | speed-up, best epochs | naive % of sgemm "
            "| pipeline % of sgemm |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for f in benchmark["families"]:
        fast = f["deterministic_images_per_second"] or f["pipeline_images_per_second"]
        rows.append(f"| {f['model']} | {f['parameters']:,} | {f['forward_mflops_per_image']:.2f} "
                    f"| {f['naive_images_per_second']:,.0f} ({f['naive_best_epoch_images_per_second']:,.0f}) "
                    f"| {f['naive_no_xla_images_per_second']:,.0f} ({f['naive_no_xla_best_epoch_images_per_second']:,.0f}) "
                    f"| {_cores_busy(f, 'naive', 'naive_no_xla')} / {_cores_busy(f, 'pipeline')} "
                    f"| {f['pipeline_images_per_second']:,.0f} "
                    f"| {fast:,.0f} ({f['pipeline_best_epoch_images_per_second']:,.0f}) "
                    f"| {f['speedup']:.2f}× | {fast / f['naive_no_xla_images_per_second']:.2f}× "
                    f"| {f['best_epoch_speedup']:.2f}× "
                    f"| {100 * f['naive_fraction_of_sgemm']:.1f}% | {100 * f['pipeline_fraction_of_sgemm']:.1f}% |")
    gpus = ", ".join(benchmark["machine"]["gpus"]) or "no GPU"
    return "\n".join(rows) + (f"\n\nsgemm ceiling {benchmark['sgemm_gflops']} GFLOP/s; {benchmark['images']:,} "
                              f"training images per epoch, {benchmark['timed_epochs']} timed epochs per measurement; speeds as `fit` runs "
                              f"(all timed epochs), the best epoch's in brackets; "
                              f"{benchmark['machine']['cpu_count']} CPUs, {gpus}.")


