"""LGD-3D / LGD-2D backbones: Table 1 sizes, parameter overhead, paper-level properties."""

import keras
import numpy as np
import pytest

import lgd_tf
from lgd_tf.models import DEPTHS, LGD2DBackbone, LGD3DBackbone
from tests.test_case import run_backbone_test

RNG = np.random.default_rng(3)
TINY = {"stage_blocks": (1, 1, 1, 1), "base_filters": 8}


def symbolic_sizes(backbone, input_shape, extra=()):
    model = keras.Model(backbone.input,
                        {**{n: backbone.get_layer(n).output for n in extra}, **backbone.output})
    spec = model.compute_output_spec(keras.KerasTensor(input_shape))
    return {k: tuple(v.shape[1:]) for k, v in spec.items()}


def test_lgd3d_r50_local_path_sizes_match_table_1():
    backbone = lgd_tf.models.lgd3d(depth=50, head=None)
    sizes = symbolic_sizes(backbone, (1, 16, 112, 112, 3),
                           extra=("conv1_temporal_relu", "pool1", "pool2"))
    # Table 1: local path size (T x H x W) and channels of every layer.
    assert sizes["conv1_temporal_relu"] == (16, 56, 56, 64)
    assert sizes["pool1"] == (8, 56, 56, 64)
    assert sizes["res2"] == (8, 56, 56, 256)
    assert sizes["pool2"] == (4, 56, 56, 256)
    assert sizes["res3"] == (4, 28, 28, 512)
    assert sizes["res4"] == (4, 14, 14, 1024)
    assert sizes["res5"] == sizes["local"] == (4, 7, 7, 2048)
    assert sizes["global"] == (2048,)
    units = [layer for layer in backbone.layers if isinstance(layer, lgd_tf.layers.LGDBlock)]
    assert len(units) == sum(DEPTHS[50]) == 16


def test_long_clip_pool1_stride_4():
    backbone = lgd_tf.models.lgd3d(head=None, long_clip=True, num_frames=128, **TINY)
    sizes = symbolic_sizes(backbone, (1, 128, 112, 112, 3), extra=("pool1",))
    assert sizes["pool1"][0] == 32 and sizes["local"] == (16, 7, 7, 256)


def test_deepest_backbone_unit_counts():
    depth = 152  # shares the depth table with 101
    backbone = LGD3DBackbone(depth=depth, base_filters=4, rank_ratio=4, num_frames=4)
    names = [layer.name for layer in backbone.layers if isinstance(layer, lgd_tf.layers.LGDBlock)]
    assert len(names) == sum(DEPTHS[depth])
    assert f"res4_block{DEPTHS[depth][2]}" in names


def test_lgd2d_r50_sizes():
    backbone = lgd_tf.models.lgd2d(depth=50, head=None)
    sizes = symbolic_sizes(backbone, (1, 3, 224, 224, 3), extra=("pool1",))
    assert sizes["pool1"] == (3, 56, 56, 64)
    assert sizes["res2"] == (3, 56, 56, 256) and sizes["res3"] == (3, 28, 28, 512)
    assert sizes["res4"] == (3, 14, 14, 1024) and sizes["local"] == (3, 7, 7, 2048)


@pytest.mark.parametrize("builder", [lgd_tf.models.lgd3d, lgd_tf.models.lgd2d])
def test_parameter_overhead_over_baseline(builder):
    """Sum over the 16 R50 units of 3/8 C^2, with C_{l-1} -> C_l in each stage's first unit."""
    lgd = builder(depth=50, head=None, base_filters=16)
    baseline = builder(depth=50, head=None, base_filters=16, use_lgd=False)
    expected, previous = 0, 16  # g_0 has the stem's width
    for i, blocks in enumerate(DEPTHS[50]):
        c = 16 * 2**i * 4
        rank = c // 16
        expected += 2 * rank * (previous + c) + 2 * rank * c  # first unit: width change
        expected += (blocks - 1) * 3 * c * c // 8              # 3/8 C^2 per further unit
        previous = c
    assert lgd.count_params() - baseline.count_params() == expected


def test_baseline_global_is_pooled_local():
    backbone = lgd_tf.models.lgd3d(head=None, use_lgd=False, num_frames=4, **TINY)
    out = backbone(RNG.uniform(0, 255, (2, 4, 32, 32, 3)).astype("float32"))
    np.testing.assert_allclose(out["global"], np.mean(out["local"], axis=(1, 2, 3)), rtol=1e-5)
    assert not any(isinstance(layer, lgd_tf.layers.LGDBlock) for layer in backbone.layers)


def test_lgd2d_is_frame_permutation_equivariant():
    """LGD-2D: per-frame local path, global path a symmetric average over frames (Sec. 4.1)."""
    backbone = lgd_tf.models.lgd2d(head=None, num_segments=3, zero_init_global_residual=False,
                                   **TINY)
    x = RNG.uniform(0, 255, (1, 3, 32, 32, 3)).astype("float32")
    out = backbone(x)
    permuted = backbone(x[:, ::-1])
    np.testing.assert_allclose(permuted["local"], out["local"][:, ::-1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(permuted["global"], out["global"], rtol=1e-4, atol=1e-4)


def test_global_path_reaches_the_local_path():
    """With W^{x,g} != 0 a change in one frame changes the local features of the other frames."""
    backbone = lgd_tf.models.lgd2d(head=None, num_segments=2, zero_init_global_residual=False,
                                   **TINY)
    x = RNG.uniform(0, 255, (1, 2, 32, 32, 3)).astype("float32")
    y = x.copy()
    y[:, 1] = 255 - y[:, 1]
    a, b = backbone(x)["local"].numpy(), backbone(y)["local"].numpy()
    assert np.abs(a[:, 0] - b[:, 0]).max() > 1e-4
    tsn = lgd_tf.models.lgd2d(head=None, num_segments=2, use_lgd=False, **TINY)
    np.testing.assert_allclose(tsn(x)["local"][:, 0], tsn(y)["local"][:, 0], rtol=1e-5)


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_variants_build(variant):
    backbone = lgd_tf.models.lgd3d(head=None, variant=variant, num_frames=4, **TINY)
    blocks = [layer for layer in backbone.layers if isinstance(layer, lgd_tf.layers.LGDBlock)]
    assert {b.variant for b in blocks} == {variant}
    out = backbone(RNG.uniform(0, 255, (1, 4, 32, 32, 3)).astype("float32"))
    if variant == "v1":  # Eq. 8: g_L = P(x_L)
        np.testing.assert_allclose(out["global"], np.mean(out["local"], axis=(1, 2, 3)),
                                   rtol=1e-5)


def test_pixel_normalisation_inside():
    rgb = lgd_tf.models.lgd3d(head=None, num_frames=4, **TINY).get_layer("normalization")
    flow = lgd_tf.models.lgd3d(head=None, num_frames=4, input_channels=2,
                               **TINY).get_layer("normalization")
    pixels = RNG.integers(0, 256, (2, 3)).astype("uint8")
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    np.testing.assert_allclose(rgb(pixels), (pixels - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(flow(np.array([[0, 128], [255, 64]], "uint8")),
                               [[-1, 0], [127 / 128, -0.5]], rtol=1e-6)


def test_uint8_and_float_pixels_agree():
    backbone = lgd_tf.models.lgd3d(head=None, num_frames=4, **TINY)
    x = RNG.integers(0, 256, (1, 4, 32, 32, 3)).astype("uint8")
    np.testing.assert_allclose(backbone(x)["global"], backbone(x.astype("float32"))["global"],
                               rtol=1e-6)


def table1_shapes(batch, frames, size, base_filters, *, temporal=True, pool1_stride=2):
    """Output shapes by hand. LGD-3D (Table 1): H, W halved in conv1 and in res3..res5, T
    divided by the pool1 stride and by 2 in pool2. LGD-2D (the 2-D ResNet on every frame,
    Sec. 4.1): T kept, H, W halved in conv1, pool1 and res3..res5.
    Stage s (2..5) has 4 * base_filters * 2^(s-2) channels (256..2048 for 64)."""
    shapes, t, h = {}, frames, size // 2 if temporal else size // 4
    if temporal:
        t //= pool1_stride
    for i, stage in enumerate((2, 3, 4, 5)):
        if stage > 2:
            h //= 2
        shapes[f"res{stage}"] = (batch, t, h, h, 4 * base_filters * 2**i)
        if temporal and stage == 2:
            t //= 2
    return {**shapes, "local": shapes["res5"], "global": (batch, shapes["res5"][-1])}


def test_table1_shapes_by_hand_agree_with_table_1():
    """The hand count used below gives Table 1's sizes for the paper's clips and widths."""
    assert table1_shapes(1, 16, 112, 64) == {
        "res2": (1, 8, 56, 56, 256), "res3": (1, 4, 28, 28, 512),
        "res4": (1, 4, 14, 14, 1024), "res5": (1, 4, 7, 7, 2048),
        "local": (1, 4, 7, 7, 2048), "global": (1, 2048)}
    assert table1_shapes(1, 3, 224, 64, temporal=False)["res2"] == (1, 3, 56, 56, 256)
    assert table1_shapes(1, 3, 224, 64, temporal=False)["local"] == (1, 3, 7, 7, 2048)


# (class, constructor arguments, clip (B, T, S, S, C), pool1 stride (None: LGD-2D), SavedModel)
# The SavedModel check (seconds of tracing) runs once per backbone class.
BACKBONE_CASES = {
    # Table 1's clip (16 x 112 x 112) at 4 base filters: Table 1's sizes, 1/16 of its channels.
    "lgd3d_table1": (LGD3DBackbone, {"num_frames": 16}, (1, 16, 112, 112, 3), 2, False),
    "lgd3d_long_v1_flow": (LGD3DBackbone, {"num_frames": 16, "long_clip": True,
                                           "variant": "v1", "input_channels": 2},
                           (2, 16, 32, 32, 2), 4, True),
    "p3d_baseline": (LGD3DBackbone, {"num_frames": 8, "use_lgd": False}, (2, 8, 32, 32, 3),
                     2, False),
    "lgd2d_v2_flow": (LGD2DBackbone, {"num_frames": 3, "variant": "v2", "input_channels": 2,
                                      "zero_init_global_residual": True},
                      (2, 3, 64, 64, 2), None, True),
    "tsn_baseline": (LGD2DBackbone, {"num_frames": 2, "use_lgd": False}, (2, 2, 32, 32, 3),
                     None, False),
}


@pytest.mark.parametrize("case", sorted(BACKBONE_CASES))
def test_backbone(case):
    cls, kwargs, shape, pool1_stride, saved_model = BACKBONE_CASES[case]
    kwargs = {"stage_blocks": (1, 1, 1, 1), "base_filters": 4, "rank_ratio": 4, **kwargs}
    x = np.random.default_rng(0).integers(0, 256, shape).astype("uint8")
    run_backbone_test(cls, kwargs, x, table1_shapes(
        shape[0], shape[1], shape[2], 4, temporal=pool1_stride is not None,
        pool1_stride=pool1_stride), run_saved_model=None if saved_model else False)


def test_builder_backbone():
    """`lgd3d(head=None)` is an `LGD3DBackbone` named after the builder's `name`."""
    x = np.random.default_rng(0).integers(0, 256, (2, 8, 32, 32, 3)).astype("uint8")
    backbone = run_backbone_test(
        LGD3DBackbone, {"head": None, "num_frames": 8, "variant": "v2", **TINY}, x,
        table1_shapes(2, 8, 32, 8), builder=lgd_tf.models.lgd3d, run_mixed_precision=False,
        run_saved_model=False)
    assert backbone.name == "lgd3d"


@pytest.mark.parametrize("kwargs,match", [
    ({"depth": 34}, "depth"),
    ({"stage_blocks": (1, 1, 1)}, "stage_blocks"),
    ({"input_channels": 4}, "input_channels"),
    ({"num_frames": 2}, "frames"),
    ({"variant": "v3"}, "variant"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lgd_tf.models.lgd3d(head=None, **{"num_frames": 4, **kwargs})


@keras.saving.register_keras_serializable(package="lgd_tf_tests")
class _ForgetsItsVariant(LGD3DBackbone):
    """A backbone whose config drops `variant`: from_config makes another network."""

    def get_config(self):
        config = super().get_config()
        del config["variant"]
        return config


@pytest.mark.parametrize("cls,shapes,match", [
    (_ForgetsItsVariant, table1_shapes(1, 8, 32, 4), "other weight shapes"),
    (LGD3DBackbone, {**table1_shapes(1, 8, 32, 4), "res2": (1, 8, 16, 16, 16)},
     "Output shapes"),
], ids=["config_drops_an_argument", "wrong_stage_shape"])
def test_run_backbone_test_catches_broken_backbones(cls, shapes, match):
    x = np.random.default_rng(0).integers(0, 256, (1, 8, 32, 32, 3)).astype("uint8")
    kwargs = {"num_frames": 8, "variant": "v1", "stage_blocks": (1, 1, 1, 1), "base_filters": 4,
              "rank_ratio": 4}
    with pytest.raises(AssertionError, match=match):
        run_backbone_test(cls, kwargs, x, shapes, run_mixed_precision=False,
                          run_saved_model=False)
