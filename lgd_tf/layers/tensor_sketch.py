"""Tensor Sketch projection of the bilinear kernel (Gao et al. 2016; Sec. 3.2, Eq. 4-5)."""

import contextlib
import threading

import keras
import numpy as np
from keras import ops

if keras.backend.backend() == "tensorflow":
    from lgd_tf.layers import tf_kernels
    from lgd_tf.layers.tf_kernels import (  # noqa: F401  (their home before tf_kernels)
        _FourStepDFT,
        circular_convolution_matmul,
        dft_factors,
    )
else:
    tf_kernels = None

# How the circular convolution irfft(rfft(a) * rfft(b)) is computed under TensorFlow:
#   "signal": tf.signal.rfft / irfft (default; fastest in TensorFlow).
#   "matmul": the four-step (Cooley-Tukey) DFT with d = n1 * n2 as MatMul / Mul / Reshape
#             only, for converters without FFT (TFLite built-ins, ONNX via tf2onnx).
# Other backends compute both with keras.ops.rfft / irfft (the export is TensorFlow's).
FFT_IMPLEMENTATIONS = ("signal", "matmul")
_DEFAULT = threading.local()


@contextlib.contextmanager
def fft_implementation(name):
    """TensorSketch layers created inside the block (also those built by a parent layer, e.g.
    `LocalGlobalSketch`, or by `from_config`) get `fft=name` when not given one."""
    _check_fft(name)
    previous = getattr(_DEFAULT, "name", None)
    _DEFAULT.name = name
    try:
        yield
    finally:
        _DEFAULT.name = previous


def _check_fft(name):
    if name not in FFT_IMPLEMENTATIONS:
        raise ValueError(f"`fft` must be one of {FFT_IMPLEMENTATIONS}. Received: {name!r}")


def circular_convolution(a, b, d):
    """`irfft(rfft(a) * rfft(b))` along the last axis of float32 `(M, d)` tensors with
    `keras.ops` (any backend), the complex product written out on (real, imaginary) pairs."""
    ar, ai = ops.rfft(a)
    br, bi = ops.rfft(b)
    return ops.irfft((ar * br - ai * bi, ar * bi + ai * br), fft_length=d)


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
        fft: "signal" (tf.signal.rfft / irfft) or "matmul" (the same convolution as a
            four-step DFT of MatMul / Mul / Reshape ops, for TFLite and ONNX export; equal to
            "signal" within float32 rounding). None: "signal", or the name set by an
            enclosing `fft_implementation(...)` block. Under JAX or PyTorch both compute
            `keras.ops.rfft` / `irfft`.

    Input `(..., C)` -> output `(..., d)`.
    """

    def __init__(self, output_dim=8192, seed=0, fft=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if int(output_dim) < 2:
            raise ValueError(f"`output_dim` must be >= 2. Received: {output_dim}")
        if fft is None:
            fft = getattr(_DEFAULT, "name", None) or "signal"
        _check_fft(fft)
        self.output_dim = int(output_dim)
        self.seed = int(seed)
        self.fft = fft

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
        shape = ops.shape(x)
        rows = ops.reshape(x, (-1, x.shape[-1]))
        a = self.count_sketch(rows, self.hash1, self.sign1)
        b = self.count_sketch(rows, self.hash2, self.sign2)
        if tf_kernels is not None:
            sketch = tf_kernels.circular_convolution(a, b, self.output_dim, self.fft)
        else:
            sketch = circular_convolution(a, b, self.output_dim)
        out_shape = tuple(shape[:-1]) + (self.output_dim,)
        return ops.cast(ops.reshape(sketch, out_shape), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update({"output_dim": self.output_dim, "seed": self.seed, "fft": self.fft})
        return config
