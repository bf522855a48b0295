"""Tensor Sketch projection of the bilinear kernel (Gao et al. 2016; Sec. 3.2, Eq. 4-5)."""

import contextlib
import math
import threading

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# How the circular convolution irfft(rfft(a) * rfft(b)) is computed:
#   "signal": tf.signal.rfft / irfft (default; fastest in TensorFlow).
#   "matmul": the four-step (Cooley-Tukey) DFT with d = n1 * n2 as MatMul / Mul / Reshape
#             only, for converters without FFT (TFLite built-ins, ONNX via tf2onnx).
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


def dft_factors(d):
    """(n1, n2) with n1 * n2 = d, n1 <= n2 and n1 the largest divisor of d up to sqrt(d)
    (8192 -> (64, 128)); a prime d gives (1, d), a plain d x d DFT."""
    n1 = max(k for k in range(1, math.isqrt(d) + 1) if d % k == 0)
    return n1, d // n1


class _FourStepDFT:
    """Constants of the four-step DFT of length d = n1 * n2, float32.

    With n = n2 * i1 + i2 (x reshaped to (n1, n2)) and k = k1 + n1 * k2:
    X[k] = sum_i2 W_d^(i2 k1) (sum_i1 x[i1, i2] W_n1^(i1 k1)) W_n2^(i2 k2), W_m = exp(-2 pi i / m).
    The spectrum is kept in the (k1, k2) layout: a pointwise product does not need the
    natural order, and the inverse reads the same layout back.
    """

    def __init__(self, d):
        self.n1, self.n2 = dft_factors(d)

        def roots(m, rows, cols):  # exp(-2 pi i (r c mod m) / m), angles reduced exactly
            angle = -2.0 * np.pi * (np.outer(rows, cols) % m) / m
            return np.cos(angle), np.sin(angle)

        r1, i1 = roots(self.n1, np.arange(self.n1), np.arange(self.n1))
        r2, i2 = roots(self.n2, np.arange(self.n2), np.arange(self.n2))
        tr, ti = roots(d, np.arange(self.n1), np.arange(self.n2))  # twiddles W_d^(k1 i2)
        f32 = lambda a: tf.constant(np.asarray(a, np.float32))  # noqa: E731
        # Step 1, real input: [Re; Im] = [F1r; F1i] x, a (2 n1, n1) matrix.
        self.forward1 = f32(np.concatenate([r1, i1], axis=0))
        self.twiddle_re, self.twiddle_im = f32(tr), f32(ti)
        # Step 3, complex: [Yr, Yi] @ [[F2r, F2i], [-F2i, F2r]] = [Zr, Zi].
        self.forward2 = f32(np.block([[r2, i2], [-i2, r2]]))
        # Inverse step 1 (conj F2 along k2): [Zr, Zi] @ [[F2r, -F2i], [F2i, F2r]] = [Ur, Ui].
        self.inverse2 = f32(np.block([[r2, -i2], [i2, r2]]))
        # Inverse last step, real part of conj(F1) U over k1, divided by d: [F1r, F1i] / d.
        self.inverse1 = f32(np.concatenate([r1, i1], axis=1) / d)

    def forward(self, x):
        """Real `(M, d)` -> the spectrum as (re, im), each `(M, n1, n2)` in (k1, k2) layout."""
        x = tf.reshape(x, (-1, self.n1, self.n2))
        y = tf.matmul(self.forward1, x)  # (M, 2 n1, n2), broadcast over M
        yr, yi = y[:, :self.n1], y[:, self.n1:]
        yr, yi = (yr * self.twiddle_re - yi * self.twiddle_im,
                  yr * self.twiddle_im + yi * self.twiddle_re)
        z = tf.matmul(tf.concat([yr, yi], axis=-1), self.forward2)  # (M, n1, 2 n2)
        return z[..., :self.n2], z[..., self.n2:]

    def inverse_real(self, zr, zi):
        """The real part of the inverse DFT of (zr, zi) in (k1, k2) layout -> `(M, d)`."""
        u = tf.matmul(tf.concat([zr, zi], axis=-1), self.inverse2)  # (M, k1, 2 n2)
        ur, ui = u[..., :self.n2], u[..., self.n2:]
        # conj(W_d^(k1 i2)) twiddles, then sum over k1 of Re(conj(F1)[i1, k1] U[k1, i2]).
        vr = ur * self.twiddle_re + ui * self.twiddle_im
        vi = ui * self.twiddle_re - ur * self.twiddle_im
        x = tf.matmul(self.inverse1, tf.concat([vr, vi], axis=1))  # (M, n1, n2)
        return tf.reshape(x, (-1, self.n1 * self.n2))


def circular_convolution_matmul(a, b):
    """`irfft(rfft(a) * rfft(b))` along the last axis of float32 `(M, d)` tensors, exactly (up
    to float32 rounding), with MatMul / Mul / Reshape / slicing only (no FFT op)."""
    d = a.shape[-1]
    if d is None:
        raise ValueError(f"The last axis must be known. Received: {a.shape}")
    dft = _FourStepDFT(int(d))
    rows = tf.shape(a)[0]
    ar, ai = dft.forward(tf.concat([a, b], axis=0))  # one pass for both sketches
    br, bi = ar[rows:], ai[rows:]
    ar, ai = ar[:rows], ai[:rows]
    return dft.inverse_real(ar * br - ai * bi, ar * bi + ai * br)


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
            enclosing `fft_implementation(...)` block.

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
        shape = tf.shape(x)
        rows = ops.reshape(x, (-1, shape[-1]))
        a = self.count_sketch(rows, self.hash1, self.sign1)
        b = self.count_sketch(rows, self.hash2, self.sign2)
        if self.fft == "matmul":
            a = tf.ensure_shape(a, (None, self.output_dim))
            sketch = circular_convolution_matmul(a, tf.ensure_shape(b, (None, self.output_dim)))
        else:
            sketch = tf.signal.irfft(tf.signal.rfft(a) * tf.signal.rfft(b),
                                     fft_length=[self.output_dim])
        out_shape = tf.concat([shape[:-1], [self.output_dim]], axis=0)
        return ops.cast(tf.reshape(sketch, out_shape), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update({"output_dim": self.output_dim, "seed": self.seed, "fft": self.fft})
        return config
