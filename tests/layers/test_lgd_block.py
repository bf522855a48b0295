"""LGD block against a NumPy implementation of Eq. 2-3, 8 and 9 (Sec. 3.1, 5.3)."""

import keras
import numpy as np
import pytest

from lgd_tf.layers import LGDBlock, LowRankDense, P3DBottleneck
from tests.test_case import assert_config_round_trip, assert_same_outputs_after_rebuild, to_numpy

RNG = np.random.default_rng(0)


def relu(v):
    return np.maximum(v, 0.0)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def numpy_lgd(f, g, w_xg, w_gx, w_gg, variant):
    """Eq. 2-3 (lgd), Eq. 2 + 8 (v1), Eq. 9 + 3 (v2) on F(x) = f, with W given as C_in x C."""
    residual = (g @ w_xg)[:, None, None, None, :]
    x = relu(f * sigmoid(residual)) if variant == "v2" else relu(f + residual)
    pooled = x.mean(axis=(1, 2, 3))
    if variant == "v1":
        return x, pooled
    return x, relu(pooled @ w_gx + g @ w_gg)


def dense(layer):
    return layer.down.numpy() @ layer.up.numpy()


@pytest.mark.backends
@pytest.mark.parametrize("variant", ["lgd", "v1", "v2"])
def test_block_matches_numpy_equations(variant):
    # First block of a stage: 8 -> 16 channels and stride 2, so W^{x,g}, W^{g,g} are 8 -> 16.
    unit = P3DBottleneck(4, strides=2)
    block = LGDBlock(unit, rank_ratio=4, variant=variant, zero_init_global_residual=False)
    x = RNG.normal(size=(2, 4, 6, 6, 8)).astype("float32")
    g = relu(RNG.normal(size=(2, 8))).astype("float32")
    x_out, g_out = map(to_numpy, block([x, g]))
    f = to_numpy(unit(x))
    w_gx = dense(block.local_to_global) if variant != "v1" else None
    w_gg = dense(block.global_to_global) if variant != "v1" else None
    ref_x, ref_g = numpy_lgd(f, g, dense(block.global_to_local), w_gx, w_gg, variant)
    assert x_out.shape == (2, 4, 3, 3, 16) and g_out.shape == (2, 16)
    np.testing.assert_allclose(x_out, ref_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_out, ref_g, rtol=1e-5, atol=1e-5)
    assert np.abs(ref_g).max() > 0 and np.abs(ref_x - relu(f)).max() > 1e-3


def test_zero_init_global_residual_starts_as_the_residual_unit():
    unit = P3DBottleneck(4)
    block = LGDBlock(unit, rank_ratio=4, zero_init_global_residual=True)
    x = RNG.normal(size=(1, 2, 4, 4, 16)).astype("float32")
    g = RNG.normal(size=(1, 16)).astype("float32")
    x_out, _ = map(to_numpy, block([x, g]))
    np.testing.assert_array_equal(block.global_to_local.up.numpy(), 0.0)
    assert np.abs(block.global_to_local.down.numpy()).max() > 0
    np.testing.assert_allclose(x_out, relu(to_numpy(unit(x))), atol=1e-6)


def test_default_w_xg_is_glorot_like_every_w():
    """Sec. 5.2 from scratch: every W, W^{x,g} included, Glorot (uniform: |w| <= limit)."""
    block = LGDBlock(P3DBottleneck(16), rank_ratio=4)  # C = 64, rank 16
    block.build([(None, 2, 4, 4, 64), (None, 64)])
    assert block.zero_init_global_residual is False
    for projection in (block.global_to_local, block.local_to_global, block.global_to_global):
        for w in (projection.down.numpy(), projection.up.numpy()):
            limit = np.sqrt(6.0 / sum(w.shape))
            assert np.abs(w).max() <= limit
            np.testing.assert_allclose(w.std(), limit / np.sqrt(3.0), rtol=0.15)


def test_v2_gate_at_init():
    """Eq. 9 at init: zero W^{x,g} -> the gate is 0.5 everywhere (x_l = ReLU(F / 2)); Glorot
    W^{x,g} -> sigmoid of a random projection of g, spread around 0.5."""
    x = RNG.normal(size=(2, 2, 4, 4, 64)).astype("float32")
    g = relu(RNG.normal(size=(2, 64))).astype("float32")
    zero = LGDBlock(P3DBottleneck(16), rank_ratio=4, variant="v2",
                    zero_init_global_residual=True)
    x_zero, _ = zero([x, g])
    f = to_numpy(zero.local_unit(x))
    np.testing.assert_allclose(x_zero, relu(0.5 * f), rtol=1e-6, atol=1e-6)
    glorot = LGDBlock(P3DBottleneck(16), rank_ratio=4, variant="v2")
    x_glorot, _ = glorot([x, g])
    gate = sigmoid(g @ dense(glorot.global_to_local))
    np.testing.assert_allclose(x_glorot, relu(to_numpy(glorot.local_unit(x)) * gate[:, None, None,
                                                                                 None]),
                               rtol=1e-5, atol=1e-5)
    assert 0.4 < gate.mean() < 0.6 and gate.std() > 0.02, (gate.mean(), gate.std())
    assert np.abs(gate - 0.5).max() > 0.05


@pytest.mark.parametrize("channels,in_channels", [(256, 256), (512, 256), (2048, 1024)])
def test_parameter_overhead(channels, in_channels):
    """3/8 C^2 per block with C-hat = C/16; W^{x,g}, W^{g,g} read C_in at stage starts."""
    filters = channels // 4
    block = LGDBlock(P3DBottleneck(filters), rank_ratio=16)
    block.build([(None, 2, 4, 4, in_channels), (None, in_channels)])
    overhead = block.count_params() - block.local_unit.count_params()
    rank = channels // 16
    assert overhead == 2 * rank * (in_channels + channels) + 2 * rank * channels
    if in_channels == channels:
        assert overhead == 3 * channels**2 // 8


def test_v1_has_only_the_global_to_local_projection():
    block = LGDBlock(P3DBottleneck(4), rank_ratio=4, variant="v1")
    block.build([(None, 2, 4, 4, 16), (None, 16)])
    assert block.count_params() - block.local_unit.count_params() == 2 * 4 * 16


def test_low_rank_dense_is_w1_w2():
    layer = LowRankDense(6, 2)
    v = RNG.normal(size=(3, 5)).astype("float32")
    np.testing.assert_allclose(layer(v), v @ layer.down.numpy() @ layer.up.numpy(), rtol=1e-5)
    assert layer.count_params() == 2 * (5 + 6)


@pytest.mark.backends
def test_serialization():
    block = LGDBlock(P3DBottleneck(4, strides=2), rank_ratio=4, variant="v2")
    x = RNG.normal(size=(1, 2, 4, 4, 8)).astype("float32")
    g = RNG.normal(size=(1, 8)).astype("float32")
    block([x, g])
    restored = assert_config_round_trip(block)
    assert isinstance(restored.local_unit, P3DBottleneck) and restored.local_unit.strides == 2
    assert_same_outputs_after_rebuild(block, [x, g])
    assert_config_round_trip(LowRankDense(3, 1, up_initializer="zeros"))


def test_symbolic_shapes_match_eager():
    block = LGDBlock(P3DBottleneck(4, strides=2), rank_ratio=4)
    x_sym, g_sym = block([keras.Input((4, 8, 8, 8)), keras.Input((8,))])
    assert tuple(x_sym.shape) == (None, 4, 4, 4, 16) and tuple(g_sym.shape) == (None, 16)


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        LGDBlock(P3DBottleneck(4), variant="v3")
    with pytest.raises(ValueError, match="rank_ratio"):
        LGDBlock(P3DBottleneck(4), rank_ratio=0)


@pytest.mark.backends
@pytest.mark.parametrize("variant", ["lgd", "v1", "v2"])
def test_plain_diffusion_matches_the_fused_block_and_pools_the_hooked_map(variant):
    """Under `plain_diffusion` the block gives the same outputs, and g_l is computed from the
    x_l its hook returns: Eq. 3 (Eq. 8 for v1) on the hooked map, by NumPy."""
    from lgd_tf.layers.lgd_block import plain_diffusion

    unit = P3DBottleneck(4, strides=2)
    block = LGDBlock(unit, rank_ratio=4, variant=variant, name="block")
    x = RNG.normal(size=(2, 4, 6, 6, 8)).astype("float32")
    g = relu(RNG.normal(size=(2, 8))).astype("float32")
    fused_x, fused_g = map(to_numpy, block([x, g]))
    with plain_diffusion():
        plain_x, plain_g = map(to_numpy, block([x, g]))
    np.testing.assert_allclose(plain_x, fused_x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(plain_g, fused_g, rtol=1e-5, atol=1e-6)
    shift = RNG.normal(size=fused_x.shape).astype("float32")
    hooks = {"block": lambda a: keras.ops.add(a, shift), "other": lambda a: a * 0.0}
    with plain_diffusion(hooks):
        hooked_x, hooked_g = map(to_numpy, block([x, g]))
    np.testing.assert_allclose(hooked_x, to_numpy(fused_x) + shift, rtol=1e-6, atol=1e-6)
    pooled = (to_numpy(fused_x) + shift).mean(axis=(1, 2, 3))
    if variant == "v1":
        expected = pooled
    else:
        expected = relu(pooled @ dense(block.local_to_global) + g @ dense(block.global_to_global))
    np.testing.assert_allclose(hooked_g, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(hooked_g - fused_g).max() > 1e-3
    again_x, _ = map(to_numpy, block([x, g]))  # the context is left: the fused path, no hook
    np.testing.assert_array_equal(again_x, fused_x)
