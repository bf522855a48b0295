"""Keras layers of LGD networks: LGD block (Eq. 2-3, 8, 9), residual units, pools, Tensor Sketch."""

from lgd_tf.layers.batch_norm import BatchNormalization
from lgd_tf.layers.heads import LocalGlobalSketch, PixelNormalization
from lgd_tf.layers.lgd_block import VARIANTS, LGDBlock
from lgd_tf.layers.low_rank import LowRankDense
from lgd_tf.layers.residual_units import Bottleneck2D, P3DBottleneck
from lgd_tf.layers.temporal_pool import FrameMaxPooling, TemporalMaxPooling
from lgd_tf.layers.tensor_sketch import TensorSketch

__all__ = [
    "BatchNormalization",
    "Bottleneck2D",
    "FrameMaxPooling",
    "LGDBlock",
    "LocalGlobalSketch",
    "LowRankDense",
    "P3DBottleneck",
    "PixelNormalization",
    "TemporalMaxPooling",
    "TensorSketch",
    "VARIANTS",
]
