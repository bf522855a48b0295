"""Max pooling of LGD networks without MaxPool3D: temporal (pool1 / pool2, Table 1) and per frame.

TF's CPU MaxPool3DGrad hands the full gradient to every entry within 1e-5 of a window's
maximum (eager, and graphs with oneDNN off), while oneDNN graphs and XLA hand it to one entry.
Static clips, letterboxed frames and padded short videos make exact temporal ties, so the
gradients of everything below pool1 / pool2 depended on the execution path (up to 2x the
true value for a tie of two). `TemporalMaxPooling` is a `reduce_max` over the stacked window,
whose gradient splits a tie evenly on every path; the entries of a tie then receive gradients
that sum to the derivative of the maximum (`docs/paper_differences.md`,
"temporal pooling").
`FrameMaxPooling` is `MaxPool2D` on the frames folded into the batch, whose gradient goes to
one entry of a tie on every path. Neither uses MaxPool3D, which the TFLite converter refuses
and which has no float16 CPU kernel.
"""

import keras
from keras import ops


def _pair(value, name):
    value = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"`{name}` must be a positive integer or a pair. Received: {value}")
    return value


@keras.saving.register_keras_serializable(package="lgd_tf")
class TemporalMaxPooling(keras.layers.Layer):
    """Max over `pool_size` consecutive frames every `strides` frames ("valid" windows).

    Same values as `MaxPool3D((pool_size, 1, 1), strides=(strides, 1, 1))` (pool1 and pool2
    of Table 1: 2x1x1, stride 2; pool1 4x1x1, stride 4 for the 128-frame clips of Sec. 5.4),
    computed as `reduce_max` over the window's axis: with `strides == pool_size` (the
    windows of Table 1) the clip is reshaped to `(B * T', pool_size, H * W * C)`, otherwise
    the `pool_size` strided slices are stacked on a new axis (StridedSlice over frames and its
    gradient are 10-17x slower on CPU than the reshape). The gradient of a window whose
    maximum is reached by k entries gives each of them 1/k of the incoming gradient, eagerly,
    in graphs and under XLA alike.

    Args:
        pool_size: frames per window.
        strides: frame step between windows (default `pool_size`).

    Input `(B, T, H, W, C)` -> `(B, (T - pool_size) // strides + 1, H, W, C)`.
    """

    def __init__(self, pool_size=2, strides=None, **kwargs):
        super().__init__(**kwargs)
        strides = pool_size if strides is None else strides
        if int(pool_size) < 1 or int(strides) < 1:
            raise ValueError("`pool_size` and `strides` must be positive. Received: "
                             f"pool_size={pool_size}, strides={strides}")
        self.pool_size = int(pool_size)
        self.strides = int(strides)

    def _frames_out(self, frames):
        return (frames - self.pool_size) // self.strides + 1

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"Expected a clip (B, T, H, W, C). Received: {input_shape}")
        if input_shape[1] is not None and input_shape[1] < self.pool_size:
            raise ValueError(f"Expected at least {self.pool_size} frames (pool_size). "
                             f"Received: {input_shape}")

    def call(self, inputs):
        if self.pool_size == self.strides and self.pool_size > 1:
            return self._tiled(inputs)
        frames = ops.shape(inputs)[1]
        span = self.strides * (self._frames_out(frames) - 1) + 1
        windows = [inputs[:, k:k + span:self.strides] for k in range(self.pool_size)]
        if self.pool_size == 1:
            return windows[0]
        return ops.max(ops.stack(windows, axis=2), axis=2)

    def _tiled(self, inputs):
        """Windows that tile the clip: reduce_max over axis 1 of `(B * T', pool, H * W * C)`
        (3-D, so LiteRT and ONNX take it as well); trailing frames (T mod pool) are dropped."""
        batch, frames, height, width, channels = ops.shape(inputs)
        windows = frames // self.pool_size
        if inputs.shape[1] is None or inputs.shape[1] % self.pool_size:
            inputs = inputs[:, :windows * self.pool_size]
        pooled = ops.max(ops.reshape(inputs, (batch * windows, self.pool_size,
                                              height * width * channels)), axis=1)
        return ops.reshape(pooled, (batch, windows, height, width, channels))

    def compute_output_shape(self, input_shape):
        frames = input_shape[1]
        frames = None if frames is None else self._frames_out(frames)
        return (input_shape[0], frames) + tuple(input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size, "strides": self.strides})
        return config


@keras.saving.register_keras_serializable(package="lgd_tf")
class FrameMaxPooling(keras.layers.Layer):
    """2-D max pooling of every frame: `MaxPool2D` on `(B * T, H, W, C)`.

    The same values as `MaxPool3D((1,) + pool_size, strides=(1,) + strides)`; used for the
    3x3 stride-2 pool of the LGD-2D stem (Sec. 4.1, the 2-D ResNet's pool1).

    Args:
        pool_size: spatial window (int or pair).
        strides: spatial step (int or pair; default `pool_size`).
        padding: "valid" or "same".

    Input `(B, T, H, W, C)` -> `(B, T, H', W', C)`.
    """

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, "strides")
        if padding not in ("valid", "same"):
            raise ValueError(f"`padding` must be 'valid' or 'same'. Received: {padding!r}")
        self.padding = padding

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"Expected a clip (B, T, H, W, C). Received: {input_shape}")
        self.pool = keras.layers.MaxPool2D(self.pool_size, self.strides, padding=self.padding,
                                           dtype=self.dtype_policy, name="pool")
        self.pool.build((None,) + tuple(input_shape[2:]))

    def call(self, inputs):
        shape = ops.shape(inputs)
        pooled = self.pool(ops.reshape(inputs, (-1, shape[2], shape[3], shape[4])))
        out = ops.shape(pooled)
        return ops.reshape(pooled, (shape[0], shape[1], out[1], out[2], out[3]))

    def compute_output_shape(self, input_shape):
        frame = keras.layers.MaxPool2D(self.pool_size, self.strides, padding=self.padding)
        out = frame.compute_output_shape((None,) + tuple(input_shape[2:]))
        return tuple(input_shape[:2]) + tuple(out[1:])

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": list(self.pool_size), "strides": list(self.strides),
                       "padding": self.padding})
        return config
