"""LGD-3D and LGD-2D backbones (Sec. 4.1-4.2, Table 1): pixels -> {x_L, g_L, res2..res5}."""

import keras

from lgd_tf.layers import (
    VARIANTS,
    BatchNormalization,
    Bottleneck2D,
    FrameMaxPooling,
    LGDBlock,
    P3DBottleneck,
    PixelNormalization,
    TemporalMaxPooling,
)

# Residual units per stage (res2..res5), as in He et al. and Model Garden's RESNET_SPECS.
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

# Normalisation of raw pixels 0..255: ImageNet mean / std for RGB; flow is quantised so that
# 128 means zero motion (`tfrecords/README.md`), mapped to [-1, 1].
RGB_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
RGB_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
FLOW_MEAN = (128.0, 128.0)
FLOW_STD = (128.0, 128.0)


def stage_blocks_for(depth, stage_blocks):
    """The residual units per stage: `stage_blocks` if given, else the depth table."""
    if stage_blocks is not None:
        blocks = tuple(int(b) for b in stage_blocks)
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(
                f"`stage_blocks` must be 4 positive integers. Received: {stage_blocks}")
        return blocks
    if depth not in DEPTHS:
        raise ValueError(f"`depth` must be one of {sorted(DEPTHS)}. Received: {depth}")
    return DEPTHS[depth]


def normalization_for(input_channels):
    if input_channels == 3:
        return RGB_MEAN, RGB_STD
    if input_channels == 2:
        return FLOW_MEAN, FLOW_STD
    raise ValueError(
        f"`input_channels` must be 3 (RGB) or 2 (flow). Received: {input_channels}")


def _stem(x, filters, temporal, pool1_stride):
    """conv1 (+ pool1): Table 1 for LGD-3D; the 2-D ResNet stem for LGD-2D.

    Explicit symmetric zero padding as in the Caffe / Keras ResNet, so inflated weights see
    the same pixels. The pools are `TemporalMaxPooling` / `FrameMaxPooling` (no MaxPool3D: its
    CPU gradient depends on the execution path at ties, see lgd_tf/layers/temporal_pool.py).
    """
    x = keras.layers.ZeroPadding3D((0, 3, 3), name="conv1_pad")(x)
    x = keras.layers.Conv3D(filters, (1, 7, 7), strides=(1, 2, 2), use_bias=False,
                            name="conv1_spatial")(x)
    x = BatchNormalization(epsilon=1.001e-5, name="conv1_spatial_bn")(x)
    x = keras.layers.ReLU(name="conv1_spatial_relu")(x)
    if temporal:
        x = keras.layers.Conv3D(filters, (3, 1, 1), padding="same", use_bias=False,
                                name="conv1_temporal")(x)
        x = BatchNormalization(epsilon=1.001e-5, name="conv1_temporal_bn")(x)
        x = keras.layers.ReLU(name="conv1_temporal_relu")(x)
        return TemporalMaxPooling(pool1_stride, name="pool1")(x)
    # Zero padding equals -inf padding here: the pooled values are ReLU outputs (>= 0).
    x = keras.layers.ZeroPadding3D((0, 1, 1), name="pool1_pad")(x)
    return FrameMaxPooling(3, strides=2, name="pool1")(x)


def apply_stage(x, g, stage, filters, blocks, *, temporal, use_lgd, variant, rank_ratio,
                zero_init_global_residual):
    """One stage `res{stage}`: `blocks` residual units, LGD blocks when `use_lgd`."""
    unit_cls = P3DBottleneck if temporal else Bottleneck2D
    for b in range(1, blocks + 1):
        name = f"res{stage}_block{b}"
        strides = 2 if (stage > 2 and b == 1) else 1
        unit = unit_cls(filters, strides=strides, name=f"{name}_unit")
        if use_lgd:
            x, g = LGDBlock(unit, rank_ratio=rank_ratio, variant=variant,
                            zero_init_global_residual=zero_init_global_residual, name=name)([x, g])
        else:
            x = keras.layers.ReLU(name=f"{name}_relu")(unit(x))
    return x, g


def _build(*, temporal, depth, stage_blocks, base_filters, num_frames, input_channels,
           long_clip, use_lgd, variant, rank_ratio, zero_init_global_residual):
    blocks = stage_blocks_for(depth, stage_blocks)
    mean, std = normalization_for(input_channels)
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}. Received: {variant!r}")
    if int(base_filters) < 1:
        raise ValueError(f"`base_filters` must be positive. Received: {base_filters}")
    pool1_stride = 4 if long_clip else 2
    if temporal and num_frames is not None and num_frames < 2 * pool1_stride:
        raise ValueError(
            f"LGD-3D needs at least {2 * pool1_stride} frames (pool1 stride {pool1_stride}, "
            f"pool2 stride 2). Received: num_frames={num_frames}")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"The number of frames must be positive. Received: {num_frames}")

    inputs = keras.Input((num_frames, None, None, input_channels), name="pixels")
    x = PixelNormalization(mean, std, name="normalization")(inputs)
    x = _stem(x, base_filters, temporal, pool1_stride)
    # g_0: global average of the stem output (Sec. 4.1 for LGD-2D; LGD-3D: paper_differences.md).
    g = keras.layers.GlobalAveragePooling3D(name="global_init")(x) if use_lgd else None
    outputs = {}
    for i, (stage, n) in enumerate(zip((2, 3, 4, 5), blocks, strict=True)):
        x, g = apply_stage(x, g, stage, base_filters * 2**i, n, temporal=temporal,
                           use_lgd=use_lgd, variant=variant, rank_ratio=rank_ratio,
                           zero_init_global_residual=zero_init_global_residual)
        outputs[f"res{stage}"] = x
        if temporal and stage == 2:
            x = TemporalMaxPooling(2, name="pool2")(x)
    if not use_lgd:
        # Baselines (P3D / TSN): the "global" output is P(x_L).
        g = keras.layers.GlobalAveragePooling3D(name="global_pool")(x)
    outputs = {"local": x, "global": g, **outputs}
    return inputs, outputs


class _Backbone(keras.Model):
    temporal = None

    def __init__(self, depth=50, stage_blocks=None, base_filters=64, num_frames=16,
                 input_channels=3, long_clip=False, use_lgd=True, variant="lgd",
                 rank_ratio=16, zero_init_global_residual=False, name="backbone", **kwargs):
        stage_blocks = None if stage_blocks is None else [int(b) for b in stage_blocks]
        inputs, outputs = _build(
            temporal=self.temporal, depth=depth, stage_blocks=stage_blocks,
            base_filters=base_filters, num_frames=num_frames, input_channels=input_channels,
            long_clip=long_clip, use_lgd=use_lgd, variant=variant, rank_ratio=rank_ratio,
            zero_init_global_residual=zero_init_global_residual)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.depth = depth
        self.stage_blocks = stage_blocks
        self.base_filters = base_filters
        self.num_frames = num_frames
        self.input_channels = input_channels
        self.long_clip = long_clip
        self.use_lgd = use_lgd
        self.variant = variant
        self.rank_ratio = rank_ratio
        self.zero_init_global_residual = zero_init_global_residual

    @property
    def blocks(self):
        return stage_blocks_for(self.depth, self.stage_blocks)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "depth": self.depth,
            "stage_blocks": self.stage_blocks,
            "base_filters": self.base_filters,
            "num_frames": self.num_frames,
            "input_channels": self.input_channels,
            "long_clip": self.long_clip,
            "use_lgd": self.use_lgd,
            "variant": self.variant,
            "rank_ratio": self.rank_ratio,
            "zero_init_global_residual": self.zero_init_global_residual,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="lgd_tf")
class LGD3DBackbone(_Backbone):
    """LGD-3D backbone (Sec. 4.2, Table 1): P3D-A ResNet with an LGD block on every unit.

    conv1 = 1x7x7 (stride 1,2,2) + 3x1x1 convolutions, pool1 = temporal max pool 2x1x1
    (stride 4 with `long_clip`, the 128-frame setting of Sec. 5.4), res2, pool2 = temporal max
    pool 2x1x1, res3..res5 with spatial stride 2 in their first unit. A 16x112x112 clip gives
    x_L of 4x7x7x(32 * base_filters). There is no spatial max pool (Table 1).

    Input: raw pixels `(B, num_frames, H, W, input_channels)`, 0..255 (uint8 or float).
    Output dict: "local" x_L `(B, T', H', W', C)`, "global" g_L `(B, C)` (P(x_L) when
    `use_lgd=False`, the P3D baseline), "res2".."res5" the local map after each stage.
    """

    temporal = True


@keras.saving.register_keras_serializable(package="lgd_tf")
class LGD2DBackbone(_Backbone):
    """LGD-2D backbone (Sec. 4.1): a shared 2-D ResNet on T frames (TSN segments) with LGD.

    The local path runs every frame independently (7x7 stride-2 conv, 3x3 stride-2 max pool,
    2-D bottlenecks); the global path spans all frames, g_1 = P(x_1) over (T, H, W).
    `use_lgd=False` gives the TSN baseline. Input `(B, T, H, W, C)` with T = segments; the
    output dict is the same as `LGD3DBackbone`'s (x_L is `(B, T, H/32, W/32, C)`).
    """

    temporal = False
