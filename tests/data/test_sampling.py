"""Clip / TSN / evaluation sampling (Sec. 5.2) against naive index lists, eager and in graphs."""

import numpy as np
import pytest
import tensorflow as tf

from lgd_tf.data import eval_views, sampling
from tests.data import helpers


def test_clip_indices_loop_and_pad():
    np.testing.assert_array_equal(sampling.clip_indices(10, 4, 2, start=3), [3, 5, 7, 9])
    np.testing.assert_array_equal(sampling.clip_indices(5, 7, 1, start=0), [0, 1, 2, 3, 4, 0, 1])
    np.testing.assert_array_equal(sampling.clip_indices(5, 7, 1, start=0, short_video="pad"),
                                  [0, 1, 2, 3, 4, 4, 4])
    with pytest.raises(ValueError, match="short_video"):
        sampling.clip_indices(5, 7, short_video="wrap")


def test_random_clip_is_consecutive_in_range_and_covers_all_starts():
    starts = set()
    for s in range(300):
        idx = sampling.random_clip_indices(20, 4, 3, seed=(s, 7)).numpy()
        np.testing.assert_array_equal(np.diff(idx), 3)
        assert 0 <= idx[0] and idx[-1] < 20
        starts.add(int(idx[0]))
    assert starts == set(range(20 - 9))  # every valid start 0..10 is drawn


def test_random_clip_same_seed_same_clip():
    a = sampling.random_clip_indices(50, 8, seed=(1, 2)).numpy()
    b = sampling.random_clip_indices(50, 8, seed=(1, 2)).numpy()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n,t", [(30, 3), (31, 3), (7, 7), (100, 8)])
def test_tsn_one_frame_per_segment(n, t):
    bounds = [(i * n // t, (i + 1) * n // t) for i in range(t)]  # integer segment edges
    seen = [set() for _ in range(t)]
    for s in range(200):
        idx = sampling.random_tsn_indices(n, t, seed=(s, 1)).numpy()
        for i, k in enumerate(idx):
            assert bounds[i][0] <= k < bounds[i][1], (idx, bounds)
            seen[i].add(int(k))
    # Each segment's frames all get drawn (segments of n / t frames).
    for i, (lo, hi) in enumerate(bounds):
        assert seen[i] == {k for k in range(n) if lo <= k < hi}


def test_tsn_shorter_than_segments():
    np.testing.assert_array_equal(sampling.tsn_indices(2, 5, tf.zeros([5])), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(sampling.tsn_indices(2, 5, tf.zeros([5]), "pad"),
                                  [0, 1, 1, 1, 1])


def test_eval_indices_3d_uniform_clips():
    idx = sampling.eval_indices(100, num_frames=16, num_clips=15).numpy()
    starts = np.round(np.linspace(0, 100 - 16, 15)).astype(int)
    np.testing.assert_array_equal(idx, starts[:, None] + np.arange(16)[None, :])
    one = sampling.eval_indices(40, num_frames=8, num_clips=1).numpy()
    np.testing.assert_array_equal(one, [np.arange(8)])


def test_eval_indices_2d_frame_tuples():
    idx = sampling.eval_indices(30, model="2d", num_segments=3, num_clips=10).numpy()
    expected = np.floor((np.arange(3)[None, :] + (np.arange(10)[:, None] + 0.5) / 10) * 10)
    np.testing.assert_array_equal(idx, expected.astype(int))
    assert idx.shape == (10, 3)


def test_eval_views_sampling_and_whole_frame():
    frames = helpers.indexed_frames(30, 24, 32)
    views = eval_views(frames, num_frames=8, num_clips=3, short_side=12).numpy()
    assert views.shape == (3, 8, 12, 16, 3) and views.dtype == np.uint8
    for v, start in zip(views, [0, 11, 22], strict=True):
        np.testing.assert_array_equal(helpers.frame_indices(v), np.arange(start, start + 8))


def test_eval_views_three_crops_cover_the_long_side():
    x = np.arange(40, dtype=np.uint8)
    frames = np.broadcast_to(x[None, None, :, None], (6, 20, 40, 3)).copy()  # column = x
    views = eval_views(frames, num_frames=2, num_clips=2, num_crops=3, short_side=None).numpy()
    assert views.shape == (6, 2, 20, 20, 3)
    firsts = views[:, 0, 0, 0, 0]
    np.testing.assert_array_equal(firsts, [0, 10, 20, 0, 10, 20])  # clip-major, crops 0..2


def test_eval_views_inside_a_tf_function_with_unknown_shapes():
    fn = tf.function(lambda f: eval_views(f, model="2d", num_segments=3, num_clips=4,
                                          short_side=16),
                     input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    frames = helpers.indexed_frames(12, 32, 24)
    out = fn(frames).numpy()
    assert out.shape == (4, 3, 21, 16, 3)  # 32x24 -> shorter side 16 -> 21x16 (rounded)
    np.testing.assert_array_equal(out, eval_views(frames, model="2d", num_segments=3,
                                                  num_clips=4, short_side=16).numpy())


def test_resize_is_identity_at_the_same_size_and_bilinear_otherwise():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 8, 10, 3)).astype(np.uint8)
    np.testing.assert_array_equal(sampling.resize_shorter_side(frames, 8).numpy(), frames)
    down = sampling.resize_frames(frames, (4, 5)).numpy()
    # Half-pixel bilinear at exactly 2x is the mean of each 2x2 block.
    ref = frames.reshape(2, 4, 2, 5, 2, 3).astype(np.float32).mean(axis=(2, 4))
    np.testing.assert_allclose(down, np.round(ref), atol=1)


def test_eval_views_errors():
    with pytest.raises(ValueError, match="num_crops"):
        eval_views(np.zeros((4, 8, 8, 3), np.uint8), num_frames=2, num_clips=1, num_crops=2)
    with pytest.raises(ValueError, match="model"):
        eval_views(np.zeros((4, 8, 8, 3), np.uint8), model="1d")
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        eval_views(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="no frames"):
        eval_views(np.zeros((0, 8, 8, 3), np.uint8), num_frames=2, num_clips=1)


def test_source_window_crop_matches_resize_then_crop():
    # Smooth frames: cropping the source window and resizing it equals resizing the whole
    # frame to 120x160 and cropping 112x112 (Sec. 5.2) up to the sub-pixel window rounding.
    yy, xx = np.mgrid[0:128, 0:171].astype(np.float32)
    # At most ~7.3 levels per pixel, so a window off by < 0.5 px costs <= ~4 levels.
    frame = np.stack([128 + 100 * np.sin(xx / 25 + yy / 30 + c) for c in range(3)], -1)
    frames = np.clip(frame, 0, 255).astype(np.uint8)[None]
    full = sampling.resize_frames(frames, (120, 160)).numpy().astype(int)
    for offset in [(0, 0), (8, 48), (3, 20)]:
        window = sampling.source_window((128, 171), (120, 160), offset, 112).numpy()
        y, x, h, w = window
        assert (h, w) == (119, 120) and 0 <= y <= 128 - h and 0 <= x <= 171 - w
        cut = sampling.resize_frames(frames[:, y:y + h, x:x + w], (112, 112)).numpy().astype(int)
        expected = full[:, offset[0]:offset[0] + 112, offset[1]:offset[1] + 112]
        error = np.abs(cut - expected).mean()
        assert error < 2.0 and np.abs(cut - expected).max() <= 5
        off = sampling.resize_frames(frames[:, y + 3:y + 3 + h, x:x + w], (112, 112)).numpy()
        assert np.abs(off.astype(int) - expected).mean() > 2 * error  # 3 px off is caught
    assert sampling.source_window((40, 40), (40, 40), (0, 0), 40).numpy().tolist() == [0, 0, 40, 40]


OPS = {
    "clip_indices": lambda n: sampling.clip_indices(n, 5, 2, start=3),
    "random_clip_indices": lambda n: sampling.random_clip_indices(n, 4, 2, seed=(5, 6)),
    "random_tsn_indices": lambda n: sampling.random_tsn_indices(n, 3, seed=(1, 9)),
    "eval_indices_3d": lambda n: sampling.eval_indices(n, num_frames=4, num_clips=3),
    "eval_indices_2d": lambda n: sampling.eval_indices(n, model="2d", num_clips=4),
    "source_window": lambda n: sampling.source_window(tf.stack([n, n + 40]), (120, 160),
                                                      tf.constant([3, 7]), 112),
    "resize_frames": lambda n: sampling.resize_frames(
        tf.cast(tf.reshape(tf.range(2 * 6 * 8 * 3) % 251, [2, 6, 8, 3]) + n, tf.uint8), (3, 4)),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_agree_eagerly_and_inside_dataset_map(name):
    op = OPS[name]
    eager = [op(tf.constant(n)).numpy() for n in (2, 17, 64)]
    mapped = [x.numpy() for x in tf.data.Dataset.from_tensor_slices([2, 17, 64]).map(op)]
    for e, m in zip(eager, mapped, strict=True):
        np.testing.assert_array_equal(e, m)
