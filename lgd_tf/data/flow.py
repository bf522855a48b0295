"""Optical flow for the input pipeline: `lgd_io.flow` (TV-L1 and its 8-bit quantisation,
Sec. 5.5) plus the horizontal flip of quantised flow as a TensorFlow op."""

import tensorflow as tf

from lgd_io.flow import BOUND, ZERO_LEVEL, dequantize_flow, quantize_flow, tvl1_flow  # noqa: F401


def flip_flow(flow_q):
    """Horizontal flip of quantised flow (..., H, W, 2): mirror columns, negate x (q -> 255 - q).

    Graph-safe TF op; works on uint8 tensors of any leading shape.
    """
    flow_q = tf.convert_to_tensor(flow_q)
    mirrored = tf.reverse(flow_q, axis=[-2])
    x = tf.cast(255, flow_q.dtype) - mirrored[..., :1]
    return tf.concat([x, mirrored[..., 1:]], axis=-1)
