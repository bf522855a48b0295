"""Video decoding with PyAV: one streaming decoder (`iter_frames`) for the builder and predict.

Frames are rotated (display matrix), resized and trimmed as they are decoded, so a caller
that encodes each frame at once holds one decoded frame at a time, whatever the video's
length. `decode_video` is the list form. `write_frames` encodes frames to a file (synthetic
videos for tests, benchmarks and examples).
"""

import itertools

import av
import cv2
import numpy as np


class VideoError(ValueError):
    """A video file is unreadable, empty or not a video; the message names the file."""


def resize_shorter_side(frame, short_side):
    """Resizes an (H, W, C) uint8 frame so min(H, W) == short_side, keeping the aspect ratio."""
    height, width = frame.shape[:2]
    if min(height, width) == short_side:
        return frame
    scale = short_side / min(height, width)
    new_h = short_side if height <= width else int(round(height * scale))
    new_w = short_side if width < height else int(round(width * scale))
    return _resize(frame, new_h, new_w)


def _resize(frame, height, width):
    shrink = height * width < frame.shape[0] * frame.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(frame, (width, height), interpolation=interpolation)


def rotate_frame(image, degrees):
    """Applies a display-matrix rotation (counterclockwise degrees, PyAV's `frame.rotation`).

    The stored picture of a phone video is turned by `degrees`; showing it upright means
    turning it by the same angle counterclockwise (FFmpeg's autorotate does the same).
    """
    quarter_turns = int(round(degrees / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


def _check_arguments(short_side, fps, start_time, end_time):
    if short_side is not None and short_side <= 0:
        raise ValueError(f"`short_side` must be positive. Received: short_side={short_side}")
    if fps is not None and fps <= 0:
        raise ValueError(f"`fps` must be positive. Received: fps={fps}")
    if start_time is not None and end_time is not None and end_time <= start_time:
        raise ValueError("`end_time` must be after `start_time`. Received: "
                         f"start_time={start_time}, end_time={end_time}")


def _decoded(path, start_time, end_time):
    """(time, upright RGB uint8 frame) of each decoded frame inside [start_time, end_time)."""
    yielded = False
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"No video stream in {path}")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = container.decode(stream)
            if start_time:
                frames = _from_keyframe_before(container, stream, start_time)
            for index, frame in enumerate(frames):
                t = float(frame.time) if frame.time is not None else float(index)
                if start_time is not None and t < start_time:
                    continue
                if end_time is not None and t >= end_time:
                    break
                image = rotate_frame(frame.to_ndarray(format="rgb24"), frame.rotation)
                yielded = True
                yield t, image
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as e:
        if not yielded:
            raise VideoError(f"Cannot decode video {path}: {e}") from e
        # A truncated tail: the frames decoded before the damage stand.
    if not yielded:
        raise VideoError(f"No decodable frame in video {path}")


def _from_keyframe_before(container, stream, start_time):
    """Decoded frames from the keyframe before `start_time` (a trimmed segment of a long
    untrimmed video costs its own length, not the video's); from the start of the file when
    the container cannot seek there."""
    try:
        container.seek(int(start_time / stream.time_base), stream=stream, backward=True)
        frames = container.decode(stream)
        first = next(frames, None)
        if first is not None and first.time is not None and first.time <= start_time:
            yield first
            yield from frames
            return
    except (av.error.FFmpegError, OverflowError, ZeroDivisionError, TypeError):
        pass
    container.seek(0)
    yield from container.decode(stream)


def iter_frames(path, short_side=None, *, fps=None, start_time=None, end_time=None):
    """Yields the frames of a video file one at a time, RGB uint8 `(H, W, 3)`, upright.

    Every frame has the size of the first one: the first frame is resized to `short_side`
    (if given), and a frame whose size changes mid-stream is resized to that size (a stream
    may change resolution; the video is not dropped for it). Peak memory does not depend on
    the video's length.

    Args:
        path: any container PyAV (FFmpeg) reads: mp4, webm, avi, mkv, gif, ...
        short_side: if set, frames are resized so the shorter side has this size.
        fps: if set, frames are resampled to this rate: for each tick of an `fps` clock
            started at the first frame, the latest frame at or before it.
        start_time, end_time: optional trimming in seconds (Kinetics `time_start/time_end`).

    Raises:
        VideoError: the file cannot be opened, has no video stream or no decodable frame.
    """
    _check_arguments(short_side, fps, start_time, end_time)
    size = None  # (H, W) of every yielded frame

    def sized(image):
        nonlocal size
        if size is None:
            if short_side is not None:
                image = resize_shorter_side(image, short_side)
            size = image.shape[:2]
        elif image.shape[:2] != size:
            image = _resize(image, *size)
        return image

    if fps is None:
        for _, image in _decoded(path, start_time, end_time):
            yield sized(image)
        return
    first, previous, tick = None, None, 0
    for t, image in _decoded(path, start_time, end_time):
        first = t if first is None else first
        # Ticks before this frame's time take the previous frame (nearest earlier frame).
        while previous is not None and first + tick / fps + 1e-6 < t:
            yield previous
            tick += 1
        previous = sized(image)
        last = t
    # Ticks up to the last frame's time take the last frame.
    while first + tick / fps <= last + 1e-6:
        yield previous
        tick += 1


def decode_video(path, short_side=None, *, fps=None, start_time=None, end_time=None):
    """Decodes a whole video into RGB uint8 `(N, H, W, 3)`: `np.stack(list(iter_frames(...)))`.

    Arguments and errors as `iter_frames`.
    """
    return np.stack(list(iter_frames(path, short_side, fps=fps, start_time=start_time,
                                     end_time=end_time)))


def video_frame_rate(path):
    """Average frame rate of the first video stream (0.0 if unknown)."""
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else 0.0
    except (av.error.FFmpegError, OSError, IndexError):
        return 0.0


def write_frames(path, frames, *, codec="mpeg4", fps=25, pix_fmt="yuv420p",
                 container_format=None, options=None, gop_size=None, rotation=None):
    """Encodes RGB uint8 frames into a video file with PyAV; returns `path` as given.

    Args:
        path: the file; its suffix picks the container unless `container_format` is given.
        frames: an `(N, H, W, 3)` array, or an iterable of `(H, W, 3)` frames (a generator is
            encoded as it yields, one frame held at a time).
        codec, fps, pix_fmt: the stream's codec, frame rate and pixel format.
        container_format: an FFmpeg format name ("mpegts", ...) instead of the suffix's.
        options: the codec's options, e.g. `{"preset": "ultrafast"}`.
        gop_size: frames from one keyframe to the next.
        rotation: a display-matrix angle written as metadata (counterclockwise degrees, as
            `frame.rotation` reads it back).
    """
    if hasattr(frames, "shape"):
        height, width = frames.shape[1:3]
    else:
        frames = iter(frames)
        first = next(frames)
        height, width = first.shape[:2]
        frames = itertools.chain([first], frames)
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = height, width
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = dict(options)
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
