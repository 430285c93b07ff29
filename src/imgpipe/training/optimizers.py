"""Adam and SGD with each variable's update done by one fused TensorFlow kernel.

Keras's optimizers compose every variable's update from a score of small ops (casts, powers, square roots,
products, assignments); for models of a few dozen variables that is hundreds of ops a training step, a
measurable share of a CPU step (docs/performance.md). ``ResourceApplyAdam`` and ``ResourceApplyKerasMomentum``
compute the same formulas in one op per variable. Same configuration, slots, checkpoints and updates (to
rounding) as Keras's own; AMSGrad, sparse gradients, distribution strategies and other backends take Keras's
path.
"""

from __future__ import annotations

from typing import Any

import keras


def _fusable(gradient: Any) -> bool:
    import tensorflow as tf

    return (keras.backend.backend() == "tensorflow" and not isinstance(gradient, tf.IndexedSlices)
            and not tf.distribute.has_strategy())


@keras.saving.register_keras_serializable(package="imgpipe")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` updating each variable with ``ResourceApplyAdam``."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if self.amsgrad or not _fusable(gradient):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        index = self._get_variable_index(variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))
        return None


@keras.saving.register_keras_serializable(package="imgpipe")
class FusedSGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` updating each variable with ``ResourceApplyKerasMomentum`` (plain gradient
    descent without momentum)."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if not _fusable(gradient):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        rate, gradient = tf.cast(learning_rate, dtype), tf.cast(gradient, dtype)
        if self.momentum == 0:
            tf.raw_ops.ResourceApplyGradientDescent(var=_handle(variable), alpha=rate, delta=gradient)
            return None
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable), accum=_handle(self.momentums[self._get_variable_index(variable)]), lr=rate,
            grad=gradient, momentum=tf.cast(self.momentum, dtype), use_nesterov=self.nesterov)
        return None


def _handle(variable: Any) -> Any:
    """The resource handle of a Keras or TensorFlow variable."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle
