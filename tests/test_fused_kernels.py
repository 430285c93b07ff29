"""The fused layers and optimizers against Keras's own: same outputs, gradients, trained weights and optimizer
slots from the same starting weights, in float32 and bfloat16; dropout's masks by their statistics; saving and
reloading; the stock-layer copy the speed benchmark's baseline trains; and the fallback to Keras's path where a
layer cannot be fused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from imgpipe.models.layers import (STOCK_LAYERS, ErfGeluDense, FusedBatchNormalization, FusedGRU,
                                   FusedLayerNormalization, PackedDropout, PackedDropoutAttention, with_keras_layers)
from imgpipe.training.optimizers import FusedAdam, FusedSGD

POLICIES = ["float32", "mixed_bfloat16"]


@pytest.fixture(params=POLICIES)
def policy(request: pytest.FixtureRequest):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def _tolerance(policy: str) -> float:
    return 1e-5 if policy == "float32" else 3e-2


def _model(input_shape: tuple[int, ...], body: Callable[[keras.KerasTensor], keras.KerasTensor]) -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input(input_shape)
    outputs = keras.layers.Dense(3, dtype="float32")(keras.layers.Flatten()(body(inputs)))
    return keras.Model(inputs, outputs)


def _assert_trains_as_stock(stock: keras.Model, fused: keras.Model, x: np.ndarray, tolerance: float,
                            tmp_path: Path) -> None:
    """Same outputs and input gradients from the same weights, the same weights after training, same after reload."""
    fused.set_weights(stock.get_weights())
    inputs = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        stock_out, fused_out = stock(inputs, training=True), fused(inputs, training=True)
    np.testing.assert_allclose(fused_out, stock_out, atol=tolerance)
    np.testing.assert_allclose(tape.gradient(fused_out, inputs), tape.gradient(stock_out, inputs),
                               atol=tolerance, rtol=tolerance)
    y = np.random.default_rng(1).normal(size=(len(x), 3)).astype(np.float32)
    for model in (stock, fused):
        model.compile(keras.optimizers.SGD(0.05), "mse")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    for stock_weight, fused_weight in zip(stock.weights, fused.weights, strict=True):
        np.testing.assert_allclose(fused_weight.numpy(), stock_weight.numpy(), atol=tolerance * 10,
                                   err_msg=stock_weight.path)
    np.testing.assert_allclose(fused.predict(x, verbose=0), stock.predict(x, verbose=0), atol=tolerance * 10)
    fused.save(tmp_path / "fused.keras")
    reloaded = keras.models.load_model(tmp_path / "fused.keras")
    assert [type(layer) for layer in reloaded.layers] == [type(layer) for layer in fused.layers]
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), fused.predict(x, verbose=0))


def test_fused_batch_norm_trains_and_predicts_as_keras_batch_norm_does(policy: str, tmp_path: Path) -> None:
    def body(norm: type) -> Callable:
        return lambda x: norm(momentum=0.5, name="bn")(keras.layers.Conv2D(4, 3, padding="same")(x))

    stock, fused = _model((6, 6, 2), body(keras.layers.BatchNormalization)), _model((6, 6, 2), body(FusedBatchNormalization))
    x = (3 + 2 * np.random.default_rng(0).normal(size=(16, 6, 6, 2))).astype(np.float32)
    _assert_trains_as_stock(stock, fused, x, _tolerance(policy), tmp_path)
    # Same moving statistics: the biased batch variance, averaged with momentum 0.5.
    assert not np.allclose(fused.get_layer("bn").moving_variance.numpy(), 1.0)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_fused_gru_trains_and_predicts_as_keras_gru_does(policy: str, return_sequences: bool, tmp_path: Path) -> None:
    def body(recurrent: type) -> Callable:
        return lambda x: recurrent(5, return_sequences=return_sequences)(recurrent(6, return_sequences=True)(x))

    stock, fused = _model((7, 4), body(keras.layers.GRU)), _model((7, 4), body(FusedGRU))
    x = np.random.default_rng(0).normal(size=(16, 7, 4)).astype(np.float32)
    _assert_trains_as_stock(stock, fused, x, _tolerance(policy), tmp_path)


def test_fused_layer_norm_trains_and_predicts_as_keras_layer_norm_does(policy: str, tmp_path: Path) -> None:
    def body(norm: type) -> Callable:
        return lambda x: norm(epsilon=1e-3)(keras.layers.Dense(8)(x))

    stock, fused = _model((5, 3), body(keras.layers.LayerNormalization)), _model((5, 3), body(FusedLayerNormalization))
    x = (2 + 3 * np.random.default_rng(0).normal(size=(16, 5, 3))).astype(np.float32)
    _assert_trains_as_stock(stock, fused, x, _tolerance(policy), tmp_path)


def test_erf_gelu_dense_trains_and_predicts_as_keras_gelu_dense_does(policy: str, tmp_path: Path) -> None:
    def body(dense: type) -> Callable:
        return lambda x: dense(6, activation="gelu")(keras.layers.Dense(5)(x))

    stock, erf = _model((4, 3), body(keras.layers.Dense)), _model((4, 3), body(ErfGeluDense))
    x = (3 * np.random.default_rng(0).normal(size=(16, 4, 3))).astype(np.float32)
    _assert_trains_as_stock(stock, erf, x, _tolerance(policy), tmp_path)
    assert erf.layers[-3].get_config()["activation"] == "gelu"
    assert ErfGeluDense(3, activation="relu").activation is keras.activations.relu


def test_packed_dropout_attention_trains_as_keras_attention_does_and_drops_with_packed_dropout(
        policy: str, tmp_path: Path) -> None:
    def body(attention: type) -> Callable:
        def attend(x: keras.KerasTensor) -> keras.KerasTensor:
            query, value = keras.layers.Dense(8)(x), keras.layers.Dense(8)(x)
            attended, scores = attention(2, 4, value_dim=3, name="attention")(query, value,
                                                                             return_attention_scores=True)
            return keras.layers.Concatenate()([attended, keras.layers.Reshape((5, 10))(scores)])
        return attend

    stock, packed = _model((5, 3), body(keras.layers.MultiHeadAttention)), _model((5, 3), body(PackedDropoutAttention))
    x = np.random.default_rng(0).normal(size=(16, 5, 3)).astype(np.float32)
    _assert_trains_as_stock(stock, packed, x, _tolerance(policy), tmp_path)
    with_dropout = PackedDropoutAttention(2, 4, dropout=0.5)
    with_dropout(x, x)
    assert type(with_dropout._dropout_layer) is PackedDropout and with_dropout._dropout_layer.rate == 0.5


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_packed_dropout_drops_the_rate_and_keeps_the_expected_value(policy: str, rate: float) -> None:
    ones = tf.ones([400, 501])                                   # an odd count: the last 32-bit draw is half used
    dropout = PackedDropout(rate, seed=5)
    with tf.GradientTape() as tape:
        tape.watch(ones)
        dropped = dropout(ones, training=True)
    values = np.asarray(dropped, dtype=np.float32)
    kept = values != 0
    standard_error = np.sqrt(rate * (1 - rate) / values.size)
    assert abs((1 - kept.mean()) - rate) < 5 * standard_error
    rounded_rate = round(rate * 2**16) / 2**16                    # the rate a 16-bit decision can express
    np.testing.assert_allclose(values[kept], 1 / (1 - rounded_rate), rtol=_tolerance(policy) / 3)
    assert abs(values.mean() - 1) < 5 * standard_error / (1 - rate) + (0 if policy == "float32" else 4e-3)
    np.testing.assert_array_equal(np.asarray(tape.gradient(dropped, ones)) != 0, kept)
    assert not np.array_equal(np.asarray(dropout(ones, training=True)) != 0, kept)        # a fresh mask each step
    same_seed = PackedDropout(rate, seed=5)(ones, training=True)                            # the same mask again
    np.testing.assert_array_equal(np.asarray(same_seed, dtype=np.float32), values)
    np.testing.assert_array_equal(dropout(ones, training=False), ones)


def test_fused_layers_fall_back_to_keras_where_they_cannot_fuse() -> None:
    x = np.random.default_rng(0).normal(size=(4, 6, 3)).astype(np.float32)
    mask = np.array([[True] * 6, [True] * 3 + [False] * 3] * 2)
    for stock, fused in [(keras.layers.GRU(4, go_backwards=True), FusedGRU(4, go_backwards=True)),
                         (keras.layers.GRU(4, reset_after=False), FusedGRU(4, reset_after=False)),
                         (keras.layers.LayerNormalization(axis=1), FusedLayerNormalization(axis=1)),
                         (keras.layers.LayerNormalization(rms_scaling=True), FusedLayerNormalization(rms_scaling=True))]:
        stock.build(x.shape)
        fused.build(x.shape)
        fused.set_weights(stock.get_weights())
        np.testing.assert_allclose(fused(x), stock(x), atol=1e-6)
    stock, fused = keras.layers.GRU(4), FusedGRU(4)
    stock.build(x.shape)
    fused.build(x.shape)
    fused.set_weights(stock.get_weights())
    np.testing.assert_allclose(fused(x, mask=mask), stock(x, mask=mask), atol=1e-6)
    shaped = np.ones((1000, 4), np.float32)
    stock = keras.layers.Dropout(0.5, noise_shape=(1000, 1), seed=2)
    fused = PackedDropout(0.5, noise_shape=(1000, 1), seed=2)
    np.testing.assert_array_equal(fused(shaped, training=True), stock(shaped, training=True))


def test_the_stock_copy_has_keras_layers_where_the_model_has_fused_ones() -> None:
    inputs = keras.Input((6, 6, 2))
    x = FusedBatchNormalization()(keras.layers.Conv2D(4, 3)(inputs))
    x = FusedGRU(3, return_sequences=True)(keras.layers.Reshape((4, 16))(x))
    x = PackedDropout(0.1)(PackedDropoutAttention(2, 2)(x, x))
    model = keras.Model(inputs, FusedLayerNormalization()(x))
    stock = with_keras_layers(model)
    assert [type(layer) for layer in stock.layers] == [STOCK_LAYERS.get(type(layer), type(layer))
                                                       for layer in model.layers]
    assert not any(type(layer) in STOCK_LAYERS for layer in stock.layers)
    assert stock.count_params() == model.count_params()


@pytest.mark.parametrize("stock, fused", [
    (lambda: keras.optimizers.Adam(0.01), lambda: FusedAdam(0.01)),
    (lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True), lambda: FusedSGD(0.05, momentum=0.9, nesterov=True)),
    (lambda: keras.optimizers.SGD(0.05, momentum=0.9), lambda: FusedSGD(0.05, momentum=0.9)),
    (lambda: keras.optimizers.SGD(0.05), lambda: FusedSGD(0.05)),
], ids=["adam", "sgd-nesterov", "sgd-momentum", "sgd"])
def test_fused_optimizers_update_as_keras_optimizers_do(stock: Callable, fused: Callable, tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32)
    models = [_model((5,), lambda x: keras.layers.Dense(6, activation="relu")(x)) for _ in range(2)]
    for model, optimizer in zip(models, (stock(), fused()), strict=True):
        model.compile(optimizer, "mse")
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
    assert not np.allclose(models[1].get_weights()[0], _model((5,), lambda x: keras.layers.Dense(6)(x)).get_weights()[0])
    for stock_weight, fused_weight in zip(models[0].weights, models[1].weights, strict=True):
        np.testing.assert_allclose(fused_weight.numpy(), stock_weight.numpy(), atol=1e-5, err_msg=stock_weight.path)
    for stock_slot, fused_slot in zip(models[0].optimizer.variables, models[1].optimizer.variables, strict=True):
        np.testing.assert_allclose(fused_slot.numpy(), stock_slot.numpy(), atol=1e-5, err_msg=stock_slot.path)
    models[1].save(tmp_path / "fused.keras")
    reloaded = keras.models.load_model(tmp_path / "fused.keras")
    assert type(reloaded.optimizer) is type(models[1].optimizer)
    assert reloaded.optimizer.get_config() == models[1].optimizer.get_config()
