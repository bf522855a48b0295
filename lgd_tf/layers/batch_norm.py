"""BatchNormalization on TensorFlow's fused kernel (same weights and semantics as Keras')."""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="lgd_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by `tf.nn.fused_batch_norm` when it can.

    Keras 3 normalises with separate moments and elementwise ops, which makes the train step
    of a ResNet on CPU about twice as slow as TensorFlow's fused kernel. For channels-last
    4-D and 5-D inputs (5-D folded to 4-D), without mask and not synchronised, this layer
    calls the fused kernel; the moving statistics follow Keras' update rule with the biased
    batch variance, so weights, checkpoints and results are interchangeable with
    `keras.layers.BatchNormalization`. It computes in float32 (as Keras does under mixed
    precision): a bfloat16 / float16 input goes to the kernel as it is, which accumulates
    the moments and normalises in float32 with the float32 gamma, beta and statistics, and
    returns the compute dtype; this is what casting to float32 and back computes, without
    the two casts' passes over the map (and their two in the gradient). Any other case falls
    back to the Keras computation.
    """

    def _can_fuse(self, inputs, mask):
        rank = len(inputs.shape)
        return (mask is None and not self.synchronized and rank in (4, 5)
                and self.axis in (-1, rank - 1) and self.center and self.scale
                and not getattr(self, "renorm", False))

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        shape = tf.shape(inputs)
        x = inputs
        if len(inputs.shape) == 5:
            x = tf.reshape(inputs, tf.concat([[-1], shape[2:]], axis=0))
        if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            x = ops.cast(x, "float32")
        gamma, beta = ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32")
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True)
            # The kernel returns the unbiased variance; Keras tracks the biased one.
            count = ops.cast(ops.size(x) // ops.shape(x)[-1], "float32")
            variance = variance * (count - 1.0) / ops.maximum(count, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=ops.cast(self.moving_mean, "float32"),
                variance=ops.cast(self.moving_variance, "float32"), epsilon=self.epsilon,
                is_training=False)
        if len(inputs.shape) == 5:
            y = tf.reshape(y, shape)
        return y if y.dtype == self.compute_dtype else ops.cast(y, self.compute_dtype)
