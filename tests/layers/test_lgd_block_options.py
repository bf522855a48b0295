"""LGDBlock's options from the authors' public code against NumPy: projection biases and
g_l pooled from the block input (then broadcast as the new g_l); defaults keep Eq. 2-3."""

import numpy as np
import pytest

from lgd_tf.layers import LGDBlock, P3DBottleneck
from tests.test_case import assert_config_round_trip, assert_same_outputs_after_rebuild

RNG = np.random.default_rng(1)


def relu(v):
    return np.maximum(v, 0.0)


def affine(layer):
    """(W, b) of a LowRankDense as a dense C_in x C matrix and a bias (0 without one)."""
    w = layer.down.numpy() @ layer.up.numpy()
    return w, layer.bias.numpy() if layer.use_bias else np.zeros(w.shape[1], np.float32)


def numpy_block_input_order(x, f, g, block):
    """g_l = ReLU(W^{g,x} P(x_{l-1}) + b + W^{g,g} g_{l-1} + b'), then
    x_l = ReLU(F + US(W^{x,g} g_l + b''))."""
    (w_gx, b_gx), (w_gg, b_gg), (w_xg, b_xg) = (
        affine(block.local_to_global), affine(block.global_to_global),
        affine(block.global_to_local))
    g_out = relu(x.mean(axis=(1, 2, 3)) @ w_gx + b_gx + g @ w_gg + b_gg)
    residual = (g_out @ w_xg + b_xg)[:, None, None, None, :]
    if block.variant == "v2":
        return relu(f / (1.0 + np.exp(-residual))), g_out
    return relu(f + residual), g_out


@pytest.mark.parametrize("variant", ["lgd", "v2"])
def test_pool_block_input_with_biases_matches_numpy(variant):
    unit = P3DBottleneck(4, strides=2)  # 8 -> 16 channels: W^{g,x} maps C_{l-1} = 8 -> 16
    block = LGDBlock(unit, rank_ratio=4, variant=variant, projection_bias=True,
                     pool_block_input=True)
    x = RNG.normal(size=(2, 4, 6, 6, 8)).astype("float32")
    g = relu(RNG.normal(size=(2, 8))).astype("float32")
    x_out, g_out = block([x, g])
    ref_x, ref_g = numpy_block_input_order(x, unit(x).numpy(), g, block)
    np.testing.assert_allclose(g_out, ref_g, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x_out, ref_x, rtol=1e-5, atol=1e-5)
    # Biases drawn as the last nn.Linear factor's: U(+-1 / sqrt(rank)), rank = 16 / 4.
    bias = block.local_to_global.bias.numpy()
    assert 0 < np.abs(bias).max() <= 0.5 and ref_g.max() > 0


def test_projection_bias_in_paper_order_matches_numpy():
    unit = P3DBottleneck(4)
    block = LGDBlock(unit, rank_ratio=4, projection_bias=True)
    x = RNG.normal(size=(2, 2, 4, 4, 16)).astype("float32")
    g = relu(RNG.normal(size=(2, 16))).astype("float32")
    x_out, g_out = block([x, g])
    (w_xg, b_xg), (w_gx, b_gx), (w_gg, b_gg) = (
        affine(block.global_to_local), affine(block.local_to_global),
        affine(block.global_to_global))
    ref_x = relu(unit(x).numpy() + (g @ w_xg + b_xg)[:, None, None, None, :])
    ref_g = relu(ref_x.mean(axis=(1, 2, 3)) @ w_gx + b_gx + g @ w_gg + b_gg)
    np.testing.assert_allclose(x_out, ref_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_out, ref_g, rtol=1e-5, atol=1e-5)


def test_defaults_have_no_bias_and_options_round_trip():
    block = LGDBlock(P3DBottleneck(4), rank_ratio=4)
    x = RNG.normal(size=(1, 2, 4, 4, 16)).astype("float32")
    g = RNG.normal(size=(1, 16)).astype("float32")
    block([x, g])
    assert len(block.global_to_local.weights) == 2  # down, up: the paper's W, no bias
    config = block.get_config()
    assert config["projection_bias"] is False and config["pool_block_input"] is False
    options = LGDBlock(P3DBottleneck(4), rank_ratio=4, projection_bias=True,
                       pool_block_input=True)
    options([x, g])
    restored = assert_config_round_trip(options)
    assert restored.projection_bias and restored.pool_block_input
    assert_same_outputs_after_rebuild(options, [x, g])
    with pytest.raises(ValueError, match="pool_block_input"):
        LGDBlock(P3DBottleneck(4), variant="v1", pool_block_input=True)
