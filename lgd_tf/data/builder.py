"""Builds sharded TFRecords of SequenceExamples from videos (or from frames already in memory).

Parallel over videos (multiprocessing), a progress line, and a summary at the end. A video
that cannot be decoded is skipped and reported, never fatal. Each shard is written to a
temporary name and renamed, so a shard on disk is always whole; a rerun skips the shards
that already exist (resume).
"""

import collections
import csv
import dataclasses
import multiprocessing
import os
import pathlib
import time

from absl import logging

from lgd_tf.data import flow as flow_lib
from lgd_tf.data import video as video_lib
from lgd_tf.data import writer

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".gif", ".mov", ".m4v", ".mpg", ".mpeg")


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One labelled video: where it is, its class, and optional trimming in seconds."""

    path: str
    label: int
    label_string: str = ""
    media_id: str = ""
    start_time: float | None = None
    end_time: float | None = None


@dataclasses.dataclass
class BuildSummary:
    """What a build did: records written, videos skipped (with why), shards written / kept."""

    written: int = 0
    skipped: list = dataclasses.field(default_factory=list)  # (path, reason)
    shards_written: list = dataclasses.field(default_factory=list)
    shards_kept: list = dataclasses.field(default_factory=list)  # already on disk (resume)

    def __str__(self):
        lines = [f"written {self.written} videos into {len(self.shards_written)} shards, "
                 f"kept {len(self.shards_kept)} finished shards, "
                 f"skipped {len(self.skipped)} videos"]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
    """How frames become a record: shorter side, frame rate, flow, JPEG quality."""

    short_side: int | None = 128
    fps: float | None = None
    flow: bool = False
    quality: int = writer.JPEG_QUALITY


def encode_frames(frames, label, *, label_string="", media_id="", frame_rate=0.0,
                  options=EncodeOptions()):
    """RGB uint8 (N, H, W, 3) -> serialised SequenceExample (flow computed if options.flow)."""
    if options.short_side is not None:
        frames = [video_lib.resize_shorter_side(f, options.short_side) for f in frames]
    flow_images = None
    if options.flow:
        if len(frames) < 2:
            raise video_lib.VideoError(f"{media_id}: flow needs >= 2 frames, got {len(frames)}")
        flow_images = flow_lib.quantize_flow(flow_lib.tvl1_flow(frames))
    example = writer.make_sequence_example(
        frames, label, label_string=label_string, media_id=media_id, frame_rate=frame_rate,
        flow=flow_images, quality=options.quality)
    return example.SerializeToString()


def _encode_entry(job):
    """Worker: (shard, entry, options) -> (shard, entry, record or None, error or None)."""
    shard, entry, options = job
    try:
        import cv2

        cv2.setNumThreads(1)
        frames = video_lib.decode_video(entry.path, fps=options.fps,
                                        start_time=entry.start_time, end_time=entry.end_time)
        rate = options.fps or video_lib.video_frame_rate(entry.path)
        record = encode_frames(frames, entry.label, label_string=entry.label_string,
                               media_id=entry.media_id, frame_rate=rate, options=options)
        return shard, entry, record, None
    except Exception as e:  # noqa: BLE001 - any failure skips this one video, reported below
        return shard, entry, None, f"{type(e).__name__}: {e}"


def _encode_item(job):
    """Worker for in-memory frames: (shard, (frames, label, name, media_id), options)."""
    shard, (frames, label, label_string, media_id), options = job
    try:
        record = encode_frames(frames, label, label_string=label_string, media_id=media_id,
                               options=options)
        return shard, media_id, record, None
    except Exception as e:  # noqa: BLE001
        return shard, media_id, None, f"{type(e).__name__}: {e}"


def _write_shards(jobs, worker, output_dir, prefix, num_shards, num_workers, summary):
    """Runs `worker` over jobs (sorted by shard) and writes each shard once its jobs are done."""
    pending = collections.defaultdict(list)
    remaining = collections.Counter(job[0] for job in jobs)
    total, done, start = len(jobs), 0, time.time()
    report_every = max(1, total // 20)

    def results():
        if num_workers <= 1:
            yield from map(worker, jobs)
            return
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(num_workers) as pool:
            yield from pool.imap(worker, jobs, chunksize=1)

    for shard, item, record, error in results():
        done += 1
        if error is None:
            pending[shard].append(record)
            summary.written += 1
        else:
            name = getattr(item, "path", item)
            summary.skipped.append((name, error))
            logging.warning("Skipping %s: %s", name, error)
        remaining[shard] -= 1
        if remaining[shard] == 0:
            path = writer.shard_path(output_dir, prefix, shard, num_shards)
            writer.write_shard(path, pending.pop(shard, []))  # all its videos may be skipped
            summary.shards_written.append(path)
        if done % report_every == 0 or done == total:
            rate = done / max(time.time() - start, 1e-9)
            logging.info("[%-20s] %d/%d videos, %.1f videos/s", "#" * (20 * done // total),
                         done, total, rate)


def _plan(items, output_dir, prefix, num_shards, summary):
    """Assigns item i to shard i % num_shards; drops items whose shard is already on disk."""
    if num_shards < 1:
        raise ValueError(f"`num_shards` must be >= 1. Received: num_shards={num_shards}")
    os.makedirs(output_dir, exist_ok=True)
    done = {s for s in range(num_shards)
            if os.path.exists(writer.shard_path(output_dir, prefix, s, num_shards))}
    summary.shards_kept = [writer.shard_path(output_dir, prefix, s, num_shards)
                           for s in sorted(done)]
    jobs = [(i % num_shards, item) for i, item in enumerate(items) if i % num_shards not in done]
    jobs.sort(key=lambda job: job[0])
    return jobs


def build_from_videos(entries, output_dir, *, prefix="train", num_shards=8, num_workers=None,
                      options=EncodeOptions()):
    """Decodes each `VideoEntry` with PyAV and writes `{prefix}-SSSSS-of-NNNNN.tfrecord` shards.

    Returns:
        BuildSummary (also logged).
    """
    summary = BuildSummary()
    jobs = _plan(list(entries), output_dir, prefix, num_shards, summary)
    workers = num_workers or os.cpu_count() or 1
    _write_shards([(s, e, options) for s, e in jobs], _encode_entry, output_dir, prefix,
                  num_shards, min(workers, max(1, len(jobs))), summary)
    logging.info("Build summary: %s", summary)
    return summary


def build_from_frames(items, output_dir, *, prefix="train", num_shards=4, num_workers=1,
                      options=EncodeOptions(short_side=None)):
    """Writes in-memory videos `(frames, label, label_string, media_id)` the same way."""
    summary = BuildSummary()
    jobs = _plan(list(items), output_dir, prefix, num_shards, summary)
    _write_shards([(s, it, options) for s, it in jobs], _encode_item, output_dir, prefix,
                  num_shards, num_workers, summary)
    return summary


def read_labels_csv(csv_path, videos_dir, *, split=None, class_names=None):
    """Reads a labels CSV into `VideoEntry`s and the class names (index order).

    Two forms: Kinetics `label,youtube_id,time_start,time_end,split` (files found under
    `videos_dir` by youtube id; a file named exactly `<youtube_id>.<ext>` is an untrimmed
    video and is trimmed to [time_start, time_end], one named `<youtube_id>_...` is taken as
    already trimmed), and `path,label` (path relative to `videos_dir`; header optional).
    Class indices follow `class_names` if given, else sorted names (or the integers
    themselves when every label is an integer).

    Returns:
        (entries, class_names, missing) where missing lists (name, reason) of rows whose file
        was not found.
    """
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"Labels CSV is empty. Received: {csv_path}")
    header = [c.strip() for c in rows[0]]
    kinetics = header[:2] == ["label", "youtube_id"]
    if kinetics or header[:2] == ["path", "label"]:
        rows = rows[1:]
    videos_dir = pathlib.Path(videos_dir)
    parsed, missing = [], []
    if kinetics:
        index = {}
        for p in sorted(videos_dir.rglob("*")):
            if p.suffix.lower() in VIDEO_EXTENSIONS:
                index.setdefault(p.stem, p)
                index.setdefault(p.stem[:11], p)
        for row in rows:
            label, yid, t0, t1 = (c.strip() for c in row[:4])
            row_split = row[4].strip() if len(row) > 4 else ""
            if split is not None and row_split != split:
                continue
            path = index.get(yid)
            if path is None:
                missing.append((yid, "no video file found"))
                continue
            untrimmed = path.stem == yid
            parsed.append((str(path), label, yid,
                           float(t0) if untrimmed and t0 else None,
                           float(t1) if untrimmed and t1 else None))
    else:
        for row in rows:
            if len(row) < 2:
                raise ValueError(f"Expected `path,label` rows in {csv_path}. Received: {row}")
            path = videos_dir / row[0].strip()
            if not path.exists():
                missing.append((str(path), "no such file"))
                continue
            parsed.append((str(path), row[1].strip(), path.stem, None, None))
    labels = sorted({p[1] for p in parsed})
    if class_names is None:
        if labels and all(x.isdigit() for x in labels):
            class_names = [str(i) for i in range(max(int(x) for x in labels) + 1)]
        else:
            class_names = labels
    lookup = {name: i for i, name in enumerate(class_names)}
    unknown = [x for x in labels if x not in lookup]
    if unknown:
        raise ValueError(f"Labels not in class_names: {unknown[:5]}. Received CSV: {csv_path}")
    entries = [VideoEntry(path, lookup[lab], lab, mid, t0, t1)
               for path, lab, mid, t0, t1 in parsed]
    return entries, list(class_names), missing
