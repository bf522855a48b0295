"""Local transformations F of the LGD block (Sec. 4): 2-D and P3D-A bottleneck units.

Both units map a clip `(B, T, H, W, C_in)` to `(B, T, H / s, W / s, 4 * filters)` and return
F(x) = branch(x) + shortcut(x) WITHOUT the unit's last ReLU: the LGD block (Eq. 2) or, in the
baselines, a plain ReLU applies it. Spatial kernels run as 2-D convolutions on the frames
folded into the batch, the temporal kernel as a `(k, 1)` convolution over `(B, T, H * W, C)`,
which is the same operation as a `k x 1 x 1` 3-D convolution. As in the ResNet of He et al.
(and its Keras weights), the stride sits on the first 1x1 convolution and on the projection
shortcut.
"""

import keras
from keras import ops

from lgd_tf.layers.batch_norm import BatchNormalization


class _Bottleneck(keras.layers.Layer):
    """1x1 -> 1x3x3 [-> k x 1 x 1] -> 1x1 bottleneck with BatchNorm, projection shortcut."""

    temporal = False

    def __init__(self, filters, strides=1, use_projection=None, expansion=4,
                 kernel_initializer="glorot_uniform", bn_momentum=0.9, bn_epsilon=1.001e-5,
                 **kwargs):
        super().__init__(**kwargs)
        if int(filters) < 1 or int(strides) not in (1, 2) or int(expansion) < 1:
            raise ValueError(
                "`filters` and `expansion` must be positive and `strides` 1 or 2. Received: "
                f"filters={filters}, strides={strides}, expansion={expansion}")
        self.filters = int(filters)
        self.strides = int(strides)
        self.use_projection = use_projection
        self.expansion = int(expansion)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon

    @property
    def output_filters(self):
        return self.filters * self.expansion

    def _conv(self, filters, kernel_size, strides=1, name=None):
        return keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding="same", use_bias=False,
            kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name=name)

    def _bn(self, name):
        return BatchNormalization(
            momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype_policy,
            name=name)

    def build(self, input_shape):
        if len(input_shape) != 5 or input_shape[-1] is None:
            raise ValueError(
                f"Expected a clip (B, T, H, W, C) with known C. Received: {input_shape}")
        in_channels = input_shape[-1]
        projection = self.use_projection
        if projection is None:
            projection = self.strides != 1 or in_channels != self.output_filters
        self._projection = bool(projection)
        frame_shape = (None, None, None, in_channels)
        self.conv_a = self._conv(self.filters, 1, self.strides, name="conv_a")
        self.bn_a = self._bn("bn_a")
        self.conv_s = self._conv(self.filters, 3, name="conv_s")
        self.bn_s = self._bn("bn_s")
        self.conv_c = self._conv(self.output_filters, 1, name="conv_c")
        self.bn_c = self._bn("bn_c")
        inner = (None, None, None, self.filters)
        self.conv_a.build(frame_shape)
        self.bn_a.build(inner)
        self.conv_s.build(inner)
        self.bn_s.build(inner)
        if self.temporal:
            self.conv_t = self._conv(self.filters, (self.temporal_kernel_size, 1), name="conv_t")
            self.bn_t = self._bn("bn_t")
            self.conv_t.build(inner)
            self.bn_t.build(inner)
        self.conv_c.build(inner)
        self.bn_c.build((None, None, None, self.output_filters))
        if self._projection:
            self.conv_p = self._conv(self.output_filters, 1, self.strides, name="conv_p")
            self.bn_p = self._bn("bn_p")
            self.conv_p.build(frame_shape)
            self.bn_p.build((None, None, None, self.output_filters))

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        batch, frames = shape[0], shape[1]
        x = ops.reshape(inputs, (-1, shape[2], shape[3], shape[4]))
        y = ops.relu(self.bn_a(self.conv_a(x), training=training))
        y = ops.relu(self.bn_s(self.conv_s(y), training=training))
        if self.temporal:
            frame = ops.shape(y)
            y = ops.reshape(y, (batch, frames, frame[1] * frame[2], self.filters))
            y = ops.relu(self.bn_t(self.conv_t(y), training=training))
            y = ops.reshape(y, (-1, frame[1], frame[2], self.filters))
        y = self.bn_c(self.conv_c(y), training=training)
        if self._projection:
            x = self.bn_p(self.conv_p(x), training=training)
        out = y + x
        out_frame = ops.shape(out)
        return ops.reshape(out, (batch, frames, out_frame[1], out_frame[2], self.output_filters))

    def compute_output_shape(self, input_shape):
        def down(size):
            return None if size is None else (size + self.strides - 1) // self.strides

        b, t, h, w, _ = input_shape
        return (b, t, down(h), down(w), self.output_filters)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "strides": self.strides,
            "use_projection": self.use_projection,
            "expansion": self.expansion,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bn_momentum": self.bn_momentum,
            "bn_epsilon": self.bn_epsilon,
        })
        return config


@keras.saving.register_keras_serializable(package="lgd_tf")
class Bottleneck2D(_Bottleneck):
    """2-D ResNet bottleneck applied to every frame: F of LGD-2D (Sec. 4.1).

    1x1 (stride s) -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 1x1 -> BN, plus the identity or a
    1x1 (stride s) + BN projection shortcut; no last ReLU. Input `(B, T, H, W, C_in)`.
    """


@keras.saving.register_keras_serializable(package="lgd_tf")
class P3DBottleneck(_Bottleneck):
    """P3D-A bottleneck: F of LGD-3D (Sec. 4.2, Table 1).

    1x1x1 (stride 1,s,s) -> BN -> ReLU -> 1x3x3 -> BN -> ReLU -> 3x1x1 -> BN -> ReLU ->
    1x1x1 -> BN, plus the identity or a 1x1x1 + BN projection shortcut; no last ReLU.
    Input `(B, T, H, W, C_in)`; the temporal length is preserved (zero padding).

    Args:
        temporal_kernel_size: length k of the temporal convolution (3 in the paper).
    """

    temporal = True

    def __init__(self, filters, temporal_kernel_size=3, **kwargs):
        super().__init__(filters, **kwargs)
        if int(temporal_kernel_size) < 1 or int(temporal_kernel_size) % 2 == 0:
            raise ValueError(
                "`temporal_kernel_size` must be a positive odd integer. "
                f"Received: {temporal_kernel_size}")
        self.temporal_kernel_size = int(temporal_kernel_size)

    def get_config(self):
        config = super().get_config()
        config["temporal_kernel_size"] = self.temporal_kernel_size
        return config
