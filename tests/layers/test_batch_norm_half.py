"""The fused BatchNormalization under mixed precision: the half-precision map goes to the
kernel without casts and gives what casting to float32 and back gives."""

import numpy as np
import pytest
import tensorflow as tf

from lgd_tf.layers import BatchNormalization

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_input_matches_float32_and_has_no_casts_on_the_map(training, dtype):
    x = (RNG.normal(size=(2, 3, 5, 5, 8)) * 3 + 1).astype("float32")
    half = BatchNormalization(dtype=f"mixed_{dtype}", momentum=0.5)
    full = BatchNormalization(momentum=0.5)
    half.build(x.shape)
    full.build(x.shape)
    half.set_weights([RNG.uniform(0.5, 1.5, 8), RNG.normal(size=8), RNG.normal(size=8) * 0.1,
                      RNG.uniform(0.5, 2.0, 8)])
    full.set_weights(half.get_weights())
    x_half = tf.cast(x, dtype)

    @tf.function
    def run(v):
        return half(v, training=training)

    graph = run.get_concrete_function(tf.TensorSpec(x.shape, dtype)).graph
    map_casts = [op for op in graph.get_operations() if op.type == "Cast"
                 and op.outputs[0].shape.rank not in (None, 0, 1)]
    assert not map_casts, [op.name for op in map_casts]
    y = run(x_half)
    assert y.dtype == dtype
    expected = full(tf.cast(x_half, tf.float32), training=training)
    np.testing.assert_allclose(tf.cast(y, tf.float32), tf.cast(tf.cast(expected, dtype),
                                                                tf.float32), rtol=2e-2, atol=2e-2)
    for a, b in zip(half.get_weights(), full.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert all(w.dtype == "float32" for w in half.weights)
