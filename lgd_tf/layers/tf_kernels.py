"""TensorFlow fast paths of the layers, imported only under the TensorFlow backend.

Each has a plain `keras.ops` counterpart that every backend runs (tests/layers/
test_backend_paths.py holds them equal, values and gradients):
- `diffuse`: Eq. 2 and the pooling of Eq. 3 in one op with a hand-written gradient
  (`LGDBlock`; plain: `ReLU(F + US(r))` and `ops.mean`);
- `circular_convolution_signal` / `circular_convolution_matmul`: the Tensor Sketch's
  `irfft(rfft(a) * rfft(b))` with `tf.signal`, or with MatMul / Mul / Reshape only for the
  TFLite and ONNX converters (`TensorSketch`; plain: `keras.ops.rfft` / `irfft`);
- `fused_batch_norm`: `tf.nn.fused_batch_norm` (`BatchNormalization`; plain: Keras').
"""

import math

import numpy as np
import tensorflow as tf
from keras import ops


def _shape(x):
    """The static shape where known (no shape ops in the graph), else the dynamic one."""
    static = x.shape.as_list()
    if None not in static:
        return static
    dynamic = tf.unstack(tf.shape(x))
    return [d if s is None else s for s, d in zip(static, dynamic, strict=True)]


def _sum_positions(x):
    """Sum over the positions of `(B, N, C)`: `(B, C)`, as one batched matrix-vector product.

    oneDNN's GEMV reads the map once, multithreaded; `reduce_sum` over the middle axis is
    2-3x slower on CPU for the maps of a ResNet.
    """
    batch, positions, _ = _shape(x)
    ones = tf.ones(tf.stack([batch, 1, positions]), dtype=x.dtype)
    return tf.squeeze(tf.matmul(ones, x), axis=1)


def spatial_mean(x):
    """P(x): global average pooling of `(B, T, H, W, C)` over (T, H, W), shape `(B, C)`."""
    batch, frames, height, width, channels = _shape(x)
    positions = frames * height * width
    flat = tf.reshape(x, tf.stack([batch, positions, channels]))
    return _sum_positions(flat) / tf.cast(positions, x.dtype)


@tf.custom_gradient
def diffuse(f, residual):
    """`x = ReLU(f + US(residual))` and `P(x)` (Eq. 2 and the pooling of Eq. 3) in few passes.

    f `(B, T, H, W, C)`, residual `(B, C)`. Same values and gradients as the plain ops; the
    gradient is written out so that the map is traversed three times (add of the pooled
    gradient, ReLU gradient, sum for the residual's gradient) instead of the five of
    autodiff (Tile and scaling of the mean's gradient, AddN, ReLU gradient, sum).
    """
    batch, frames, height, width, channels = _shape(f)
    positions = frames * height * width
    # Broadcasting over one axis of (B, N, C) is faster in Eigen than over three of 5-D.
    flat_shape = tf.stack([batch, positions, channels])
    full_shape = tf.stack([batch, frames, height, width, channels])
    flat = tf.nn.relu(tf.reshape(f, flat_shape) + residual[:, None, :])
    count = tf.cast(positions, f.dtype)
    pooled = _sum_positions(flat) / count

    def grad(dx, dpooled):
        dx = tf.zeros_like(flat) if dx is None else tf.reshape(dx, flat_shape)
        if dpooled is not None:
            dx = dx + (dpooled / count)[:, None, :]
        dz = tf.raw_ops.ReluGrad(gradients=dx, features=flat)
        return tf.reshape(dz, full_shape), _sum_positions(dz)

    return (tf.reshape(flat, full_shape), pooled), grad


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


def circular_convolution(a, b, d, fft):
    """The Tensor Sketch's convolution of float32 `(M, d)` count sketches, by `fft` ("signal":
    `tf.signal.rfft` / `irfft`; "matmul": `circular_convolution_matmul`)."""
    if fft == "matmul":
        return circular_convolution_matmul(tf.ensure_shape(a, (None, d)),
                                           tf.ensure_shape(b, (None, d)))
    return tf.signal.irfft(tf.signal.rfft(a) * tf.signal.rfft(b), fft_length=[d])


def fused_batch_norm(layer, inputs, training):
    """`layer`'s batch normalisation of a 4-D or 5-D channels-last input by the fused kernel,
    with Keras' moving-statistics update (biased batch variance); see `BatchNormalization`."""
    shape = tf.shape(inputs)
    x = inputs
    if len(inputs.shape) == 5:
        x = tf.reshape(inputs, tf.concat([[-1], shape[2:]], axis=0))
    if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
        x = ops.cast(x, "float32")
    gamma, beta = ops.cast(layer.gamma, "float32"), ops.cast(layer.beta, "float32")
    if training and layer.trainable:
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=layer.epsilon, is_training=True)
        # The kernel returns the unbiased variance; Keras tracks the biased one.
        count = ops.cast(ops.size(x) // ops.shape(x)[-1], "float32")
        variance = variance * (count - 1.0) / ops.maximum(count, 1.0)
        momentum = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * momentum + mean * (1.0 - momentum))
        layer.moving_variance.assign(
            layer.moving_variance * momentum + variance * (1.0 - momentum))
    else:
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, mean=ops.cast(layer.moving_mean, "float32"),
            variance=ops.cast(layer.moving_variance, "float32"), epsilon=layer.epsilon,
            is_training=False)
    if len(inputs.shape) == 5:
        y = tf.reshape(y, shape)
    return y if y.dtype == layer.compute_dtype else ops.cast(y, layer.compute_dtype)
