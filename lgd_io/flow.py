"""TV-L1 optical flow and its 8-bit quantisation (Sec. 5.5).

Flow between frames t and t+1 is clipped to [-BOUND, BOUND] pixels and stored as q =
round((f + BOUND) * 255 / (2 * BOUND)): x in channel 0, y in channel 1, channel 2 = 128.
So 128 stands for (almost) zero motion, and a horizontal flip maps q_x to 255 - q_x
(`lgd_tf.data.flow.flip_flow`, the training-time TensorFlow op).
"""

import cv2
import numpy as np

BOUND = 20.0
ZERO_LEVEL = 128


def quantize_flow(flow):
    """(..., 2) float flow -> (..., 3) uint8 image (x, y, 128)."""
    flow = np.asarray(flow, np.float32)
    if flow.shape[-1] != 2:
        raise ValueError(f"Flow must have 2 channels (x, y). Received shape: {flow.shape}")
    q = np.round((np.clip(flow, -BOUND, BOUND) + BOUND) * 255.0 / (2 * BOUND))
    third = np.full(flow.shape[:-1] + (1,), ZERO_LEVEL, np.float32)
    return np.concatenate([q, third], axis=-1).astype(np.uint8)


def dequantize_flow(q):
    """uint8 (..., >=2) -> float32 (..., 2) flow in pixels (inverse of `quantize_flow`)."""
    q = np.asarray(q)[..., :2].astype(np.float32)
    return q * (2 * BOUND) / 255.0 - BOUND


def tvl1_flow(frames):
    """TV-L1 flow between consecutive RGB frames (N, H, W, 3) -> float32 (N - 1, H, W, 2)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise ValueError(f"Need (N >= 2, H, W, 3) frames for flow. Received shape: {frames.shape}")
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([tvl1.calc(a, b, None) for a, b in zip(gray[:-1], gray[1:], strict=False)])
