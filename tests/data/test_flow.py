"""Flow quantisation (Sec. 5.5 storage), flip, and TV-L1 on a known translation."""

import numpy as np
import pytest
import tensorflow as tf

from lgd_tf.data import flow


def test_quantize_matches_the_formula_and_round_trips():
    f = np.array([[-25.0, 20.0], [0.0, -20.0], [3.3, -7.9], [19.9, 100.0]], np.float32)
    q = flow.quantize_flow(f)
    expected = np.round((np.clip(f, -20, 20) + 20) * 255 / 40)
    np.testing.assert_array_equal(q[:, :2], expected)
    np.testing.assert_array_equal(q[:, 2], 128)
    back = flow.dequantize_flow(q)
    np.testing.assert_allclose(back, np.clip(f, -20, 20), atol=40 / 255 / 2 + 1e-6)


def test_zero_motion_is_close_to_128():
    assert flow.quantize_flow(np.zeros((1, 2)))[0, 0] in (127, 128)


def test_quantize_rejects_wrong_channels():
    with pytest.raises(ValueError, match="2 channels"):
        flow.quantize_flow(np.zeros((4, 4, 3)))


def _flip_reference(q):
    out = q[..., ::-1, :].copy()
    out[..., 0] = 255 - out[..., 0]
    return out


def test_flip_mirrors_columns_and_negates_x_eager_and_in_dataset_map():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, size=(3, 4, 5, 2)).astype(np.uint8)
    np.testing.assert_array_equal(flow.flip_flow(q).numpy(), _flip_reference(q))
    mapped = next(iter(tf.data.Dataset.from_tensors(q).map(flow.flip_flow))).numpy()
    np.testing.assert_array_equal(mapped, _flip_reference(q))
    # Negating x in flow units: the dequantised x of the flipped flow is -x (up to one level).
    f = flow.dequantize_flow(q)
    f_flipped = flow.dequantize_flow(flow.flip_flow(q).numpy())
    np.testing.assert_allclose(f_flipped[..., 0], -f[..., ::-1, 0], atol=40 / 255 + 1e-5)


def test_tvl1_recovers_a_known_translation():
    rng = np.random.default_rng(1)
    base = (rng.random((48, 48)) * 255).astype(np.float32)
    import cv2

    base = cv2.GaussianBlur(base, (0, 0), 2.0)
    first = np.clip(base, 0, 255).astype(np.uint8)
    second = np.roll(first, shift=(1, 2), axis=(0, 1))  # content moves +2 px in x, +1 in y
    frames = np.stack([first, second])[..., None].repeat(3, axis=-1)
    f = flow.tvl1_flow(frames)
    assert f.shape == (1, 48, 48, 2)
    centre = f[0, 12:36, 12:36]
    np.testing.assert_allclose(np.median(centre[..., 0]), 2.0, atol=0.3)
    np.testing.assert_allclose(np.median(centre[..., 1]), 1.0, atol=0.3)


def test_tvl1_needs_two_frames():
    with pytest.raises(ValueError, match="N >= 2"):
        flow.tvl1_flow(np.zeros((1, 8, 8, 3), np.uint8))
