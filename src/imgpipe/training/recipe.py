"""The training recipe every trainer uses — the train and crossval stages, the benchmark and the tools:
build the family's model, make its optimizer and schedule, compile it with its loss."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from imgpipe.config.schema import ModelTrainParams
from imgpipe.models.builders import build_model
from imgpipe.training.train import compile_model, make_optimizer


def compiled_model(model_name: str, settings: ModelTrainParams, image_shape: tuple[int, ...], num_classes: int,
                   mean: Sequence[float], std: Sequence[float], steps_per_epoch: int,
                   learning_rate: float | None = None) -> keras.Model:
    """A freshly initialized, compiled model of ``model_name`` trained by ``settings``.

    ``learning_rate`` overrides ``settings.learning_rate`` (the rate scaled for several replicas).
    Build inside a distribution strategy's scope when training on several devices.
    """
    model = build_model(model_name, image_shape, num_classes, mean, std, settings.architecture, settings.dropout,
                        settings.l2)
    optimizer = make_optimizer(settings.optimizer, learning_rate or settings.learning_rate, settings.momentum,
                               settings.lr_schedule, settings.warmup_epochs, settings.epochs, steps_per_epoch,
                               settings.ema_momentum)
    compile_model(model, optimizer, settings.label_smoothing, settings.jit_compile)
    return model
