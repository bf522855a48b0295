"""The fused BatchNormalization against keras.layers.BatchNormalization."""

import keras
import numpy as np
import pytest

from lgd_tf.layers import BatchNormalization
from tests.test_case import assert_config_round_trip

RNG = np.random.default_rng(6)


@pytest.mark.parametrize("shape", [(4, 5, 5, 3), (2, 3, 4, 4, 3), (6, 3)])
def test_matches_keras_batch_norm(shape):
    ours = BatchNormalization(momentum=0.8, epsilon=1e-3)
    reference = keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-3)
    x = RNG.normal(2.0, 3.0, size=shape).astype("float32")
    ours.build(shape)
    reference.build(shape)
    weights = [RNG.uniform(0.5, 1.5, 3), RNG.normal(size=3), RNG.normal(size=3),
               RNG.uniform(0.5, 1.5, 3)]
    ours.set_weights(weights)
    reference.set_weights(weights)
    for training in (True, True, False):
        np.testing.assert_allclose(ours(x, training=training), reference(x, training=training),
                                   rtol=1e-4, atol=1e-4)
        for a, b in zip(ours.weights, reference.weights, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours.moving_mean.numpy(), weights[2])


def test_frozen_layer_uses_moving_statistics():
    layer = BatchNormalization()
    x = RNG.normal(5.0, 2.0, size=(4, 3, 3, 2)).astype("float32")
    layer.build(x.shape)
    layer.trainable = False
    np.testing.assert_allclose(layer(x, training=True), x / np.sqrt(1 + layer.epsilon),
                               rtol=1e-5)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), 0.0)


def test_config_round_trip():
    assert_config_round_trip(BatchNormalization(momentum=0.7, epsilon=1e-4, name="bn"))
