"""Streaming decode in predict (`lgd_tf.inference.predict.video_views`): the same views and
scores as the whole-video path, memory that does not grow with the video's length."""

import tracemalloc

import numpy as np
import pytest

import lgd_tf.data
from lgd_tf.data import video as video_lib
from lgd_tf.inference import predict as predict_lib
from tests.export.conftest import SHORT_SIDE, bright_or_dark_clips, write_video


@pytest.fixture(scope="module")
def streaming_videos(tmp_path_factory):
    """Videos of 3 (shorter than a clip), 13 and 37 frames, mp4 and webm (no frame count in
    the header), bright, dark and both."""
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("streaming")
    paths = []
    for name, labels, size, codec, suffix in (
            ("short", [1], (40, 56), "mpeg4", "mp4"),
            ("mixed", [0, 1, 0, 1], (36, 48), "mpeg4", "mp4"),
            ("long", [1] * 5 + [0] * 5, (40, 56), "libvpx", "webm")):
        frames = bright_or_dark_clips(rng, labels, size=size).reshape(-1, *size, 3)
        frames = frames[:{"short": 3, "mixed": 13, "long": 37}[name]]
        paths.append(write_video(folder / f"{name}.{suffix}", frames, codec=codec))
    return paths


def _whole_video(clf, video):
    frames = predict_lib.video_frames(video, clf.input_channels, clf.sampling.short_side)
    return frames, clf.video_probabilities(frames)


def test_streaming_scores_equal_the_whole_video_path(exported, trained_model_dir,
                                                     streaming_videos):
    export_dir, _ = exported
    models = {
        "savedmodel": predict_lib.as_classifier(export_dir),
        ".keras, 3 clips x 3 crops": predict_lib.as_classifier(
            trained_model_dir / "stage2.keras", num_clips=3, num_crops=3,
            short_side=SHORT_SIDE),
    }
    for name, clf in models.items():
        for video in streaming_videos:
            frames, expected = _whole_video(clf, video)
            views = predict_lib.video_views(video, clf.sampling)
            np.testing.assert_array_equal(
                views, lgd_tf.data.eval_views(frames, **clf.sampling.as_kwargs()).numpy())
            got = predict_lib.predict_video(clf, video).probabilities
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=name)


def test_a_wrong_container_frame_count_is_corrected(exported, streaming_videos, monkeypatch):
    clf = predict_lib.as_classifier(exported[0])
    video = streaming_videos[1]
    assert predict_lib.count_frames(video) == 13
    frames, expected = _whole_video(clf, video)
    for wrong in (5, 40, None):
        monkeypatch.setattr(predict_lib, "count_frames", lambda path, n=wrong: n)
        views = predict_lib.video_views(video, clf.sampling)
        np.testing.assert_array_equal(
            views, lgd_tf.data.eval_views(frames, **clf.sampling.as_kwargs()).numpy())
        np.testing.assert_allclose(predict_lib.predict_video(clf, video).probabilities,
                                   expected, rtol=0, atol=1e-6)


def test_streaming_decode_applies_the_rotation(exported, streaming_videos, monkeypatch):
    """A quarter turn in the display matrix reaches the views (predict decodes through
    `iter_frames`): PyAV cannot write the matrix, so every frame is declared rotated."""
    clf = predict_lib.as_classifier(exported[0])
    video = streaming_videos[1]  # 36x48 frames
    upright = predict_lib.video_views(video, clf.sampling)
    rotate = video_lib.rotate_frame
    monkeypatch.setattr(video_lib, "rotate_frame", lambda image, degrees: rotate(image, 90))
    rotated = predict_lib.video_views(video, clf.sampling)
    assert upright.shape[2:4] == (SHORT_SIDE, 43) and rotated.shape[2:4] == (43, SHORT_SIDE)
    frames, expected = _whole_video(clf, video)
    assert frames.shape[1:3] == (43, SHORT_SIDE)
    np.testing.assert_allclose(predict_lib.predict_video(clf, video).probabilities, expected,
                               rtol=0, atol=1e-6)


def _peak_decode_bytes(video, sampling):
    tracemalloc.start()
    try:
        views = predict_lib.video_views(video, sampling)
        return tracemalloc.get_traced_memory()[1], views
    finally:
        tracemalloc.stop()


def test_streaming_memory_does_not_grow_with_the_video_length(tmp_path):
    """Peak memory (numpy and Python, tracemalloc) of building the views of a 300- and a
    3000-frame 64x48 video: the whole-video path holds every frame (3000 x 9 KB = 27 MB at
    short side 48), the stream only the frames of the 15 clips."""
    from lgd_tf.serving import module

    frames = np.random.default_rng(0).integers(0, 256, (48, 64 + 32, 3), np.uint8)
    paths = {}
    for n in (300, 3000):
        clip = np.stack([np.roll(frames, i, axis=1)[:, :64] for i in range(30)])
        paths[n] = tmp_path / f"{n}.mp4"
        with_repeats = np.concatenate([clip] * (n // 30))
        write_video(paths[n], with_repeats, fps=30)
    sampling = module.Sampling(num_frames=8, num_clips=15, short_side=48)
    peak_short, views_short = _peak_decode_bytes(paths[300], sampling)
    peak_long, views_long = _peak_decode_bytes(paths[3000], sampling)
    assert views_short.shape == views_long.shape == (15, 8, 48, 64, 3)
    frame_bytes = 48 * 64 * 3
    # The 120 kept frames and the views' copy of them (2 x 1.1 MB), a few decoded frames.
    assert peak_long < 300 * frame_bytes, peak_long
    assert peak_long - peak_short < 20 * frame_bytes, (peak_short, peak_long)
    # tracemalloc sees decoded frames: the whole-video path on the short video holds 300.
    tracemalloc.start()
    try:
        predict_lib.video_frames(paths[300], 3, 48)
        whole_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert whole_peak > 300 * frame_bytes, whole_peak
