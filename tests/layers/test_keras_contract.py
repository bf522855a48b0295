"""Every public layer of `lgd_tf.layers` through Keras' own layer contract,
`keras.src.testing.TestCase.run_layer_test`: the build, symbolic and eager calls, output shapes
and dtypes, weight counts, one compiled fit step and the mixed_float16 check (float16 outputs
as `compute_output_spec` says, float32 variables). Keras skips its mixed-precision check under
PyTorch on CPU. Runs on every backend (`pytest -m backends` with KERAS_BACKEND set)."""

import inspect

import keras
import numpy as np
import pytest
from keras.src.testing import TestCase

import lgd_tf.layers
from lgd_tf import layers

pytestmark = pytest.mark.backends

RNG = np.random.default_rng(11)
# Keras' training check feeds a Python generator; under TensorFlow it goes through tf.data,
# whose output_signature refuses the lists that LGDBlock and LocalGlobalSketch take (and
# LGDBlock returns). The shared battery (test_layer_base.py) fits them on every backend.
LIST_FIT = keras.backend.backend() != "tensorflow"


def normal(*shape):
    return RNG.normal(size=shape).astype("float32")


class KerasLayerContractTest(TestCase):
    def test_batch_normalization(self):
        self.run_layer_test(
            layers.BatchNormalization, {"momentum": 0.8, "epsilon": 1e-3},
            input_data=normal(2, 2, 3, 3, 4), expected_output_shape=(2, 2, 3, 3, 4),
            expected_num_trainable_weights=2, expected_num_non_trainable_weights=2)

    def test_low_rank_dense(self):
        self.run_layer_test(
            layers.LowRankDense, {"units": 6, "rank": 2}, input_data=normal(3, 5),
            expected_output_shape=(3, 6), expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=0)

    def test_p3d_bottleneck(self):
        self.run_layer_test(
            layers.P3DBottleneck, {"filters": 2, "strides": 2}, input_data=normal(2, 3, 4, 4, 4),
            expected_output_shape=(2, 3, 2, 2, 8), expected_num_trainable_weights=15,
            expected_num_non_trainable_weights=10)

    def test_bottleneck_2d(self):
        self.run_layer_test(
            layers.Bottleneck2D, {"filters": 2}, input_data=normal(2, 2, 3, 3, 8),
            expected_output_shape=(2, 2, 3, 3, 8), expected_num_trainable_weights=9,
            expected_num_non_trainable_weights=6)

    def test_lgd_block(self):
        # The unit is made under the float32 policy; the mixed_float16 block casts its output.
        for variant in ("lgd", "v1", "v2"):
            with self.subTest(variant=variant):
                self.run_layer_test(
                    layers.LGDBlock,
                    {"local_unit": layers.P3DBottleneck(2, strides=2), "rank_ratio": 4,
                     "variant": variant},
                    input_data=[normal(2, 2, 4, 4, 4), np.abs(normal(2, 4))],
                    expected_output_shape=[(2, 2, 2, 2, 8), (2, 8)],
                    expected_num_trainable_weights=15 + (2 if variant == "v1" else 6),
                    expected_num_non_trainable_weights=10, run_training_check=LIST_FIT)

    def test_tensor_sketch(self):
        self.run_layer_test(
            layers.TensorSketch, {"output_dim": 8, "seed": 3}, input_data=normal(2, 3, 5),
            expected_output_shape=(2, 3, 8), expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=4)

    def test_local_global_sketch(self):
        self.run_layer_test(
            layers.LocalGlobalSketch, {"sketch_dim": 8, "seed": 1, "signed_sqrt_l2": True},
            input_data=[normal(2, 2, 2, 2, 4), normal(2, 4)], expected_output_shape=(2, 16),
            expected_output_dtype="float32", expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=4, run_training_check=LIST_FIT)

    def test_pixel_normalization(self):
        pixels = RNG.integers(0, 256, size=(2, 2, 3, 3, 3)).astype("uint8")
        self.run_layer_test(
            layers.PixelNormalization, {"mean": (100.0, 110.0, 120.0), "std": (50.0, 60.0, 70.0)},
            input_data=pixels, expected_output_shape=(2, 2, 3, 3, 3),
            expected_num_trainable_weights=0, expected_num_non_trainable_weights=2)

    def test_temporal_max_pooling(self):
        for pool_size, strides, frames_out in ((2, 2, 3), (3, 2, 3)):
            with self.subTest(pool_size=pool_size, strides=strides):
                self.run_layer_test(
                    layers.TemporalMaxPooling, {"pool_size": pool_size, "strides": strides},
                    input_data=normal(2, 7, 3, 3, 4),
                    expected_output_shape=(2, frames_out, 3, 3, 4),
                    expected_num_trainable_weights=0, expected_num_non_trainable_weights=0)

    def test_frame_max_pooling(self):
        self.run_layer_test(
            layers.FrameMaxPooling, {"pool_size": 3, "strides": 2, "padding": "same"},
            input_data=normal(2, 2, 7, 5, 4), expected_output_shape=(2, 2, 4, 3, 4),
            expected_num_trainable_weights=0, expected_num_non_trainable_weights=0)


def test_every_public_layer_has_a_keras_contract_test():
    public = {getattr(lgd_tf.layers, name) for name in lgd_tf.layers.__all__}
    public = {obj.__name__ for obj in public
              if isinstance(obj, type) and issubclass(obj, keras.layers.Layer)}
    tested = {name[len("test_"):].replace("_", "") for name in vars(KerasLayerContractTest)
              if name.startswith("test_")}
    assert {name.lower() for name in public} == tested


def test_no_contract_test_turns_off_the_mixed_precision_check():
    """Keras' mixed_float16 check (on by default) runs for every layer above: none opts out."""
    source = inspect.getsource(KerasLayerContractTest)
    assert "run_mixed_precision_check" not in source
    assert source.count("self.run_layer_test(") == len(
        [name for name in vars(KerasLayerContractTest) if name.startswith("test_")])
