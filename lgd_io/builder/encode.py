"""Encoding one video into one serialized SequenceExample: decode (PyAV), resize, optional
TV-L1 flow (Sec. 5.5), JPEG, protobuf. The work of a build's worker processes, which import
neither TensorFlow nor Keras (a worker starts in about a second, not ten)."""

import json
import os
import resource
import sys

import numpy as np

from lgd_io import flow as flow_lib
from lgd_io import records
from lgd_io import video as video_lib
from lgd_io.builder.shards import DEFAULT_OPTIONS

PROBE_ENV = "LGD_BUILD_PROBE"


def encode_frames(frames, label, *, label_string="", media_id="", frame_rate=0.0,
                  options=DEFAULT_OPTIONS):
    """RGB uint8 (N, H, W, 3) -> serialised SequenceExample (flow computed if options.flow)."""
    if options.short_side is not None:
        frames = [video_lib.resize_shorter_side(f, options.short_side) for f in frames]
    flow_images = None
    if options.flow:
        if len(frames) < 2:
            raise video_lib.VideoError(f"{media_id}: flow needs >= 2 frames, got {len(frames)}")
        flow_images = flow_lib.quantize_flow(flow_lib.tvl1_flow(frames))
    example = records.make_sequence_example(
        frames, label, label_string=label_string, media_id=media_id, frame_rate=frame_rate,
        flow=flow_images, quality=options.quality)
    return records.serialize(example)


def encode_video(entry, options=DEFAULT_OPTIONS):
    """Decodes, resizes and JPEG-encodes one video frame by frame -> serialised record.

    Only the current decoded frame (and the previous one, for flow) is held: the record's
    JPEGs are the only thing that grows with the video's length.
    """
    jpegs, flow_jpegs, previous = [], [], None
    for image in video_lib.iter_frames(entry.path, options.short_side, fps=options.fps,
                                       start_time=entry.start_time, end_time=entry.end_time):
        jpegs.append(records.encode_jpeg(image, options.quality))
        if options.flow:
            if previous is not None:
                pair = flow_lib.tvl1_flow(np.stack([previous, image]))
                flow_jpegs.append(records.encode_jpeg(flow_lib.quantize_flow(pair[0]),
                                                      options.quality))
            previous = image
    if options.flow and not flow_jpegs:
        raise video_lib.VideoError(
            f"{entry.media_id}: flow needs >= 2 frames, got {len(jpegs)}")
    rate = options.fps or video_lib.video_frame_rate(entry.path)
    example = records.make_sequence_example(
        jpegs, entry.label, label_string=entry.label_string, media_id=entry.media_id,
        frame_rate=rate, flow=flow_jpegs if options.flow else None, quality=options.quality)
    return records.serialize(example)


def encode_entry(job):
    """Worker: (shard, entry, options) -> (record or None, error or None)."""
    _, entry, options = job
    try:
        return encode_video(entry, options), None
    except Exception as e:  # noqa: BLE001 - any failure skips this one video, reported
        return None, f"{type(e).__name__}: {e}"
    finally:
        record_probe()


def encode_item(job):
    """Worker for in-memory frames: (shard, (frames, label, name, media_id), options)."""
    _, (frames, label, label_string, media_id), options = job
    try:
        return encode_frames(frames, label, label_string=label_string, media_id=media_id,
                             options=options), None
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"


def record_probe():
    """With $LGD_BUILD_PROBE set to a folder: writes `<pid>.json` there, saying which process
    encoded, whether TensorFlow or Keras were loaded in it, and its peak RSS (kB). Tests and
    benchmarks/builder_throughput.py read these; without the variable it does nothing."""
    folder = os.environ.get(PROBE_ENV)
    if not folder:
        return
    probe = {"pid": os.getpid(), "ppid": os.getppid(),
             "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules,
             "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as f:
        json.dump(probe, f)
