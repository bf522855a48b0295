"""Layers of the classification heads: Eq. 5 feature map and pixel normalisation."""

import keras
from keras import ops

from lgd_tf.layers.tensor_sketch import TensorSketch


@keras.saving.register_keras_serializable(package="lgd_tf")
class LocalGlobalSketch(keras.layers.Layer):
    """Eq. 5: `phi({x_L, g_L}) = [1/N sum_i TS(x_L^i), TS(g_L)]`.

    One Tensor Sketch TS is shared by the local and the global part, as Eq. 4 uses one phi.

    Args:
        sketch_dim: output dimension d of TS; the layer outputs 2 d features.
        seed: seed of TS's hashes and signs.
        signed_sqrt_l2: signed square root and L2 normalisation of the concatenated features,
            as in compact bilinear pooling (Gao et al. 2016, after Lin et al. 2015); the paper
            does not say. Off here (the bare Eq. 5); the classifier and builders turn it on.

    Call on `[x_L, g_L]` with x_L `(B, T, H, W, C)`, g_L `(B, C)`; returns `(B, 2 d)` float32.
    """

    def __init__(self, sketch_dim=8192, seed=0, signed_sqrt_l2=False, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.sketch_dim = int(sketch_dim)
        self.seed = int(seed)
        self.signed_sqrt_l2 = bool(signed_sqrt_l2)

    def build(self, input_shape):
        x_shape, g_shape = input_shape
        if x_shape[-1] != g_shape[-1]:
            raise ValueError(
                "x_L and g_L must have the same number of channels. "
                f"Received: {x_shape} and {g_shape}")
        self.sketch = TensorSketch(self.sketch_dim, seed=self.seed, dtype="float32",
                                   name="tensor_sketch")
        self.sketch.build((None, g_shape[-1]))

    def call(self, inputs):
        x, g = inputs
        local = ops.mean(self.sketch(x), axis=(1, 2, 3))
        features = ops.concatenate([local, self.sketch(g)], axis=-1)
        if self.signed_sqrt_l2:
            features = ops.sign(features) * ops.sqrt(ops.abs(features) + 1e-12)
            features = features / ops.sqrt(
                ops.sum(ops.square(features), axis=-1, keepdims=True) + 1e-12)
        return features

    def compute_output_shape(self, input_shape):
        return (input_shape[1][0], 2 * self.sketch_dim)

    def compute_output_spec(self, inputs):
        # float32 under any policy, as the call returns (its sketch is a float32 layer); the
        # default spec built from compute_output_shape would carry the compute dtype.
        x, g = inputs
        return keras.KerasTensor(self.compute_output_shape((x.shape, g.shape)), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({"sketch_dim": self.sketch_dim, "seed": self.seed,
                       "signed_sqrt_l2": self.signed_sqrt_l2})
        return config


@keras.saving.register_keras_serializable(package="lgd_tf")
class PixelNormalization(keras.layers.Layer):
    """`(x - mean) / std` per channel on raw pixels (uint8 or float 0..255).

    `mean` and `std` are stored as non-trainable weights (initialised from the arguments), so
    they travel with `get_weights`/`set_weights` and saved weights: a backbone inflated from a
    Caffe-style ResNet keeps that network's normalisation when its weights are copied.

    Input `(..., C)` -> same shape in the compute dtype.
    """

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise ValueError(
                f"`mean` and `std` need one entry per channel, std > 0. Received: {mean}, {std}")

    def build(self, input_shape):
        if input_shape[-1] != len(self.mean):
            raise ValueError(
                f"Expected {len(self.mean)} input channels. Received shape: {input_shape}")
        self.offset = self.add_weight(
            name="mean", shape=(len(self.mean),), initializer="zeros", trainable=False)
        self.scale = self.add_weight(
            name="inverse_std", shape=(len(self.std),), initializer="zeros", trainable=False)
        self.offset.assign(self.mean)
        self.scale.assign([1.0 / s for s in self.std])

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        return (x - ops.cast(self.offset, x.dtype)) * ops.cast(self.scale, x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std})
        return config
