"""TemporalMaxPooling / FrameMaxPooling: MaxPool3D's values, gradients right at exact ties."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lgd_tf.layers import FrameMaxPooling, TemporalMaxPooling

RNG = np.random.default_rng(11)


def numpy_temporal_max(x, pool, stride):
    frames = (x.shape[1] - pool) // stride + 1
    return np.stack([x[:, t * stride:t * stride + pool].max(axis=1) for t in range(frames)], 1)


@pytest.mark.parametrize("pool,stride,frames", [(2, 2, 8), (4, 4, 9), (3, 2, 7), (1, 1, 3)])
def test_temporal_values_match_numpy_and_max_pool_3d(pool, stride, frames):
    x = RNG.normal(size=(2, frames, 3, 4, 5)).astype("float32")
    out = TemporalMaxPooling(pool, stride)(x).numpy()
    np.testing.assert_array_equal(out, numpy_temporal_max(x, pool, stride))
    np.testing.assert_array_equal(out, keras.layers.MaxPool3D((pool, 1, 1), (stride, 1, 1))(x))


@pytest.mark.parametrize("pool,frames", [(2, 8), (4, 9), (2, 3)])
def test_temporal_values_with_unknown_shapes(pool, frames):
    """Every dimension unknown when traced (a SavedModel's signature): same values."""
    layer = TemporalMaxPooling(pool)
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None,) * 4 + (5,), tf.float32)])
    x = RNG.normal(size=(2, frames, 3, 4, 5)).astype("float32")
    out = fn(tf.constant(x)).numpy()
    assert out.shape == (2, frames // pool, 3, 4, 5)
    np.testing.assert_array_equal(out, numpy_temporal_max(x, pool, pool))
    assert fn(tf.zeros((0, frames, 3, 4, 5))).shape == (0, frames // pool, 3, 4, 5)


def test_frame_values_match_max_pool_3d():
    x = RNG.normal(size=(2, 3, 9, 8, 4)).astype("float32")
    for kwargs in ({"pool_size": 3, "strides": 2}, {"pool_size": (2, 3), "padding": "same"}):
        pool = kwargs["pool_size"]
        pool = (pool, pool) if isinstance(pool, int) else pool
        strides = kwargs.get("strides", pool)
        strides = (strides, strides) if isinstance(strides, int) else strides
        reference = keras.layers.MaxPool3D((1, *pool), (1, *strides),
                                           padding=kwargs.get("padding", "valid"))
        np.testing.assert_array_equal(FrameMaxPooling(**kwargs)(x), reference(x))


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
def test_tie_of_k_frames_gets_1_over_k_each(graph):
    # Window 1 (frames 0-3): four equal frames; window 2: one max 1e-6 above the others,
    # which MaxPool3D's CPU gradient would also credit (it credits everything within 1e-5).
    x = np.ones((1, 8, 1, 1, 1), "float32")
    x[0, 5] += 1e-6
    layer = TemporalMaxPooling(4)

    def grad(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            y = layer(v)
        return tape.gradient(y, v)

    g = (tf.function(grad) if graph else grad)(tf.constant(x)).numpy().ravel()
    np.testing.assert_array_equal(g, [0.25] * 4 + [0, 1, 0, 0])


def _static_clip_system(dtype):
    """A frame-wise conv on a static clip, then pool2-like temporal pooling: exact ties."""
    frame = RNG.normal(size=(2, 1, 5, 5, 2))
    clip = np.repeat(frame, 6, axis=1).astype(dtype)
    conv = keras.layers.Conv3D(3, (1, 3, 3), padding="same", dtype=dtype)
    conv.build(clip.shape)
    readout = RNG.normal(size=(2, 3, 5, 5, 3)).astype(dtype)
    return clip, conv, readout


def _loss(conv, pool, clip, readout):
    return tf.reduce_sum(pool(tf.nn.relu(conv(clip))) * readout)


def _finite_differences(conv, clip, readout, entries, eps=1e-6):
    """Central differences in float64 of the loss with respect to kernel entries."""
    pool = TemporalMaxPooling(2, dtype="float64")
    kernel = conv.kernel.numpy()
    out = []
    for index in entries:
        values = []
        for sign in (1.0, -1.0):
            shifted = kernel.copy()
            shifted[index] += sign * eps
            conv.kernel.assign(shifted)
            values.append(float(_loss(conv, pool, clip, readout)))
        out.append((values[0] - values[1]) / (2 * eps))
    conv.kernel.assign(kernel)
    return np.array(out)


def test_gradient_matches_float64_finite_differences_on_a_static_clip():
    """Every frame of the clip is equal, so each pooled window is an exact tie; moving a conv
    weight moves the tied entries together, so the derivative exists and finite differences
    give it exactly. TemporalMaxPooling's gradient matches on every path; MaxPool3D's eager
    CPU gradient credits both entries of each tie and comes out twice as large."""
    clip, conv, readout = _static_clip_system("float64")
    entries = [(0, 0, 0, 0, 0), (0, 1, 1, 1, 2), (0, 2, 0, 1, 1), (0, 1, 2, 0, 0)]
    expected = _finite_differences(conv, clip, readout, entries)
    assert np.abs(expected).min() > 1e-3
    pool = TemporalMaxPooling(2, dtype="float64")

    def grad():
        with tf.GradientTape() as tape:
            loss = _loss(conv, pool, clip, readout)
        return tape.gradient(loss, conv.kernel)

    for fn in (grad, tf.function(grad), tf.function(grad, jit_compile=True)):
        g = fn().numpy()
        np.testing.assert_allclose([g[i] for i in entries], expected, rtol=1e-6)

    # The formulation it replaces (float32: MaxPool3D has no float64 kernel).
    conv32 = keras.layers.Conv3D(3, (1, 3, 3), padding="same")
    conv32.build(clip.shape)
    conv32.set_weights([w.astype("float32") for w in conv.get_weights()])
    old_pool = keras.layers.MaxPool3D((2, 1, 1))
    with tf.GradientTape() as tape:
        loss = _loss(conv32, old_pool, clip.astype("float32"), readout.astype("float32"))
    old = tape.gradient(loss, conv32.kernel).numpy()
    np.testing.assert_allclose([old[i] for i in entries], 2 * expected, rtol=1e-4)


@pytest.mark.parametrize("kwargs,match", [
    ({"pool_size": 0}, "positive"),
    ({"pool_size": 2, "strides": 0}, "positive"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TemporalMaxPooling(**kwargs)


def test_too_few_frames_and_bad_shapes():
    with pytest.raises(ValueError, match="at least 4 frames"):
        TemporalMaxPooling(4)(np.zeros((1, 3, 2, 2, 1), "float32"))
    with pytest.raises(ValueError, match="clip"):
        FrameMaxPooling(2)(np.zeros((1, 4, 4, 1), "float32"))
    with pytest.raises(ValueError, match="padding"):
        FrameMaxPooling(2, padding="causal")
