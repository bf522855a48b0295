"""P3D-A and 2-D bottlenecks against the same units written with keras Conv3D layers."""

import keras
import numpy as np
import pytest

from lgd_tf.layers import Bottleneck2D, P3DBottleneck
from tests.test_case import assert_config_round_trip, assert_same_outputs_after_rebuild

RNG = np.random.default_rng(2)


def randomise_batch_norms(unit):
    for layer in unit._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([RNG.uniform(0.5, 1.5, n), RNG.normal(0, 0.1, n),
                               RNG.normal(0, 0.1, n), RNG.uniform(0.5, 1.5, n)])


def conv3d_reference(unit, x):
    """The unit as 1x1x1 / 1x3x3 / 3x1x1 Conv3D layers (inference-mode BatchNorm)."""

    def conv(conv2d, bn, v, kernel_shape, strides=(1, 1, 1)):
        kernel = conv2d.kernel.numpy().reshape(kernel_shape)
        layer = keras.layers.Conv3D(kernel.shape[-1], kernel.shape[:3], strides=strides,
                                    padding="same", use_bias=False)
        layer.build(v.shape)
        layer.set_weights([kernel])
        gamma, beta, mean, var = (w.numpy() for w in bn.weights)
        return (layer(v).numpy() - mean) / np.sqrt(var + bn.epsilon) * gamma + beta

    s = (1, unit.strides, unit.strides)
    cin, f = x.shape[-1], unit.filters
    y = np.maximum(conv(unit.conv_a, unit.bn_a, x, (1, 1, 1, cin, f), s), 0)
    y = np.maximum(conv(unit.conv_s, unit.bn_s, y, (1, 3, 3, f, f)), 0)
    if isinstance(unit, P3DBottleneck):
        y = np.maximum(conv(unit.conv_t, unit.bn_t, y, (3, 1, 1, f, f)), 0)
    y = conv(unit.conv_c, unit.bn_c, y, (1, 1, 1, f, 4 * f))
    shortcut = conv(unit.conv_p, unit.bn_p, x, (1, 1, 1, cin, 4 * f), s) if unit._projection else x
    return y + shortcut


@pytest.mark.parametrize("cls", [P3DBottleneck, Bottleneck2D])
@pytest.mark.parametrize("strides,cin", [(1, 16), (2, 8)])
def test_matches_conv3d_reference(cls, strides, cin):
    unit = cls(4, strides=strides)
    x = RNG.normal(size=(2, 3, 6, 6, cin)).astype("float32")
    unit.build(x.shape)
    randomise_batch_norms(unit)
    out = unit(x, training=False).numpy()
    assert out.shape == (2, 3, 6 // strides, 6 // strides, 16)
    assert unit._projection == (strides != 1 or cin != 16)
    np.testing.assert_allclose(out, conv3d_reference(unit, x), rtol=1e-4, atol=1e-4)


def test_no_last_relu_and_frames_independent_in_2d():
    unit = Bottleneck2D(4)
    x = RNG.normal(size=(1, 3, 5, 5, 16)).astype("float32")
    out = unit(x, training=False).numpy()
    assert out.min() < 0
    per_frame = [unit(x[:, t:t + 1], training=False).numpy() for t in range(3)]
    np.testing.assert_allclose(out, np.concatenate(per_frame, axis=1), rtol=1e-5, atol=1e-5)


def test_parameter_counts():
    f, cin = 8, 16
    bn = 4  # gamma, beta, moving mean, moving variance per channel
    unit = P3DBottleneck(f, strides=2)
    unit.build((None, 4, 8, 8, cin))
    expected = cin * f + 9 * f * f + 3 * f * f + f * 4 * f + cin * 4 * f + bn * (3 * f + 8 * f)
    assert unit.count_params() == expected
    unit2d = Bottleneck2D(f)
    unit2d.build((None, 4, 8, 8, 4 * f))
    assert unit2d.count_params() == 4 * f * f + 9 * f * f + f * 4 * f + bn * (2 * f + 4 * f)


def test_serialization():
    unit = P3DBottleneck(4, strides=2, temporal_kernel_size=5, bn_epsilon=1e-3)
    x = RNG.normal(size=(1, 5, 4, 4, 8)).astype("float32")
    assert_config_round_trip(unit)
    assert_same_outputs_after_rebuild(unit, x)


def test_bad_arguments():
    with pytest.raises(ValueError, match="strides"):
        P3DBottleneck(4, strides=3)
    with pytest.raises(ValueError, match="temporal_kernel_size"):
        P3DBottleneck(4, temporal_kernel_size=2)
    with pytest.raises(ValueError, match="clip"):
        Bottleneck2D(4).build((None, 8, 8, 3))
