"""Tensor Sketch projection of the bilinear kernel (Gao et al. 2016; Sec. 3.2, Eq. 4-5)."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="lgd_tf")
class TensorSketch(keras.layers.Layer):
    """phi(x) with `<phi(x), phi(y)>` an unbiased estimate of `<x, y>^2` (Eq. 4).

    phi(x) = IFFT(FFT(C_1 x) * FFT(C_2 x)), the exact circular convolution of two count
    sketches `C_k x` (`(C_k x)_j = sum_{c: h_k(c) = j} s_k(c) x_c`) with hash indices
    `h_k(c)` uniform in [0, d) and signs `s_k(c)` in {-1, +1}. The hashes and signs are drawn
    from `seed` at build time and stored as non-trainable weights, so saved models,
    checkpoints and SavedModels carry them. No signed square root or normalisation is applied.
    The FFT runs in float32 whatever the layer's compute dtype.

    Args:
        output_dim: d, the sketch dimension (8192 by default).
        seed: integer seed of the hashes and signs.

    Input `(..., C)` -> output `(..., d)`.
    """

    def __init__(self, output_dim=8192, seed=0, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if int(output_dim) < 2:
            raise ValueError(f"`output_dim` must be >= 2. Received: {output_dim}")
        self.output_dim = int(output_dim)
        self.seed = int(seed)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"The channel axis must be known. Received: {input_shape}")
        rng = np.random.default_rng(self.seed)
        for k in (1, 2):
            hashes = self.add_weight(name=f"hash{k}", shape=(channels,), dtype="int32",
                                     initializer="zeros", trainable=False)
            signs = self.add_weight(name=f"sign{k}", shape=(channels,), dtype="float32",
                                    initializer="zeros", trainable=False)
            hashes.assign(rng.integers(0, self.output_dim, size=channels).astype("int32"))
            signs.assign((2 * rng.integers(0, 2, size=channels) - 1).astype("float32"))
            setattr(self, f"hash{k}", hashes)
            setattr(self, f"sign{k}", signs)

    def count_sketch(self, x, hashes, signs):
        """`(M, C)` float32 -> `(M, d)`: the count sketch of every row."""
        columns = ops.transpose(x * signs)
        return ops.transpose(ops.segment_sum(columns, hashes, num_segments=self.output_dim))

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        shape = tf.shape(x)
        rows = ops.reshape(x, (-1, shape[-1]))
        a = tf.signal.rfft(self.count_sketch(rows, self.hash1, self.sign1))
        b = tf.signal.rfft(self.count_sketch(rows, self.hash2, self.sign2))
        sketch = tf.signal.irfft(a * b, fft_length=[self.output_dim])
        out_shape = tf.concat([shape[:-1], [self.output_dim]], axis=0)
        return ops.cast(tf.reshape(sketch, out_shape), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update({"output_dim": self.output_dim, "seed": self.seed})
        return config
