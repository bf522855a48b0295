"""The streaming decoder (iter_frames / decode_video) on real files the test writes itself
(PyAV): codecs, rotation metadata, size changes, resampling, trimming, memory, errors."""

import av
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


def _corner_frames(n=4, height=16, width=32):
    """Frames with only the top-left quarter bright (an orientation marker)."""
    frames = np.zeros((n, height, width, 3), np.uint8)
    frames[:, : height // 2, : width // 2] = 255
    return frames


# Display-matrix angle (counterclockwise, as PyAV reads it) -> quadrant of the bright corner
# once shown upright. A phone's `rotate=90` tag is the matrix angle -90: turn clockwise.
@pytest.mark.parametrize("rotation,bright", [(-90, (0, 1)), (90, (1, 0)), (180, (1, 1))])
def test_rotation_metadata_is_applied(tmp_path, rotation, bright):
    frames = _corner_frames()
    plain = decode_video(helpers.write_video(tmp_path / "plain.mp4", frames, "libx264"))
    rotated = decode_video(helpers.write_video(tmp_path / "rotated.mp4", frames, "libx264",
                                               rotation=rotation))
    assert plain.shape == (4, 16, 32, 3)
    assert rotated.shape == ((4, 16, 32, 3) if rotation == 180 else (4, 32, 16, 3))
    np.testing.assert_array_equal(rotated, np.rot90(plain, rotation // 90, axes=(1, 2)))
    height, width = rotated.shape[1:3]
    quadrants = rotated[0, ..., 0].reshape(2, height // 2, 2, width // 2).mean(axis=(1, 3))
    assert np.unravel_index(np.argmax(quadrants), (2, 2)) == bright
    assert quadrants.max() > 200 and np.sort(quadrants.ravel())[-2] < 50
    # The shorter side is taken after rotation: portrait stays portrait.
    assert video_lib.decode_video(tmp_path / "rotated.mp4", short_side=8).shape[1:3] == (
        (8, 16) if rotation == 180 else (16, 8))


def test_size_change_mid_stream_is_resized_not_dropped(tmp_path):
    # Two MPEG-TS streams of different sizes, byte-concatenated (FFmpeg's concat protocol).
    first = helpers.write_video(tmp_path / "a.ts", helpers.indexed_frames(5, 32, 48), "libx264",
                                container_format="mpegts")
    second = helpers.write_video(tmp_path / "b.ts", helpers.indexed_frames(10, 64, 64)[5:],
                                 "libx264", container_format="mpegts")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(open(first, "rb").read() + open(second, "rb").read())
    with av.open(str(joined)) as container:
        sizes = {(f.height, f.width) for f in container.decode(video=0)}
    assert sizes == {(32, 48), (64, 64)}  # the file really changes size
    decoded = decode_video(joined)
    assert decoded.shape == (10, 32, 48, 3)
    np.testing.assert_array_equal(helpers.frame_indices(decoded), np.arange(10))
    assert decode_video(joined, short_side=16).shape == (10, 16, 24, 3)


def test_iter_frames_streams_and_matches_decode_video(tmp_path):
    path = helpers.write_video(tmp_path / "v.mp4", helpers.indexed_frames(20, 32, 32), "libx264",
                               fps=10)
    frames = video_lib.iter_frames(path, 16)
    first = next(frames)  # a generator: one frame at a time
    assert first.shape == (16, 16, 3)
    rest = list(frames)
    np.testing.assert_array_equal(np.stack([first] + rest), decode_video(path, 16))
    # Up-sampling 10 -> 20 fps: ticks k / 20 s for k <= 38, each the frame at or before it.
    double = decode_video(path, fps=20)
    np.testing.assert_array_equal(helpers.frame_indices(double),
                                  [k // 2 for k in range(39)])


def test_trim_after_a_seek_to_the_keyframe_before(tmp_path):
    # Keyframes every 5 frames: the decoder seeks to t = 2.0 s and drops frames before 2.35 s.
    path = helpers.write_video(tmp_path / "v.mp4", helpers.indexed_frames(30, 32, 32), "mpeg4",
                               gop_size=5)
    trimmed = decode_video(path, start_time=2.35, end_time=2.75)  # frames at 2.4, 2.5, 2.6, 2.7
    np.testing.assert_array_equal(helpers.frame_indices(trimmed), [24, 25, 26, 27])
    np.testing.assert_array_equal(helpers.frame_indices(decode_video(path, start_time=0.05)),
                                  np.arange(1, 30))


def _status_kb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def _encode_peak_growth_kb(path):
    """In a fresh (forked) process: peak RSS during `encode_video` minus RSS before it."""
    from lgd_tf.data import builder

    before = _status_kb("VmRSS")
    builder.encode_video(builder.VideoEntry(path, 0, "c", "v"),
                         builder.EncodeOptions(short_side=32))
    return _status_kb("VmHWM") - before


def test_peak_memory_of_encoding_does_not_grow_with_length(tmp_path):
    """The builder's worker work on 40 frames of 480x640 peaks like on 10, within 6 MB (a
    decoded frame is 0.9 MB): holding the decoded frames would add 30 of them (28 MB)."""
    import concurrent.futures
    import multiprocessing

    growth = {}
    for n in (10, 40):
        path = helpers.write_video(tmp_path / f"v{n}.avi",
                                   np.repeat(_corner_frames(1, 480, 640), n, 0), "mpeg4")
        with concurrent.futures.ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("fork")) as pool:
            growth[n] = pool.submit(_encode_peak_growth_kb, path).result()
    assert growth[40] - growth[10] < 6 * 1024, growth
