"""Tensor Sketch against a naive count sketch + circular convolution and the kernel property."""

import keras
import numpy as np
import pytest

from lgd_tf.layers import TensorSketch
from tests.test_case import assert_config_round_trip, assert_keras_round_trip

RNG = np.random.default_rng(1)


def naive_tensor_sketch(x, h1, s1, h2, s2, d):
    """Loops: count sketches a, b of x, then out[k] = sum_{(i + j) mod d = k} a[i] b[j]."""
    a = np.zeros(d)
    b = np.zeros(d)
    for c, v in enumerate(x):
        a[h1[c]] += s1[c] * v
        b[h2[c]] += s2[c] * v
    out = np.zeros(d)
    for i in range(d):
        for j in range(d):
            out[(i + j) % d] += a[i] * b[j]
    return out


def test_matches_naive_count_sketch_convolution():
    layer = TensorSketch(output_dim=16, seed=3)
    x = RNG.normal(size=(2, 3, 10)).astype("float32")
    out = layer(x).numpy()
    h1, s1, h2, s2 = (w.numpy() for w in (layer.hash1, layer.sign1, layer.hash2, layer.sign2))
    assert out.shape == (2, 3, 16)
    for idx in np.ndindex(2, 3):
        ref = naive_tensor_sketch(x[idx].astype("float64"), h1, s1, h2, s2, 16)
        np.testing.assert_allclose(out[idx], ref, rtol=1e-4, atol=1e-4)


def test_kernel_property_over_seeds():
    """E<TS(x), TS(y)> = <x, y>^2 (unbiased over the random hashes and signs)."""
    x = RNG.normal(size=24).astype("float32")
    y = (0.6 * x + 0.8 * RNG.normal(size=24)).astype("float32")
    target = float(np.dot(x, y)) ** 2
    estimates = []
    for seed in range(60):
        layer = TensorSketch(output_dim=64, seed=seed)
        tx, ty = layer(np.stack([x, y])).numpy()
        estimates.append(np.dot(tx, ty))
    estimates = np.asarray(estimates)
    stderr = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - target) < 4 * stderr + 1e-3 * target
    # The estimator is not trivially exact (each seed differs) and has a sensible spread.
    assert estimates.std() > 0 and stderr < 0.25 * target


def test_hashes_and_signs_follow_the_seed():
    a, b, c = TensorSketch(32, seed=5), TensorSketch(32, seed=5), TensorSketch(32, seed=6)
    for layer in (a, b, c):
        layer.build((None, 40))
    np.testing.assert_array_equal(a.hash1.numpy(), b.hash1.numpy())
    assert not np.array_equal(a.hash1.numpy(), c.hash1.numpy())
    assert set(np.unique(a.sign2.numpy())) <= {-1.0, 1.0}
    assert a.hash1.numpy().min() >= 0 and a.hash1.numpy().max() < 32
    assert not a.trainable_weights and len(a.non_trainable_weights) == 4


def test_float32_inside_under_mixed_precision():
    layer = TensorSketch(16, seed=0, dtype="mixed_float16")
    x = RNG.normal(size=(2, 8)).astype("float16")
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    ref = TensorSketch(16, seed=0)(x.astype("float32")).numpy()
    np.testing.assert_allclose(np.asarray(out, "float32"), ref, rtol=2e-2, atol=2e-2)


def test_saved_model_carries_the_hashes(tmp_path):
    inputs = keras.Input((5, 12))
    model = keras.Model(inputs, TensorSketch(32, seed=11)(inputs))
    x = RNG.normal(size=(2, 5, 12)).astype("float32")
    loaded = assert_keras_round_trip(model, x, str(tmp_path / "ts.keras"))
    np.testing.assert_array_equal(loaded.layers[-1].hash2.numpy(), model.layers[-1].hash2.numpy())
    assert_config_round_trip(model.layers[-1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="output_dim"):
        TensorSketch(output_dim=1)
