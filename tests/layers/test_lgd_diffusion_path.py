"""The rewritten diffusion path of the LGD block (`diffuse`, `spatial_mean`: hand-written
gradient, pooling as a matrix product) against Eq. 2-3 written plainly: NumPy for values and
gradients, TensorFlow autodiff of the plain ops for the whole block's weight gradients."""

import numpy as np
import pytest
import tensorflow as tf

from lgd_tf.layers import Bottleneck2D, LGDBlock, P3DBottleneck
from lgd_tf.layers.lgd_block import diffuse, spatial_mean

RNG = np.random.default_rng(1)


def numpy_diffuse(f, r, dx, dp):
    """x = ReLU(f + US(r)), p = P(x) and the gradients of <x, dx> + <p, dp> w.r.t. f and r."""
    z = f + r[:, None, None, None, :]
    x = np.maximum(z, 0.0)
    count = np.prod(f.shape[1:4])
    p = x.mean(axis=(1, 2, 3))
    dz = (dx + dp[:, None, None, None, :] / count) * (z > 0)
    return x, p, dz, dz.sum(axis=(1, 2, 3))


def close(actual, expected, tol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("shape", [(2, 4, 6, 6, 16), (3, 1, 7, 5, 8), (1, 3, 2, 2, 32)])
@pytest.mark.parametrize("compiled", [False, True])
def test_diffuse_values_and_gradients_match_numpy(shape, compiled):
    f = RNG.normal(size=shape).astype("float32")
    r = RNG.normal(size=(shape[0], shape[-1])).astype("float32")
    dx = RNG.normal(size=shape).astype("float32")
    dp = RNG.normal(size=(shape[0], shape[-1])).astype("float32")

    def run(f, r):
        with tf.GradientTape() as tape:
            tape.watch([f, r])
            x, p = diffuse(f, r)
            objective = tf.reduce_sum(x * dx) + tf.reduce_sum(p * dp)
        return (x, p, *tape.gradient(objective, [f, r]))

    fn = tf.function(run) if compiled else run
    got = fn(tf.constant(f), tf.constant(r))
    for actual, expected in zip(got, numpy_diffuse(f, r, dx, dp), strict=True):
        close(actual, expected)


@pytest.mark.parametrize("used", ["x", "pooled"])
def test_diffuse_with_one_output_unused(used):
    shape = (2, 2, 3, 3, 8)
    f = tf.constant(RNG.normal(size=shape).astype("float32"))
    r = tf.constant(RNG.normal(size=(2, 8)).astype("float32"))
    dx = RNG.normal(size=shape).astype("float32")
    dp = RNG.normal(size=(2, 8)).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch([f, r])
        x, p = diffuse(f, r)
        objective = tf.reduce_sum(x * dx) if used == "x" else tf.reduce_sum(p * dp)
    df, dr = tape.gradient(objective, [f, r])
    zero_dx, zero_dp = np.zeros_like(dx), np.zeros_like(dp)
    _, _, ref_df, ref_dr = numpy_diffuse(f.numpy(), r.numpy(), dx if used == "x" else zero_dx,
                                         dp if used == "pooled" else zero_dp)
    close(df, ref_df)
    close(dr, ref_dr)


def test_spatial_mean_and_bfloat16_dtypes():
    x = RNG.normal(size=(2, 3, 4, 5, 6)).astype("float32")
    close(spatial_mean(tf.constant(x)), x.mean(axis=(1, 2, 3)))
    out, pooled = diffuse(tf.constant(x, tf.bfloat16), tf.zeros((2, 6), tf.bfloat16))
    assert out.dtype == tf.bfloat16 and pooled.dtype == tf.bfloat16
    close(tf.cast(pooled, tf.float32), np.maximum(x, 0).mean(axis=(1, 2, 3)), tol=2e-2)


def plain_block(block, x, g, training):
    """Eq. 2-3 (or Eq. 9 + 3 for v2) with plain ops and autodiff, on the block's weights."""
    f = block.local_unit(x, training=training)

    def project(layer, v):
        return tf.matmul(tf.matmul(v, layer.down), layer.up)

    residual = project(block.global_to_local, g)[:, None, None, None, :]
    if block.variant == "v2":
        x_out = tf.nn.relu(f * tf.sigmoid(residual))
    else:
        x_out = tf.nn.relu(f + residual)
    pooled = tf.reduce_mean(x_out, axis=(1, 2, 3))
    if block.variant == "v1":
        return x_out, pooled
    return x_out, tf.nn.relu(project(block.local_to_global, pooled)
                             + project(block.global_to_global, g))


@pytest.mark.parametrize("unit_cls", [P3DBottleneck, Bottleneck2D])
@pytest.mark.parametrize("variant", ["lgd", "v1", "v2"])
def test_block_gradients_match_the_plain_equations(unit_cls, variant):
    # Stage start (stride 2, projection shortcut, 8 -> 16 channels), training mode.
    block = LGDBlock(unit_cls(4, strides=2), rank_ratio=4, variant=variant)
    x = tf.constant(RNG.normal(size=(2, 4, 6, 6, 8)).astype("float32"))
    g = tf.constant(np.maximum(RNG.normal(size=(2, 8)), 0).astype("float32"))
    block([x, g])
    cx = RNG.normal(size=(2, 4, 3, 3, 16)).astype("float32")
    cg = RNG.normal(size=(2, 16)).astype("float32")
    results = []
    for fn in (lambda: block([x, g], training=True), lambda: plain_block(block, x, g, True)):
        with tf.GradientTape() as tape:
            tape.watch([x, g])
            x_out, g_out = fn()
            objective = tf.reduce_sum(x_out * cx) + tf.reduce_sum(g_out * cg)
        grads = tape.gradient(objective, [x, g, *block.trainable_variables])
        results.append([x_out, g_out, *grads])
    assert len(results[0]) == 4 + len(block.trainable_variables)
    for actual, expected in zip(*results, strict=True):
        close(actual, expected)
    assert np.abs(results[1][1].numpy()).max() > 0
