"""Shards and their manifests: which video goes where, which finished shards a rerun keeps,
and writing one shard (the unit of work of both runners).

Sharding is deterministic: a video goes to shard `sha256(media_id) mod num_shards`, whatever
else is in the input. Beside the shards, `{prefix}.manifest/` holds one JSON file per
finished shard (its videos: media id, source file, size, mtime, trimming, label; the number
of shards and the encode options). A rerun compares the planned video set of each shard with
its manifest: unchanged finished shards are kept, the others rebuilt (the summary says why),
so the output always holds exactly the input set, each video once. A shard is written under
a hidden temporary name (`.{prefix}-00003-of-00008.tmp-XXXXXXXX.tfrecord`, never matched by
`{prefix}-*`) and renamed; its manifest is written after the rename.
"""

import collections
import dataclasses
import glob
import hashlib
import json
import os
import re

from absl import logging

from lgd_io import files, records, tfrecord

MANIFEST_VERSION = 1


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One labelled video: where it is, its class, its unique id and optional trimming (s)."""

    path: str
    label: int
    label_string: str = ""
    media_id: str = ""
    start_time: float | None = None
    end_time: float | None = None


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
    """How frames become a record: shorter side, frame rate, flow, JPEG quality."""

    short_side: int | None = 128
    fps: float | None = None
    flow: bool = False
    quality: int = records.JPEG_QUALITY


DEFAULT_OPTIONS = EncodeOptions()


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


@dataclasses.dataclass
class Plan:
    """The shards a build writes: {shard index: [(entry, source), ...] in media-id order}."""

    shards: dict
    num_shards: int
    options_key: dict

    def jobs(self):
        """(shard, entry, source) of every video to encode, shard by shard."""
        return [(shard, entry, source) for shard in sorted(self.shards)
                for entry, source in self.shards[shard]]


def shard_of(media_id, num_shards):
    """The shard of a video: the first 8 bytes of sha256(media_id), mod `num_shards`.

    Stable across runs, machines and Python versions (unlike `hash()`), and independent of
    which other videos are built.
    """
    digest = hashlib.sha256(media_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def shard_path(output_dir, prefix, index, num_shards):
    """`{output_dir}/{prefix}-00003-of-00008.tfrecord` (the usual sharded-file name)."""
    return os.path.join(output_dir, f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord")


def manifest_path(shard_file):
    """The manifest of a shard: `{dir}/{prefix}-00003-of-00008.tfrecord` ->
    `{dir}/{prefix}.manifest/{prefix}-00003-of-00008.json` (not matched by `{prefix}-*`)."""
    folder, name = os.path.split(shard_file)
    prefix = re.sub(r"-\d{5}-of-\d{5}\.tfrecord$", "", name)
    return os.path.join(folder, f"{prefix}.manifest", name.removesuffix(".tfrecord") + ".json")


def finished_shards(output_dir, prefix):
    """The shard files of `prefix` in `output_dir` (any shard count), sorted."""
    pattern = os.path.join(glob.escape(output_dir), f"{glob.escape(prefix)}-*-of-*.tfrecord")
    return sorted(glob.glob(pattern))


def source_of(entry):
    """What identifies a video's input: the file, its size and mtime, the trim, the label."""
    try:
        stat = os.stat(entry.path)
        size, mtime = stat.st_size, stat.st_mtime_ns
    except OSError:
        size, mtime = None, None
    return {"media_id": entry.media_id, "source": os.path.abspath(entry.path), "size": size,
            "mtime_ns": mtime, "start_time": entry.start_time, "end_time": entry.end_time,
            "label": int(entry.label), "label_string": entry.label_string}


def read_manifest(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


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
    for path in stale:
        os.remove(path)
        files.remove_quietly(manifest_path(path))
    if stale:
        summary.notes.append(f"num_shards changed to {num_shards}: removed {len(stale)} shards "
                             "of the old layout, rebuilding all")
    for folder in (output_dir, os.path.join(output_dir, f"{prefix}.manifest")):
        if os.path.isdir(folder):
            files.remove_stale_temporaries(folder)


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


def plan(entries, output_dir, *, prefix, num_shards, options):
    """Which shards to (re)build: (Plan, BuildSummary with the kept and rebuilt shards).

    Removes the shards of another `num_shards` and temporary files of killed builds first.
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
    shards = {}
    for shard in range(num_shards):
        shard_entries = sorted(planned[shard], key=lambda e: e.media_id)
        sources = [source_of(e) for e in shard_entries]
        path = shard_path(output_dir, prefix, shard, num_shards)
        reason = _why_rebuild(path, read_manifest(manifest_path(path)), sources, options_key,
                              num_shards)
        if reason is None:
            summary.shards_kept.append(path)
            continue
        if reason == "build options changed" and not any("options" in n for n in summary.notes):
            summary.notes.append("encode options changed: rebuilding all shards")
        summary.rebuilt.append((path, reason))
        shards[shard] = list(zip(shard_entries, sources, strict=True))
    return Plan(shards, num_shards, options_key), summary


def write_shard(path, planned, results, *, num_shards, options_key):
    """Writes one shard and then its manifest; returns the manifest.

    Args:
        path: the shard file; it appears only once complete (temporary name, renamed).
        planned: the shard's [(entry, source)], in media-id order.
        results: yields (record or None, error or None) for each planned video, in order; a
            video with an error is left out and listed in the manifest's "skipped".
    """
    manifest_file = manifest_path(path)
    files.remove_quietly(manifest_file)  # the shard is about to change: its manifest is void
    videos, results = [], iter(results)

    def write(tmp):
        with files.open_file(tmp, "wb") as handle:
            for entry, source in planned:
                record, error = next(results)
                if error is None:
                    tfrecord.write_records(handle, [record])
                    videos.append({**source, "status": "written"})
                else:
                    logging.warning("Skipping %s: %s", entry.path, error)
                    videos.append({**source, "status": "skipped", "reason": error})

    files.atomic_write(path, write)
    manifest = {
        "version": MANIFEST_VERSION, "shard": os.path.basename(path),
        "num_shards": num_shards, "options": options_key,
        "shard_size": os.path.getsize(path),
        "records": sum(v["status"] == "written" for v in videos),
        "videos": [{k: v for k, v in video.items() if k not in ("status", "reason")}
                   for video in videos],
        "status": {v["media_id"]: v["status"] for v in videos},
        "skipped": {v["media_id"]: v["reason"] for v in videos if "reason" in v},
    }
    os.makedirs(os.path.dirname(manifest_file), exist_ok=True)
    files.write_json(manifest_file, manifest)
    return manifest


def add_to_summary(summary, path, manifest):
    """Counts a written shard's records and skipped videos (by source file) in `summary`."""
    summary.shards_written.append(path)
    summary.written += manifest["records"]
    sources = {v["media_id"]: v["source"] for v in manifest["videos"]}
    summary.skipped += [(sources[m], reason) for m, reason in manifest["skipped"].items()]
