"""Low-rank projection W = W1 W2 of the LGD block (Sec. 3.1)."""

import keras


@keras.saving.register_keras_serializable(package="lgd_tf")
class LowRankDense(keras.layers.Layer):
    """Linear map `y = W1 (W2 x)` with rank `rank`, no bias (Sec. 3.1).

    `W2` ("down", `(C_in, rank)`) projects the input to `rank` channels and `W1` ("up",
    `(rank, units)`) back to `units` channels, so the layer holds `rank * (C_in + units)`
    weights instead of `C_in * units`. With `C_in = units = C` and `rank = C / 16` this is
    `C^2 / 8`, the figure behind the 3/8 C^2 of an LGD block (three such projections).

    Args:
        units: output channels C.
        rank: inner dimension C-hat.
        down_initializer: initialiser of W2 (Glorot by default, Sec. 5.2).
        up_initializer: initialiser of W1; `"zeros"` makes W = 0 at init while both
            factors still receive gradients through W1 (used for W^{x,g}, Sec. 5.2).
        use_bias: add a bias b, `y = W1 (W2 x) + b` (the paper's W has none; the authors'
            public code uses `nn.Linear` factors, which have).
        bias_initializer: initialiser of b.

    Input `(..., C_in)` -> output `(..., units)`.
    """

    def __init__(self, units, rank, down_initializer="glorot_uniform",
                 up_initializer="glorot_uniform", use_bias=False, bias_initializer="zeros",
                 **kwargs):
        super().__init__(**kwargs)
        if int(units) < 1 or int(rank) < 1:
            raise ValueError(
                f"`units` and `rank` must be positive. Received: units={units}, rank={rank}")
        self.units = int(units)
        self.rank = int(rank)
        self.down_initializer = keras.initializers.get(down_initializer)
        self.up_initializer = keras.initializers.get(up_initializer)
        self.use_bias = bool(use_bias)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        in_dim = input_shape[-1]
        if in_dim is None:
            raise ValueError(f"The channel axis must be known. Received: {input_shape}")
        self.down = self.add_weight(
            name="down", shape=(in_dim, self.rank), initializer=self.down_initializer)
        self.up = self.add_weight(
            name="up", shape=(self.rank, self.units), initializer=self.up_initializer)
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), initializer=self.bias_initializer)

    def call(self, inputs):
        outputs = keras.ops.matmul(keras.ops.matmul(inputs, self.down), self.up)
        return outputs + self.bias if self.use_bias else outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "rank": self.rank,
            "down_initializer": keras.initializers.serialize(self.down_initializer),
            "up_initializer": keras.initializers.serialize(self.up_initializer),
            "use_bias": self.use_bias,
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config
