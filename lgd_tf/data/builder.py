"""Builds sharded TFRecords of SequenceExamples from videos (or from frames already in memory).

Sharding is deterministic: a video goes to shard `sha256(media_id) mod num_shards`, whatever
else is in the input. Beside the shards, `{prefix}.manifest/` holds one JSON file per
finished shard (its videos: media id, source file, size, mtime, trimming, label; the number
of shards and the encode options). A rerun compares the planned video set of each shard with
its manifest: unchanged finished shards are kept, the others rebuilt (the summary says why),
so the output always holds exactly the input set, each video once. Each shard is written to a
hidden temporary file (`.{prefix}-00003-of-00008.tfrecord.tmp-XXXX`, never matched by
`{prefix}-*`) and renamed; its manifest is written after the rename.

Videos are decoded, resized and JPEG-encoded frame by frame (`video.iter_frames`) in a
`concurrent.futures.ProcessPoolExecutor`. A worker that dies (e.g. SIGKILLed by the OOM
killer) breaks the pool: the videos it held are retried once each in a fresh pool, then
reported as skipped; the build goes on. A video that cannot be decoded is skipped and
reported, never fatal.
"""

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import pathlib
import re
import time
import typing

import numpy as np
from absl import logging

from lgd_tf.data import flow as flow_lib
from lgd_tf.data import video as video_lib
from lgd_tf.data import writer

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".gif", ".mov", ".m4v", ".mpg", ".mpeg",
                    ".ts")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")  # and optional `split`
PATH_LABEL_COLUMNS = ("path", "label")
CSV_LAYOUTS = ("the Kinetics columns `label,youtube_id,time_start,time_end,split` (split "
               "optional) or `path,label` (paths relative to the videos folder), "
               "comma-separated, named in a header row (any order)")
MANIFEST_VERSION = 1
WORKER_DIED = "worker process died (killed, e.g. out of memory) while encoding it, twice"


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One labelled video: where it is, its class, its unique id and optional trimming (s)."""

    path: str
    label: int
    label_string: str = ""
    media_id: str = ""
    start_time: float | None = None
    end_time: float | None = None


@dataclasses.dataclass
class BuildSummary:
    """What a build did: records written, videos skipped (with why), shards written / kept,
    why each shard was rebuilt, and duplicate input rows dropped."""

    written: int = 0
    skipped: list = dataclasses.field(default_factory=list)  # (path, reason)
    shards_written: list = dataclasses.field(default_factory=list)
    shards_kept: list = dataclasses.field(default_factory=list)  # finished, same videos
    rebuilt: list = dataclasses.field(default_factory=list)  # (shard path, reason)
    notes: list = dataclasses.field(default_factory=list)  # whole-build events
    duplicates: int = 0

    def __str__(self):
        lines = [f"written {self.written} videos into {len(self.shards_written)} shards, "
                 f"kept {len(self.shards_kept)} finished shards, "
                 f"skipped {len(self.skipped)} videos, "
                 f"dropped {self.duplicates} duplicate rows"]
        lines += [f"  {note}" for note in self.notes]
        by_reason = collections.defaultdict(list)
        for path, reason in self.rebuilt:
            by_reason[reason].append(os.path.basename(path))
        for reason, names in by_reason.items():
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            lines.append(f"  rebuilt {len(names)} shards ({reason}): "
                         f"{', '.join(names[:3])}{more}")
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
    """How frames become a record: shorter side, frame rate, flow, JPEG quality."""

    short_side: int | None = 128
    fps: float | None = None
    flow: bool = False
    quality: int = writer.JPEG_QUALITY


def shard_of(media_id, num_shards):
    """The shard of a video: the first 8 bytes of sha256(media_id), mod `num_shards`.

    Stable across runs, machines and Python versions (unlike `hash()`), and independent of
    which other videos are built.
    """
    digest = hashlib.sha256(media_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


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


def encode_video(entry, options=EncodeOptions()):
    """Decodes, resizes and JPEG-encodes one video frame by frame -> serialised record.

    Only the current decoded frame (and the previous one, for flow) is held: the record's
    JPEGs are the only thing that grows with the video's length.
    """
    jpegs, flow_jpegs, previous = [], [], None
    for image in video_lib.iter_frames(entry.path, options.short_side, fps=options.fps,
                                       start_time=entry.start_time, end_time=entry.end_time):
        jpegs.append(writer.encode_jpeg(image, options.quality))
        if options.flow:
            if previous is not None:
                pair = flow_lib.tvl1_flow(np.stack([previous, image]))
                flow_jpegs.append(writer.encode_jpeg(flow_lib.quantize_flow(pair[0]),
                                                     options.quality))
            previous = image
    if options.flow and not flow_jpegs:
        raise video_lib.VideoError(
            f"{entry.media_id}: flow needs >= 2 frames, got {len(jpegs)}")
    rate = options.fps or video_lib.video_frame_rate(entry.path)
    example = writer.make_sequence_example(
        jpegs, entry.label, label_string=entry.label_string, media_id=entry.media_id,
        frame_rate=rate, flow=flow_jpegs if options.flow else None, quality=options.quality)
    return example.SerializeToString()


def _encode_entry(job):
    """Worker: (shard, entry, options) -> (record or None, error or None)."""
    _, entry, options = job
    try:
        # OpenCV is single-threaded here: the parent set it before forking (_pool_results).
        # Changing its thread pool in a forked child can deadlock on the parent's locks.
        return encode_video(entry, options), None
    except Exception as e:  # noqa: BLE001 - any failure skips this one video, reported below
        return None, f"{type(e).__name__}: {e}"


def _encode_item(job):
    """Worker for in-memory frames: (shard, (frames, label, name, media_id), options)."""
    _, (frames, label, label_string, media_id), options = job
    try:
        return encode_frames(frames, label, label_string=label_string, media_id=media_id,
                             options=options), None
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"


def _retry_alone(worker, job, context):
    """Runs one job in a fresh one-worker pool: (record, error); a second death is reported."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        try:
            return pool.submit(worker, job).result()
        except concurrent.futures.process.BrokenProcessPool:
            return None, WORKER_DIED


def _pool_results(jobs, worker, num_workers):
    """Yields (job, record, error) for each job, in job order, computed in worker processes.

    At most 2 * num_workers + 2 results wait in memory. When a worker dies the pool breaks:
    every job it had not finished is retried alone in a fresh pool (so one bad video cannot
    take others with it twice), then the remaining jobs go to a new pool.
    """
    context = multiprocessing.get_context("fork")  # workers inherit the imported modules
    window, jobs, pool = collections.deque(), iter(jobs), None
    import cv2

    # One OpenCV thread per worker (TV-L1 flow): set in the parent, before any fork, so the
    # children inherit a pool they never have to tear down (doing it in a forked child can
    # wait for ever on a condition variable of the parent's pool threads).
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        while True:
            if pool is None:
                pool = concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context)
            for job in jobs:
                try:
                    future = pool.submit(worker, job)
                except concurrent.futures.process.BrokenProcessPool as error:
                    future = concurrent.futures.Future()  # retried below, as the others
                    future.set_exception(error)
                window.append((job, future))
                if len(window) >= 2 * num_workers + 2:
                    break
            if not window:
                return
            job, future = window.popleft()
            try:
                result = future.result()
            except concurrent.futures.process.BrokenProcessPool:
                affected = [(job, future)] + list(window)
                window.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                pool = None
                logging.warning("A worker process died; retrying its %d videos one by one",
                                len(affected))
                for job, future in affected:
                    done = future.done() and not future.cancelled() and not future.exception()
                    yield (job, *(future.result() if done else
                                  _retry_alone(worker, job, context)))
                continue
            yield (job, *result)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(opencv_threads)


def _serial_results(jobs, worker):
    for job in jobs:
        yield (job, *worker(job))


def manifest_path(shard_file):
    """The manifest of a shard: `{dir}/{prefix}-00003-of-00008.tfrecord` ->
    `{dir}/{prefix}.manifest/{prefix}-00003-of-00008.json` (not matched by `{prefix}-*`)."""
    folder, name = os.path.split(shard_file)
    prefix = re.sub(r"-\d{5}-of-\d{5}\.tfrecord$", "", name)
    return os.path.join(folder, f"{prefix}.manifest", name.removesuffix(".tfrecord") + ".json")


def _source(entry):
    """What identifies a video's input: the file, its size and mtime, the trim, the label."""
    try:
        stat = os.stat(entry.path)
        size, mtime = stat.st_size, stat.st_mtime_ns
    except OSError:
        size, mtime = None, None
    return {"media_id": entry.media_id, "source": os.path.abspath(entry.path), "size": size,
            "mtime_ns": mtime, "start_time": entry.start_time, "end_time": entry.end_time,
            "label": int(entry.label), "label_string": entry.label_string}


def _read_manifest(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = writer.temporary_path(path)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _why_rebuild(shard_file, manifest, planned, options_key, num_shards):
    """None if the finished shard holds exactly the planned videos, else the reason."""
    if not os.path.exists(shard_file):
        return "new shard" if manifest is None else "shard file missing"
    if manifest is None or manifest.get("version") != MANIFEST_VERSION:
        return "no manifest (the previous build stopped before it finished this shard)"
    if manifest.get("num_shards") != num_shards or manifest.get("options") != options_key:
        return "build options changed"
    if manifest.get("shard_size") != os.path.getsize(shard_file):
        return "shard file differs from its manifest"
    old = {v["media_id"]: v for v in manifest.get("videos", [])}
    new = {v["media_id"]: v for v in planned}
    if old == new:
        return None
    added, removed = new.keys() - old.keys(), old.keys() - new.keys()
    changed = [m for m in new.keys() & old.keys() if new[m] != old[m]]
    parts = [f"{len(added)} added" if added else "", f"{len(removed)} removed" if removed else "",
             f"{len(changed)} changed (file, trim or label)" if changed else ""]
    return "videos " + ", ".join(p for p in parts if p)


def _clear_other_layouts(output_dir, prefix, num_shards, summary):
    """Removes shards (and manifests) of this prefix with another shard count, and the
    temporary files of builds that were killed: the prefix then holds one layout only."""
    pattern = re.compile(re.escape(prefix) + r"-\d{5}-of-(\d{5})\.tfrecord$")
    stale = [p for p in glob.glob(os.path.join(glob.escape(output_dir), f"{prefix}-*"))
             if (m := pattern.match(os.path.basename(p))) and int(m.group(1)) != num_shards]
    manifests = os.path.join(output_dir, f"{prefix}.manifest")
    for path in stale:
        os.remove(path)
        if os.path.exists(manifest_path(path)):
            os.remove(manifest_path(path))
    if stale:
        summary.notes.append(f"num_shards changed to {num_shards}: removed {len(stale)} shards "
                             "of the old layout, rebuilding all")
    for tmp in glob.glob(os.path.join(glob.escape(output_dir), f".{prefix}-*.tmp-*")) + \
            glob.glob(os.path.join(glob.escape(manifests), f".{prefix}-*.tmp-*")):
        os.remove(tmp)


def _unique(entries, summary):
    """Drops entries whose media id was already seen (a warning each; counted)."""
    seen, unique = set(), []
    for entry in entries:
        if not entry.media_id:
            entry = dataclasses.replace(entry, media_id=os.path.splitext(entry.path)[0])
        if entry.media_id in seen:
            summary.duplicates += 1
            logging.warning("Dropping duplicate video %s (%s)", entry.media_id, entry.path)
            continue
        seen.add(entry.media_id)
        unique.append(entry)
    return unique


def build_from_videos(entries, output_dir, *, prefix="train", num_shards=8, num_workers=None,
                      options=EncodeOptions()):
    """Decodes each `VideoEntry` with PyAV and writes `{prefix}-SSSSS-of-NNNNN.tfrecord` shards.

    Idempotent: rerunning with the same (or a changed) input leaves exactly that input in the
    shards, each video once; finished shards whose videos did not change are kept. A change
    of `num_shards` or of `options` rebuilds every shard. Records in a shard are in media-id
    order, so the same input gives the same bytes.

    Args:
        entries: `VideoEntry`s; a repeated media id is dropped (counted in the summary).
        num_workers: worker processes (default: CPU count). The decoding always runs in
            worker processes, so a video that kills its process cannot stop the build.

    Returns:
        BuildSummary (also logged).
    """
    if num_shards < 1:
        raise ValueError(f"`num_shards` must be >= 1. Received: num_shards={num_shards}")
    summary = BuildSummary()
    os.makedirs(output_dir, exist_ok=True)
    _clear_other_layouts(output_dir, prefix, num_shards, summary)
    planned = collections.defaultdict(list)
    for entry in _unique(entries, summary):
        planned[shard_of(entry.media_id, num_shards)].append(entry)
    options_key = dataclasses.asdict(options)
    jobs, plans = [], {}
    for shard in range(num_shards):
        shard_entries = sorted(planned[shard], key=lambda e: e.media_id)
        sources = [_source(e) for e in shard_entries]
        path = writer.shard_path(output_dir, prefix, shard, num_shards)
        manifest = _read_manifest(manifest_path(path))
        reason = _why_rebuild(path, manifest, sources, options_key, num_shards)
        if reason is None:
            summary.shards_kept.append(path)
            continue
        if reason == "build options changed" and not any("options" in n for n in summary.notes):
            summary.notes.append("encode options changed: rebuilding all shards")
        summary.rebuilt.append((path, reason))
        plans[shard] = sources
        jobs += [(shard, e, options) for e in shard_entries]
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(jobs)))
    results = _pool_results(jobs, _encode_entry, workers)
    with contextlib.closing(results):  # the pool is shut down if writing fails
        _write_shards(results, plans, output_dir, prefix, num_shards, options_key, summary)
    logging.info("Build summary: %s", summary)
    return summary


def _write_shards(results, plans, output_dir, prefix, num_shards, options_key, summary):
    """Streams the ordered results into their shards; each shard is renamed into place once
    its last video is done, then its manifest is written."""
    import tensorflow as tf

    total = sum(len(v) for v in plans.values())
    done, start = 0, time.time()
    report_every = max(1, total // 20)
    results = iter(results)
    for shard in sorted(plans):
        path = writer.shard_path(output_dir, prefix, shard, num_shards)
        manifest_file = manifest_path(path)
        if os.path.exists(manifest_file):
            os.remove(manifest_file)  # the shard is about to change: its manifest is void
        videos, tmp = [], writer.temporary_path(path)
        try:
            with tf.io.TFRecordWriter(tmp) as records:
                for source in plans[shard]:
                    (_, entry, _), record, error = next(results)
                    status = {"status": "written"}
                    if error is None:
                        records.write(record)
                        summary.written += 1
                    else:
                        summary.skipped.append((entry.path, error))
                        logging.warning("Skipping %s: %s", entry.path, error)
                        status = {"status": "skipped", "reason": error}
                    videos.append({**source, **status})
                    done += 1
                    if done % report_every == 0 or done == total:
                        rate = done / max(time.time() - start, 1e-9)
                        logging.info("[%-20s] %d/%d videos, %.1f videos/s",
                                     "#" * (20 * done // total), done, total, rate)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        summary.shards_written.append(path)
        _write_json(manifest_file, {
            "version": MANIFEST_VERSION, "shard": os.path.basename(path),
            "num_shards": num_shards, "options": options_key,
            "shard_size": os.path.getsize(path),
            "records": sum(v["status"] == "written" for v in videos),
            "videos": [{k: v for k, v in video.items() if k not in ("status", "reason")}
                       for video in videos],
            "status": {v["media_id"]: v["status"] for v in videos},
            "skipped": {v["media_id"]: v["reason"] for v in videos if "reason" in v},
        })


def build_from_frames(items, output_dir, *, prefix="train", num_shards=4, num_workers=1,
                      options=EncodeOptions(short_side=None)):
    """Writes in-memory videos `(frames, label, label_string, media_id)`, item i into shard
    i % num_shards (in-memory sets have no source file to key a manifest on: a rerun keeps
    the shards that exist)."""
    if num_shards < 1:
        raise ValueError(f"`num_shards` must be >= 1. Received: num_shards={num_shards}")
    summary = BuildSummary()
    os.makedirs(output_dir, exist_ok=True)
    by_shard = collections.defaultdict(list)
    for i, item in enumerate(items):
        by_shard[i % num_shards].append(item)
    for shard in range(num_shards):
        path = writer.shard_path(output_dir, prefix, shard, num_shards)
        if os.path.exists(path):
            summary.shards_kept.append(path)
            continue
        jobs = [(shard, item, options) for item in by_shard[shard]]
        results = (_pool_results(jobs, _encode_item, num_workers) if num_workers > 1
                   else _serial_results(jobs, _encode_item))
        records = []
        for (_, item, _), record, error in results:
            if error is None:
                records.append(record)
                summary.written += 1
            else:
                summary.skipped.append((item[3], error))
        writer.write_shard(path, records)
        summary.shards_written.append(path)
    return summary


class LabelsTable(typing.NamedTuple):
    """A labels CSV read: entries, class names (index order), rows without a video file
    (name, reason), and the number of duplicate rows dropped."""

    entries: list
    class_names: list
    missing: list
    duplicates: int = 0


def _kinetics_time(value, column, row_number):
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"row {row_number}: `{column}` is not a number. Received: "
                         f"{value!r}") from None


def _read_rows(csv_path):
    """(layout, header index, data rows with their line numbers) of a labels CSV."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        text = f.read()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{csv_path} is empty; expected {CSV_LAYOUTS}")
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    if delimiter != ",":
        raise ValueError(f"{csv_path} is separated by {delimiter!r}, not commas; expected "
                         f"{CSV_LAYOUTS}")
    rows = [(n, [c.strip() for c in row]) for n, row in
            enumerate(csv.reader(text.splitlines()), start=1) if any(c.strip() for c in row)]
    header = [c.lower() for c in rows[0][1]]
    if all(c in header for c in KINETICS_COLUMNS):
        layout = "kinetics"
    elif all(c in header for c in PATH_LABEL_COLUMNS):
        layout = "path_label"
    elif len(header) == 2 and header[0].endswith(VIDEO_EXTENSIONS):
        return "path_label", {"path": 0, "label": 1}, rows  # no header row: `path,label` rows
    else:
        raise ValueError(f"{csv_path} has columns {rows[0][1]}; expected {CSV_LAYOUTS}")
    if len(rows) == 1:
        raise ValueError(f"{csv_path} has a header row but no rows; expected {CSV_LAYOUTS}")
    return layout, {name: header.index(name) for name in header}, rows[1:]


def read_labels_csv(csv_path, videos_dir, *, split=None, class_names=None):
    """Reads a labels CSV into `VideoEntry`s with unique media ids and the class names.

    Columns are found by their header names, in any order (a UTF-8 BOM is fine):
    - Kinetics `label,youtube_id,time_start,time_end[,split]`: media id
      `{youtube_id}_{time_start:06d}_{time_end:06d}` (the public download scripts' names).
      A file named `<media id>.<ext>` under `videos_dir` is the trimmed segment; otherwise an
      untrimmed `<youtube_id>.<ext>` is trimmed to [time_start, time_end) for each row.
    - `path,label` (header optional when the first column names a video file): media id =
      the path relative to `videos_dir` without its extension (`a/clip`, `b/clip` differ).
    A row whose media id was already read is dropped with a warning (counted). Class indices
    follow `class_names` if given (a label not in it is an error), else the sorted names (or
    the integers themselves when every label is an integer).

    Returns:
        LabelsTable(entries, class_names, missing, duplicates); missing lists
        (name, reason) of rows whose file was not found.

    Raises:
        ValueError: one line naming the file and the expected columns.
    """
    layout, column, rows = _read_rows(csv_path)
    videos_dir = pathlib.Path(videos_dir)
    parsed, missing, seen, duplicates = [], [], set(), 0

    def cell(row, name, n):
        if column[name] >= len(row):
            raise ValueError(f"{csv_path}: row {n} has {len(row)} columns, no `{name}`; "
                             f"expected {CSV_LAYOUTS}")
        return row[column[name]]

    if layout == "kinetics":
        index = {}
        for p in sorted(videos_dir.rglob("*")):
            if p.suffix.lower() in VIDEO_EXTENSIONS:
                index.setdefault(p.stem, p)
        for n, row in rows:
            if split is not None and "split" in column and cell(row, "split", n) != split:
                continue
            label, yid = cell(row, "label", n), cell(row, "youtube_id", n)
            t0 = _kinetics_time(cell(row, "time_start", n), "time_start", n)
            t1 = _kinetics_time(cell(row, "time_end", n), "time_end", n)
            media_id = f"{yid}_{int(round(t0)):06d}_{int(round(t1)):06d}"
            if media_id in seen:
                duplicates += 1
                logging.warning("Dropping duplicate row %d of %s (%s)", n, csv_path, media_id)
                continue
            seen.add(media_id)
            if media_id in index:
                parsed.append((str(index[media_id]), label, media_id, None, None))
            elif yid in index:
                parsed.append((str(index[yid]), label, media_id, t0, t1))
            else:
                missing.append((media_id, "no video file found"))
    else:
        for n, row in rows:
            relative, label = cell(row, "path", n), cell(row, "label", n)
            media_id = pathlib.PurePosixPath(relative.replace(os.sep, "/")).with_suffix("")
            media_id = str(media_id)
            if media_id in seen:
                duplicates += 1
                logging.warning("Dropping duplicate row %d of %s (%s)", n, csv_path, media_id)
                continue
            seen.add(media_id)
            path = videos_dir / relative
            if not path.exists():
                missing.append((str(path), "no such file"))
                continue
            parsed.append((str(path), label, media_id, None, None))
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
    return LabelsTable(entries, list(class_names), missing, duplicates)
