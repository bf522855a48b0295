"""Synthetic videos and records for the data tests (nothing is downloaded or committed)."""

import numpy as np

from lgd_tf.data import video as video_lib
from lgd_tf.data import writer

STEP = 8  # frame i is a flat image of brightness 4 + STEP * i, so its index survives JPEG


def indexed_frames(n, height=24, width=32, channels=3):
    """uint8 (n, H, W, C); every pixel of frame i equals 4 + STEP * i (n <= 31)."""
    values = 4 + STEP * np.arange(n)
    return np.broadcast_to(values[:, None, None, None], (n, height, width, channels)).astype(
        np.uint8).copy()


def frame_indices(clip):
    """Indices carried by the frames of a clip (T, H, W, C) (mean brightness decoded)."""
    means = np.asarray(clip, np.float32).reshape(clip.shape[0], -1).mean(axis=1)
    return np.round((means - 4) / STEP).astype(int)


def write_records(path, videos):
    """videos: list of (frames, label, media_id[, flow]) -> one shard at `path`."""
    records = []
    for video in videos:
        frames, label, media_id = video[:3]
        flow = video[3] if len(video) > 3 else None
        records.append(writer.make_sequence_example(
            frames, label, label_string=f"class{label}", media_id=media_id, frame_rate=25.0,
            flow=flow).SerializeToString())
    writer.write_shard(str(path), records)
    return str(path)


def write_video(path, frames, codec, fps=10, pix_fmt="yuv420p", **kwargs):
    """Encodes RGB frames (N, H, W, 3) into a real video file with PyAV; returns str(path).
    kwargs: those of `lgd_tf.data.video.write_frames` (container_format, gop_size, rotation)."""
    return str(video_lib.write_frames(path, frames, codec=codec, fps=fps, pix_fmt=pix_fmt,
                                      **kwargs))


def read_media_ids(pattern):
    """[(media_id, number of frames, label)] of every record in the shards matching `pattern`,
    in file order (a video written twice appears twice)."""
    import tensorflow as tf

    from lgd_tf.data import schema

    out = []
    for path in sorted(tf.io.gfile.glob(pattern)):
        for record in tf.data.TFRecordDataset(path):
            parsed = schema.parse_record(record)
            out.append((parsed["media_id"].numpy().decode(), int(parsed["frames"].shape[0]),
                        int(parsed["label"])))
    return out
