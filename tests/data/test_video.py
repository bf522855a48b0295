"""decode_video on real encoded files the test writes itself (PyAV), and its errors."""

import numpy as np
import pytest

from lgd_tf.data import VideoError, decode_video
from lgd_tf.data import video as video_lib
from tests.data import helpers


@pytest.mark.parametrize("ext,codec", [("mp4", "libx264"), ("webm", "libvpx"), ("avi", "mpeg4"),
                                       ("mkv", "libx264")])
def test_decodes_every_frame_of_real_files(tmp_path, ext, codec):
    frames = helpers.indexed_frames(12, 48, 64)
    path = helpers.write_video(tmp_path / f"v.{ext}", frames, codec)
    decoded = decode_video(path)
    assert decoded.shape == (12, 48, 64, 3) and decoded.dtype == np.uint8
    # Lossy codecs on flat frames: each frame keeps its brightness (its index) within a few levels.
    np.testing.assert_allclose(decoded.mean(axis=(1, 2, 3)), frames.mean(axis=(1, 2, 3)), atol=4)
    np.testing.assert_array_equal(helpers.frame_indices(decoded), np.arange(12))


def test_gif(tmp_path):
    frames = helpers.indexed_frames(5, 16, 16)
    path = helpers.write_video(tmp_path / "v.gif", frames, "gif", pix_fmt="rgb8")
    np.testing.assert_array_equal(helpers.frame_indices(decode_video(path)), np.arange(5))


def test_short_side_resize_keeps_aspect_ratio(tmp_path):
    path = helpers.write_video(tmp_path / "v.mp4", helpers.indexed_frames(4, 48, 64), "libx264")
    assert decode_video(path, short_side=24).shape == (4, 24, 32, 3)
    portrait = np.zeros((30, 60, 40, 3), np.uint8)
    assert video_lib.resize_shorter_side(portrait[0], 20).shape == (30, 20, 3)


def test_fps_resampling_and_trimming(tmp_path):
    path = helpers.write_video(tmp_path / "v.mp4", helpers.indexed_frames(20, 32, 32), "libx264",
                               fps=10)
    half = decode_video(path, fps=5)  # every other frame of 2 s at 10 fps
    np.testing.assert_array_equal(helpers.frame_indices(half), np.arange(0, 20, 2))
    trimmed = decode_video(path, start_time=0.5, end_time=1.0)  # frames 5..9
    np.testing.assert_array_equal(helpers.frame_indices(trimmed), np.arange(5, 10))


@pytest.mark.parametrize("content", [b"", b"this is not a video at all" * 10])
def test_bad_files_raise_video_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match="broken.mp4"):
        decode_video(path)
    assert issubclass(VideoError, ValueError)


def test_missing_file_and_trim_past_the_end(tmp_path):
    with pytest.raises(VideoError, match="nothere.mp4"):
        decode_video(tmp_path / "nothere.mp4")
    path = helpers.write_video(tmp_path / "v.mp4", helpers.indexed_frames(4, 16, 16), "libx264")
    with pytest.raises(VideoError, match="v.mp4"):
        decode_video(path, start_time=100.0)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="short_side"):
        decode_video("x.mp4", short_side=0)
