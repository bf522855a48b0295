"""Video decoding with PyAV, and the shorter-side resize used by builders and `predict`."""

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
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(frame, (new_w, new_h), interpolation=interpolation)


def decode_video(path, short_side=None, *, fps=None, start_time=None, end_time=None):
    """Decodes every frame of a video file into RGB uint8 `(N, H, W, 3)`.

    Args:
        path: any container PyAV (FFmpeg) reads: mp4, webm, avi, mkv, gif, ...
        short_side: if set, frames are resized so the shorter side has this size.
        fps: if set, frames are resampled to this rate (nearest earlier frame).
        start_time, end_time: optional trimming in seconds (Kinetics `time_start/time_end`).

    Raises:
        VideoError: the file cannot be opened, has no video stream or no decodable frame.
    """
    if short_side is not None and short_side <= 0:
        raise ValueError(f"`short_side` must be positive. Received: short_side={short_side}")
    if fps is not None and fps <= 0:
        raise ValueError(f"`fps` must be positive. Received: fps={fps}")
    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"No video stream in {path}")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else float(index)
                if start_time is not None and t < start_time:
                    continue
                if end_time is not None and t >= end_time:
                    break
                image = frame.to_ndarray(format="rgb24")
                if short_side is not None:
                    image = resize_shorter_side(image, short_side)
                frames.append(image)
                times.append(t)
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as e:
        if not frames:
            raise VideoError(f"Cannot decode video {path}: {e}") from e
        # A truncated tail: keep the frames decoded before the damage.
    if not frames:
        raise VideoError(f"No decodable frame in video {path}")
    if fps is not None:
        frames = _resample(frames, np.asarray(times), fps)
    return np.stack(frames)


def _resample(frames, times, fps):
    """For each tick of a `fps` clock from the first frame, the latest frame at or before it."""
    start, end = times[0], times[-1]
    ticks = start + np.arange(int(np.floor((end - start) * fps + 1e-6)) + 1) / fps
    picks = np.searchsorted(times, ticks + 1e-6, side="right") - 1
    return [frames[i] for i in np.clip(picks, 0, len(frames) - 1)]


def video_frame_rate(path):
    """Average frame rate of the first video stream (0.0 if unknown)."""
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else 0.0
    except (av.error.FFmpegError, OSError, IndexError):
        return 0.0
