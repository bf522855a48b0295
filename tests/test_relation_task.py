"""The relation task's clips hold what its design says, and no single object gives the label."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import relation_task as rt  # noqa: E402


def _object_boxes(frame, origin):
    """Bounding box (y0, x0, y1, x1) of the bright object inside the region at `origin`."""
    y, x = origin
    patch = frame[y:y + rt.REGION, x:x + rt.REGION].mean(axis=-1)
    ys, xs = np.nonzero(patch > 100)  # background ~25 +- 13, objects >= 0.61 * 255
    return y + ys.min(), x + xs.min(), y + ys.max() + 1, x + xs.max() + 1


def _measured_direction(frames, origin):
    """The direction read off the pixels: object position in the first and the last frame."""
    y0, x0, _, _ = _object_boxes(frames[0], origin)
    y1, x1, _, _ = _object_boxes(frames[-1], origin)
    step = (np.sign(y1 - y0), np.sign(x1 - x0))
    (name,) = [n for n, s in rt.DIRECTION_STEPS.items() if s == step]
    return name, (y0, x0), (y1 - y0, x1 - x0)


def test_clips_by_hand():
    clips = rt.generate(12, seed=3)
    assert [c.label for c in clips].count(0) == 6  # balanced
    names = rt.class_names()
    assert names == ["same", "opposite"]
    origins = rt.region_origins()
    assert origins == ((0, 0), (rt.FRAME_SIZE - rt.REGION,) * 2)
    for clip in clips:
        assert clip.frames.shape == (rt.NUM_FRAMES, rt.FRAME_SIZE, rt.FRAME_SIZE, 3)
        assert clip.frames.dtype == np.uint8
        measured = []
        for origin, name, start in zip(origins, clip.directions, clip.starts, strict=True):
            direction, first, shift = _measured_direction(clip.frames, origin)
            measured.append(direction)
            assert direction == name
            assert first == start
            step = rt.DIRECTION_STEPS[name]
            assert shift == tuple(s * rt.SPEED * (rt.NUM_FRAMES - 1) for s in step)
            for frame in clip.frames:  # whole object, inside its corner region, every frame
                y0, x0, y1, x1 = _object_boxes(frame, origin)
                assert (y1 - y0, x1 - x0) == (rt.OBJECT_SIZE, rt.OBJECT_SIZE)
                assert origin[0] <= y0 and y1 <= origin[0] + rt.REGION
                assert origin[1] <= x0 and x1 <= origin[1] + rt.REGION
        # Nothing bright outside the two regions.
        outside = clip.frames.mean(axis=-1).copy()
        for y, x in origins:
            outside[:, y:y + rt.REGION, x:x + rt.REGION] = 0
        assert outside.max() < 100
        expected = "same" if measured[0] == measured[1] else "opposite"
        assert names[clip.label] == expected


def test_four_directions_label_is_the_rotation():
    directions = ("right", "down", "left", "up")
    assert rt.class_names(directions) == ["same", "rot90", "opposite", "rot270"]
    rng = np.random.default_rng(0)
    for label in range(4):
        clip = rt.sample_clip(rng, directions=directions, label=label)
        a, b = (directions.index(d) for d in clip.directions)
        assert (b - a) % 4 == label
        for origin, name in zip(rt.region_origins(), clip.directions, strict=True):
            assert _measured_direction(clip.frames, origin)[0] == name


def test_no_single_object_predicts_the_label():
    """Per-object direction (read from the pixels) alone: chance; the pair: every label."""
    from sklearn.linear_model import LogisticRegression

    clips = rt.generate(400, seed=7)
    labels = np.array([c.label for c in clips])
    origins = rt.region_origins()
    dirs = np.array([[rt.DEFAULT_DIRECTIONS.index(_measured_direction(c.frames, o)[0])
                      for o in origins] for c in clips])
    starts = np.array([np.concatenate(c.starts) for c in clips])
    for k in range(2):
        # The best rule from one object's direction (majority label per direction value) is
        # at chance: the label is balanced within each value.
        best = sum(max(np.sum(labels[dirs[:, k] == v] == y) for y in (0, 1)) for v in (0, 1))
        assert best / len(labels) < 0.56
        # Nor does anything else about one object (its direction and start position).
        own = np.column_stack([np.eye(2)[dirs[:, k]], starts[:, 2 * k:2 * k + 2] / rt.REGION])
        fit = LogisticRegression().fit(own[:200], labels[:200])
        assert fit.score(own[200:], labels[200:]) < 0.62
    # An additive model of both objects (what GAP + linear can express when no unit sees
    # both) stays at chance; with the pair's interaction term it is exact.
    additive = np.column_stack([np.eye(2)[dirs[:, 0]], np.eye(2)[dirs[:, 1]]])
    assert LogisticRegression().fit(additive[:200], labels[:200]).score(
        additive[200:], labels[200:]) < 0.62
    pair = np.column_stack([additive, np.eye(4)[2 * dirs[:, 0] + dirs[:, 1]]])
    assert LogisticRegression(C=100.0).fit(pair[:200], labels[:200]).score(
        pair[200:], labels[200:]) == 1.0
    assert np.array_equal(labels, (dirs[:, 1] - dirs[:, 0]) % 2)


def test_no_unit_of_the_small_backbone_sees_both_corners():
    """Receptive field of one x_L unit of lgd3d(stage_blocks=(1, 1, 1, 1)), by gradients."""
    tf = pytest.importorskip("tensorflow")
    import lgd_tf

    backbone = lgd_tf.models.lgd3d(num_classes=2, head=None, use_lgd=False,
                                   stage_blocks=(1, 1, 1, 1), base_filters=8,
                                   num_frames=rt.NUM_FRAMES)
    size = rt.FRAME_SIZE + 64
    clip = tf.Variable(tf.random.uniform((1, rt.NUM_FRAMES, size, size, 3), 0, 255, seed=1))
    with tf.GradientTape() as tape:
        local = backbone(clip, training=False)["local"]
        centre = local.shape[2] // 2
        target = tf.reduce_sum(local[0, :, centre, centre, :])
    grad = tf.reduce_sum(tf.abs(tape.gradient(target, clip)), axis=(0, 1, 4)).numpy()
    extent = [np.ptp(np.flatnonzero(grad.sum(axis=a) > 0)) + 1 for a in (1, 0)]
    assert extent == [67, 67]  # 7 + 2 * (2 + 4 + 8 + 16)
    (_, _), (far_y, far_x) = rt.region_origins()
    # Touching a pixel of each region needs (far corner start) - (near region end) + 2 pixels.
    needed = far_y - rt.REGION + 2
    assert needed == rt.FRAME_SIZE - 2 * rt.REGION + 2 == 70
    assert max(extent) < needed and far_x == far_y


def test_sample_batch_labels_match_the_drawn_directions():
    rng = np.random.default_rng(5)
    frames, labels = rt.sample_batch(rng, 16)
    again, pair = rt.sample_batch(np.random.default_rng(5), 16, pretext=True)
    np.testing.assert_array_equal(frames, again)  # the same stream: the same clips
    assert frames.shape == (16, rt.NUM_FRAMES, rt.FRAME_SIZE, rt.FRAME_SIZE, 3)
    origins = rt.region_origins()
    for clip, relation, joint in zip(frames, labels, pair, strict=True):
        a, b = (_measured_direction(clip, o)[0] for o in origins)
        index = {"left": 0, "right": 1}
        assert joint == 2 * index[a] + index[b]
        assert relation == (0 if a == b else 1)
