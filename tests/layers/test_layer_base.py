"""Every layer of `lgd_tf.layers` through the shared `run_layer_test` battery.

Config round trip of every constructor argument, eager and symbolic calls, weight counts, one
fit step, float32 and mixed_bfloat16, `.keras` saving in safe mode (see tests/test_case.py).
"""

import keras
import numpy as np
import pytest
from keras import ops

import lgd_tf.layers
from lgd_tf.layers import (
    BatchNormalization,
    Bottleneck2D,
    FrameMaxPooling,
    LGDBlock,
    LocalGlobalSketch,
    LowRankDense,
    P3DBottleneck,
    PixelNormalization,
    TemporalMaxPooling,
    TensorSketch,
)
from tests.test_case import _constructor_parameters, run_layer_test

pytestmark = pytest.mark.backends

RNG = np.random.default_rng(7)


def normal(*shape):
    return RNG.normal(size=shape).astype("float32")


@pytest.mark.parametrize("shape", [(2, 2, 3, 3, 4), (4, 4)], ids=["fused_5d", "keras_2d"])
def test_batch_normalization(shape):
    # 5-D inputs take the fused TensorFlow kernel, 2-D ones fall back to Keras' computation.
    run_layer_test(
        BatchNormalization,
        {"axis": -1, "momentum": 0.8, "epsilon": 1e-3, "center": True, "scale": True,
         "beta_initializer": "zeros", "gamma_initializer": "ones",
         "moving_mean_initializer": "zeros", "moving_variance_initializer": "ones",
         "synchronized": False, "name": "bn"},
        normal(*shape) * 3.0 + 1.0,
        expected_output_shape=shape,
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=2)


def test_low_rank_dense():
    run_layer_test(
        LowRankDense,
        {"units": 6, "rank": 2, "down_initializer": "glorot_uniform",
         "up_initializer": "he_normal"},
        normal(3, 5),
        expected_output_shape=(3, 6),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0)


def test_p3d_bottleneck():
    # Stride 2 and 4 -> 8 channels: projection shortcut; conv + BN for a, s, t, c and p.
    run_layer_test(
        P3DBottleneck,
        {"filters": 2, "temporal_kernel_size": 3, "strides": 2, "use_projection": None,
         "expansion": 4, "kernel_initializer": "he_normal", "bn_momentum": 0.9,
         "bn_epsilon": 1e-3},
        normal(2, 3, 4, 4, 4),
        expected_output_shape=(2, 3, 2, 2, 8),
        expected_num_trainable_weights=5 + 2 * 5,
        expected_num_non_trainable_weights=2 * 5)


def test_bottleneck_2d():
    # 8 -> 8 channels at stride 1: identity shortcut; conv + BN for a, s and c.
    run_layer_test(
        Bottleneck2D,
        {"filters": 2, "strides": 1, "use_projection": False, "expansion": 4,
         "kernel_initializer": "glorot_uniform", "bn_momentum": 0.95, "bn_epsilon": 1e-4},
        normal(2, 2, 3, 3, 8),
        expected_output_shape=(2, 2, 3, 3, 8),
        expected_num_trainable_weights=3 + 2 * 3,
        expected_num_non_trainable_weights=2 * 3)


@pytest.mark.parametrize("variant,zero_init", [("lgd", True), ("v1", False), ("v2", False)])
def test_lgd_block(variant, zero_init):
    def init_kwargs():
        return {"local_unit": P3DBottleneck(2, strides=2), "rank_ratio": 4,
                "variant": variant, "zero_init_global_residual": zero_init,
                "kernel_initializer": "glorot_uniform"}

    # 15 trainable weights of the unit + two factors per projection (three, one for v1).
    projections = 1 if variant == "v1" else 3
    run_layer_test(
        LGDBlock, init_kwargs, [normal(2, 2, 4, 4, 4), np.abs(normal(2, 4))],
        expected_output_shape=[(2, 2, 2, 2, 8), (2, 8)],
        expected_num_trainable_weights=15 + 2 * projections,
        expected_num_non_trainable_weights=10,
        # With W1 of W^{x,g} zero at init, W2 gets no gradient in the first step (Sec. 5.2).
        allowed_unchanged_weights=("global_to_local/down",) if zero_init else ())


def test_tensor_sketch():
    # The FFT runs in float32; the output is cast to the compute dtype (bfloat16 when mixed).
    run_layer_test(
        TensorSketch, {"output_dim": 8, "seed": 3}, normal(2, 3, 5),
        expected_output_shape=(2, 3, 8),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=4,
        expected_mixed_precision_output_dtype="bfloat16")


@pytest.mark.parametrize("signed_sqrt_l2", [False, True])
def test_local_global_sketch(signed_sqrt_l2):
    # Documented float32 output: its Tensor Sketch is a float32 layer under any policy.
    run_layer_test(
        LocalGlobalSketch, {"sketch_dim": 8, "seed": 1, "signed_sqrt_l2": signed_sqrt_l2},
        [normal(2, 2, 2, 2, 4), normal(2, 4)],
        expected_output_shape=(2, 16),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=4,
        expected_mixed_precision_output_dtype="float32")


def test_pixel_normalization():
    pixels = RNG.integers(0, 256, size=(2, 2, 3, 3, 3)).astype("uint8")
    run_layer_test(
        PixelNormalization, {"mean": (100.0, 110.0, 120.0), "std": (50.0, 60.0, 70.0)},
        pixels,
        expected_output_shape=(2, 2, 3, 3, 3),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=2)


def test_temporal_max_pooling():
    run_layer_test(
        TemporalMaxPooling, {"pool_size": 3, "strides": 2}, normal(2, 7, 3, 3, 4),
        expected_output_shape=(2, 3, 3, 3, 4),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0)


def test_frame_max_pooling():
    run_layer_test(
        FrameMaxPooling, {"pool_size": (3, 3), "strides": (2, 2), "padding": "valid"},
        normal(2, 2, 7, 5, 4),
        expected_output_shape=(2, 2, 3, 2, 4),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0)


LAYER_TESTS = {
    BatchNormalization: test_batch_normalization,
    Bottleneck2D: test_bottleneck_2d,
    FrameMaxPooling: test_frame_max_pooling,
    LGDBlock: test_lgd_block,
    LocalGlobalSketch: test_local_global_sketch,
    LowRankDense: test_low_rank_dense,
    P3DBottleneck: test_p3d_bottleneck,
    PixelNormalization: test_pixel_normalization,
    TemporalMaxPooling: test_temporal_max_pooling,
    TensorSketch: test_tensor_sketch,
}


def test_every_layer_has_a_run_layer_test():
    """A layer added to lgd_tf.layers without a run_layer_test above fails here."""
    layers = {getattr(lgd_tf.layers, name) for name in lgd_tf.layers.__all__}
    layers = {obj for obj in layers if isinstance(obj, type) and issubclass(obj, keras.Layer)}
    assert layers == set(LAYER_TESTS)


def test_constructor_parameters_follow_kwargs_to_the_bases():
    names = _constructor_parameters(P3DBottleneck)
    assert names[:2] == ["filters", "temporal_kernel_size"]
    assert {"strides", "use_projection", "bn_epsilon"} <= set(names)
    assert "name" not in names and "kwargs" not in names
    assert "synchronized" in _constructor_parameters(BatchNormalization)


# The battery fails on broken layers: each toy layer below breaks one check.

class _Scale(keras.layers.Layer):
    """`x * w` with a trainable per-channel w; `factor` scales the initial w."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1],),
                                 initializer=keras.initializers.Constant(self.factor))

    def call(self, inputs):
        return inputs * self.w

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class _ForgetsArgument(_Scale):
    def __init__(self, factor=1.0, offset=0.0, **kwargs):
        super().__init__(factor, **kwargs)
        self.offset = offset


class _WrongValue(_Scale):
    def get_config(self):
        return {**super().get_config(), "factor": 2 * self.factor}


class _WrongOutputShape(_Scale):
    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + 1,)


class _DeadWeight(_Scale):
    def build(self, input_shape):
        super().build(input_shape)
        self.unused = self.add_weight(name="unused", shape=(2,), initializer="ones")


class _Float32Output(_Scale):
    def call(self, inputs):
        return ops.cast(super().call(inputs), "float32")


class _Float32OutputWithShape(_Float32Output):
    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class _NotRegistered(_Scale):
    pass


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
@pytest.mark.parametrize("layer_cls,kwargs,options,match", [
    (_ForgetsArgument, {"factor": 1.5}, {}, r"misses constructor argument\(s\) \['offset'\]"),
    (_WrongValue, {"factor": 1.5}, {}, r"get_config\(\)\['factor'\] = 3.0, given 1.5"),
    (_WrongOutputShape, {}, {}, r"Symbolic output shapes \[\(2, 4\)\] != eager"),
    (_DeadWeight, {}, {}, r"unchanged by the fit step: \['.*unused'\]"),
    (_Float32Output, {}, {}, r"eager \(mixed_bfloat16\) output dtypes \['float32'\]"),
    # float32 eager output, but the spec built from compute_output_shape says bfloat16.
    (_Float32OutputWithShape, {}, {"expected_mixed_precision_output_dtype": "float32"},
     r"symbolic \(mixed_bfloat16\) output dtypes \['bfloat16'\]"),
])
def test_run_layer_test_catches_broken_layers(layer_cls, kwargs, options, match):
    with pytest.raises(AssertionError, match=match):
        run_layer_test(layer_cls, kwargs, normal(2, 3), run_saving=False, **options)


def test_run_layer_test_catches_a_layer_safe_mode_cannot_load():
    run_layer_test(_Scale, {"factor": 2.0}, normal(2, 3), run_fit=False,
                   run_mixed_precision=False, run_saving=False)
    with pytest.raises(TypeError, match="_NotRegistered"):
        run_layer_test(_NotRegistered, {}, normal(2, 3), run_fit=False,
                       run_mixed_precision=False)


@keras.saving.register_keras_serializable(package="lgd_tf_tests")
class _DictInputs(keras.layers.Layer):
    """`{"a", "b"}` -> `{"scaled": a * w + b, "doubled": a + a}`."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape["a"][-1],), initializer="ones")

    def call(self, inputs):
        a, b = (ops.cast(inputs[k], self.compute_dtype) for k in ("a", "b"))
        return {"scaled": a * ops.cast(self.w, a.dtype) + b, "doubled": a + a}


def test_run_layer_test_takes_dict_inputs_and_outputs():
    run_layer_test(_DictInputs, {}, {"a": normal(2, 3), "b": normal(2, 3)},
                   expected_output_shape={"scaled": (2, 3), "doubled": (2, 3)},
                   expected_num_trainable_weights=1)
