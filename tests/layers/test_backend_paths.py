"""TensorFlow's fast paths (lgd_tf/layers/tf_kernels.py) against the `keras.ops` paths that
JAX and PyTorch run: the same values and gradients within 1e-5 (relative to the largest)."""

import keras
import numpy as np
import pytest

if keras.backend.backend() != "tensorflow":
    pytest.skip("the fast paths are TensorFlow's", allow_module_level=True)

import tensorflow as tf  # noqa: E402

from lgd_tf.layers import (  # noqa: E402
    BatchNormalization,
    Bottleneck2D,
    LGDBlock,
    P3DBottleneck,
    TensorSketch,
    batch_norm,
    lgd_block,
    tensor_sketch,
)

RNG = np.random.default_rng(5)


def close(actual, expected, tol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=0,
                               atol=tol * max(1.0, float(np.abs(expected).max())))


def values_and_gradients(fn, inputs, variables, cotangents):
    """fn's outputs and the gradients of <outputs, cotangents> w.r.t. inputs and variables."""
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = keras.tree.flatten(fn(*inputs))
        objective = sum(tf.reduce_sum(o * c) for o, c in zip(outputs, cotangents, strict=True))
    grads = tape.gradient(objective, list(inputs) + list(variables))
    assert all(g is not None for g in grads)
    return [o.numpy() for o in outputs] + [g.numpy() for g in grads]


def both_paths(monkeypatch, module, plain, fn, inputs, variables, cotangents):
    fast = values_and_gradients(fn, inputs, variables, cotangents)
    with monkeypatch.context() as patch:
        for name, value in plain.items():
            patch.setattr(module, name, value)
        slow = values_and_gradients(fn, inputs, variables, cotangents)
    assert len(fast) == len(slow) == len(inputs) + len(variables) + len(cotangents)
    for a, b in zip(fast, slow, strict=True):
        close(a, b)
    return fast


@pytest.mark.parametrize("unit_cls", [P3DBottleneck, Bottleneck2D])
@pytest.mark.parametrize("variant", ["lgd", "v1", "v2"])
def test_fused_diffusion_equals_the_plain_ops(monkeypatch, unit_cls, variant):
    block = LGDBlock(unit_cls(4, strides=2), rank_ratio=4, variant=variant)
    x = tf.constant(RNG.normal(size=(2, 4, 6, 6, 8)).astype("float32"))
    g = tf.constant(np.abs(RNG.normal(size=(2, 8))).astype("float32"))
    block([x, g])
    cotangents = [RNG.normal(size=(2, 4, 3, 3, 16)).astype("float32"),
                  RNG.normal(size=(2, 16)).astype("float32")]
    plain = {"diffuse": None, "spatial_mean": lgd_block.plain_spatial_mean}
    fast = both_paths(monkeypatch, lgd_block, plain,
                      lambda x, g: block([x, g], training=True), [x, g],
                      block.trainable_variables, cotangents)
    assert np.abs(fast[1]).max() > 0 and np.abs(fast[2]).max() > 0


@pytest.mark.parametrize("fft", ["signal", "matmul"])
def test_tensor_sketch_fft_equals_keras_ops_rfft(monkeypatch, fft):
    layer = TensorSketch(64, seed=2, fft=fft)
    x = tf.constant(RNG.normal(size=(3, 2, 24)).astype("float32"))
    cotangent = RNG.normal(size=(3, 2, 64)).astype("float32")
    fast = both_paths(monkeypatch, tensor_sketch, {"tf_kernels": None}, layer, [x], [],
                      [cotangent])
    assert np.abs(fast[0]).max() > 1e-2


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_equals_keras(monkeypatch, training):
    layer = BatchNormalization(momentum=0.5)
    x = tf.constant((RNG.normal(size=(2, 3, 4, 4, 6)) * 2 + 1).astype("float32"))
    layer(x)
    layer.moving_mean.assign(RNG.normal(size=6).astype("float32"))
    layer.moving_variance.assign(RNG.uniform(0.5, 2, size=6).astype("float32"))
    cotangent = RNG.normal(size=(2, 3, 4, 4, 6)).astype("float32")
    both_paths(monkeypatch, batch_norm, {"tf_kernels": None},
               lambda x: layer(x, training=training), [x], layer.trainable_variables,
               [cotangent])
