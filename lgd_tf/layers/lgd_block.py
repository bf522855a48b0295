"""The Local and Global Diffusion block (Sec. 3.1, Eq. 1-3; variants Eq. 8-9 of Sec. 5.3)."""

import contextlib
import threading

import keras
from keras import ops

from lgd_tf.layers import arguments
from lgd_tf.layers.low_rank import LowRankDense

VARIANTS = ("lgd", "v1", "v2")
_PLAIN = threading.local()


@contextlib.contextmanager
def plain_diffusion(map_hooks=None):
    """Within the context, LGD blocks compute Eq. 2-3 with plain ops, P(x_l) from x_l.

    The default path under TensorFlow (`diffuse`, layers/tf_kernels.py) makes x_l and P(x_l)
    in one op, so on a gradient tape g_l is not a function of the x_l tensor, and d y / d x_l
    misses every path through the global features (JAX and PyTorch always take the plain ops).
    Here it is: x_l = ReLU(F + US(W^{x,g} g)), then g_l from P(x_l) (same values).

    Args:
        map_hooks: optional `{block name: fn(x_l) -> x_l}`; the block of that name passes its
            x_l through fn before P(x_l) and returns what fn returns (to watch the map on a
            tape, or to perturb it for a gradient check).
    """
    previous = getattr(_PLAIN, "hooks", None)
    _PLAIN.hooks = dict(map_hooks or {})
    try:
        yield
    finally:
        _PLAIN.hooks = previous


def plain_spatial_mean(x):
    """P(x): global average pooling of `(B, T, H, W, C)` over (T, H, W), shape `(B, C)`."""
    return ops.mean(x, axis=(1, 2, 3))


if keras.backend.backend() == "tensorflow":
    # The fused Eq. 2-3 op and a GEMV mean (same values within float32 rounding).
    from lgd_tf.layers.tf_kernels import diffuse, spatial_mean
else:
    diffuse = None
    spatial_mean = plain_spatial_mean


@keras.saving.register_keras_serializable(package="lgd_tf")
class LGDBlock(keras.layers.Layer):
    """LGD block `{x_l, g_l} = B({x_{l-1}, g_{l-1}})` wrapping a local transformation F.

    Variant "lgd" (Eq. 2-3):
        x_l = ReLU(F(x_{l-1}) + US(W^{x,g} g_{l-1}))
        g_l = ReLU(W^{g,x} P(x_l) + W^{g,g} g_{l-1})
    Variant "v1" (Eq. 8): x_l as Eq. 2, g_l = P(x_l).
    Variant "v2" (Eq. 9): x_l = ReLU(F(x_{l-1}) * US(sigmoid(W^{x,g} g_{l-1}))), g_l as Eq. 3.

    US broadcasts a vector to every position, P is global average pooling over (T, H, W) and
    every W is a `LowRankDense` of rank `C // rank_ratio` (C = output channels of F). In the
    first block of a stage g_{l-1} is narrower than C, so W^{x,g} and W^{g,g} map C_{l-1} -> C.

    Args:
        local_unit: the layer F, mapping `(B, T, H, W, C_in)` to `(B, T', H', W', C)` without
            its last ReLU (e.g. `P3DBottleneck`, `Bottleneck2D`).
        rank_ratio: C / C-hat (16 in the paper).
        variant: "lgd", "v1" or "v2".
        zero_init_global_residual: W^{x,g} = 0 at init (its W1 factor zero, W2 Glorot, so both
            still train). Sec. 5.2 does this only with ImageNet initialisation, where it makes
            the "lgd" and "v1" blocks start as the plain residual unit; from scratch every W,
            W^{x,g} included, is Glorot (the default, False). For "v2" (Eq. 9) the gate is
            sigmoid(W^{x,g} g): with W^{x,g} = 0 it is exactly 0.5 everywhere, so the block
            starts as ReLU(F(x) / 2) and halves the local path in every block (the paper says
            nothing else about v2's initialisation); with Glorot W^{x,g} the gate starts at
            sigmoid of a random projection of g, around 0.5 but different per channel and clip.
        kernel_initializer: initialiser of the projection factors (Glorot, Sec. 5.2).
        projection_bias: a bias in each projection W (not in Eq. 2-3; the authors' public
            PyTorch code, `model/lgd_p3d_resnet.py` of ZhaofanQiu/Optimization-Planning-for-
            3D-ConvNets, builds each factor as an `nn.Linear`). Initialised as the last
            `nn.Linear` factor's bias: U(+-1 / sqrt(rank)). Default False (the paper).
        pool_block_input: the order of that code: g_l = ReLU(W^{g,x} P(x_{l-1}) +
            W^{g,g} g_{l-1}) from the block's INPUT, then x_l = ReLU(F(x_{l-1}) +
            US(W^{x,g} g_l)) with the NEW g_l. Default False (Eq. 2 then Eq. 3); "lgd" and
            "v2" only (v1 has no W^{g,x}).

    Call on `[x, g]` with x `(B, T, H, W, C_in)`, g `(B, C_g)`; returns `[x_l, g_l]` with
    x_l `(B, T', H', W', C)` and g_l `(B, C)`.
    """

    def __init__(self, local_unit, rank_ratio=16, variant="lgd", zero_init_global_residual=False,
                 kernel_initializer="glorot_uniform", projection_bias=False,
                 pool_block_input=False, **kwargs):
        super().__init__(**kwargs)
        arguments.check_one_of("variant", variant, VARIANTS)
        arguments.check_at_least_one("rank_ratio", rank_ratio)
        self.local_unit = arguments.deserialized(local_unit)
        self.rank_ratio = int(rank_ratio)
        self.variant = variant
        self.zero_init_global_residual = bool(zero_init_global_residual)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.projection_bias = bool(projection_bias)
        self.pool_block_input = bool(pool_block_input)
        if self.pool_block_input and variant == "v1":
            raise ValueError("`pool_block_input=True` needs W^{g,x}: variant 'lgd' or 'v2'.")

    def build(self, input_shape):
        x_shape, g_shape = input_shape
        if len(g_shape) != 2 or g_shape[-1] is None:
            raise ValueError(f"Expected g of shape (B, C) with known C. Received: {g_shape}")
        if not self.local_unit.built:
            self.local_unit.build(x_shape)
        channels = self.local_unit.compute_output_shape(x_shape)[-1]
        rank = max(1, channels // self.rank_ratio)
        init = keras.initializers.serialize(self.kernel_initializer)
        bias = {"use_bias": self.projection_bias, "bias_initializer": {
            "class_name": "RandomUniform",
            "config": {"minval": -rank**-0.5, "maxval": rank**-0.5}}}
        self.global_to_local = LowRankDense(
            channels, rank, down_initializer=init,
            up_initializer="zeros" if self.zero_init_global_residual else init,
            dtype=self.dtype_policy, name="global_to_local", **bias)
        self.global_to_local.build((None, channels) if self.pool_block_input else g_shape)
        if self.variant != "v1":
            self.local_to_global = LowRankDense(
                channels, rank, down_initializer=init, up_initializer=init,
                dtype=self.dtype_policy, name="local_to_global", **bias)
            self.global_to_global = LowRankDense(
                channels, rank, down_initializer=init, up_initializer=init,
                dtype=self.dtype_policy, name="global_to_global", **bias)
            self.local_to_global.build(
                (None, x_shape[-1]) if self.pool_block_input else (None, channels))
            self.global_to_global.build(g_shape)
        self.channels = channels

    def _call_pooling_block_input(self, x, g, training):
        """`pool_block_input=True`: g_l from P(x_{l-1}) first, then x_l with the new g_l."""
        pooled = ops.mean(x, axis=(1, 2, 3))
        g_out = ops.relu(self.local_to_global(pooled) + self.global_to_global(g))
        f = self.local_unit(x, training=training)
        residual = self.global_to_local(g_out)[:, None, None, None, :]
        if self.variant == "v2":
            return [ops.relu(f * ops.sigmoid(residual)), g_out]
        return [ops.relu(f + residual), g_out]

    def call(self, inputs, training=None):
        x, g = inputs
        if self.pool_block_input:
            return self._call_pooling_block_input(x, g, training)
        f = self.local_unit(x, training=training)
        if keras.backend.standardize_dtype(f.dtype) != self.compute_dtype:
            # A unit made under another policy (e.g. float32 in a mixed_float16 block).
            f = ops.cast(f, self.compute_dtype)
        residual = self.global_to_local(g)
        hooks = getattr(_PLAIN, "hooks", None)
        if self.variant != "v2" and hooks is None and diffuse is not None:
            x_out, pooled = diffuse(f, residual)
        else:
            residual = residual[:, None, None, None, :]
            if self.variant == "v2":
                x_out = ops.relu(f * ops.sigmoid(residual))
            else:
                x_out = ops.relu(f + residual)
            if hooks and self.name in hooks:
                x_out = hooks[self.name](x_out)
            pooled = spatial_mean(x_out)
        if self.variant == "v1":
            g_out = pooled
        else:
            g_out = ops.relu(self.local_to_global(pooled) + self.global_to_global(g))
        return [x_out, g_out]

    def compute_output_shape(self, input_shape):
        x_shape, g_shape = input_shape
        x_out = self.local_unit.compute_output_shape(x_shape)
        return [tuple(x_out), (g_shape[0], x_out[-1])]

    def get_config(self):
        config = super().get_config()
        config.update({
            "local_unit": keras.saving.serialize_keras_object(self.local_unit),
            "rank_ratio": self.rank_ratio,
            "variant": self.variant,
            "zero_init_global_residual": self.zero_init_global_residual,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "projection_bias": self.projection_bias,
            "pool_block_input": self.pool_block_input,
        })
        return config
