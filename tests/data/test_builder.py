"""The TFRecord builder: bad videos skipped and reported, atomic shards, deterministic sharding
with manifests (reruns write exactly the input set), a dead worker, CSV forms and media ids."""

import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from lgd_io import files
from lgd_tf.data import builder, eval_dataset, schema, writer
from tests.data import helpers


def _videos(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    good = []
    for k, (ext, codec) in enumerate([("mp4", "libx264"), ("webm", "libvpx"), ("mp4", "libx264"),
                                      ("avi", "mpeg4")]):
        path = helpers.write_video(folder / f"good{k}.{ext}",
                                   helpers.indexed_frames(6 + k, 48, 64), codec)
        good.append(builder.VideoEntry(path, k, f"class{k}", f"good{k}"))
    (folder / "text.mp4").write_bytes(b"plain text, no video")
    (folder / "empty.webm").write_bytes(b"")
    bad = [builder.VideoEntry(str(folder / "text.mp4"), 0, "class0", "text"),
           builder.VideoEntry(str(folder / "empty.webm"), 1, "class1", "empty")]
    return good, bad


def _small_videos(folder, names, frames=3):
    """Tiny 16x16 videos named `names` -> VideoEntries (label = position)."""
    folder.mkdir(exist_ok=True)
    return [builder.VideoEntry(helpers.write_video(folder / f"{n}.mp4",
                                                   helpers.indexed_frames(frames, 16, 16),
                                                   "libx264"), i, f"c{i}", n)
            for i, n in enumerate(names)]


def _read_all(pattern, modality="rgb"):
    out = {}
    for path in tf.io.gfile.glob(pattern):
        for record in tf.data.TFRecordDataset(path):
            parsed = schema.parse_record(record, modality)
            frames = [tf.io.decode_jpeg(j).numpy() for j in parsed["frames"]]
            out[parsed["media_id"].numpy().decode()] = (np.stack(frames), int(parsed["label"]))
    return out


def _shard_ids(out, prefix="train"):
    """{shard file name: [media ids in it]}, read back from the records."""
    return {os.path.basename(p): [m for m, _, _ in helpers.read_media_ids(p)]
            for p in sorted(tf.io.gfile.glob(os.path.join(str(out), f"{prefix}-*")))}


def test_builds_resized_records_and_skips_bad_videos(tmp_path):
    good, bad = _videos(tmp_path)
    out = tmp_path / "out"
    summary = builder.build_from_videos(good[:2] + bad + good[2:], str(out), prefix="train",
                                        num_shards=2, num_workers=2,
                                        options=builder.EncodeOptions(short_side=32))
    assert summary.written == 4
    assert sorted(os.path.basename(p) for p, _ in summary.skipped) == ["empty.webm", "text.mp4"]
    assert all("VideoError" in reason for _, reason in summary.skipped)
    assert "skipped 2 videos" in str(summary)
    assert sorted(os.listdir(out)) == ["train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord",
                                       "train.manifest"]  # no temporary file left
    records = _read_all(str(out / "train-*"))
    assert sorted(records) == ["good0", "good1", "good2", "good3"]
    for k in range(4):
        frames, label = records[f"good{k}"]
        assert label == k and frames.shape == (6 + k, 32, 43, 3)  # 48x64 -> shorter side 32
        np.testing.assert_array_equal(helpers.frame_indices(frames), np.arange(6 + k))
    # The pipeline reads the built shards end to end (the manifest folder is not matched).
    views = [v for v, _, _ in eval_dataset(str(out / "train-*"), num_frames=4, num_clips=2,
                                           short_side=32)]
    assert len(views) == 4 and views[0].shape == (1, 2, 4, 32, 43, 3)


def test_shard_of_is_a_stable_hash_of_the_media_id(tmp_path):
    # An independent reference: the first 8 bytes of sha256, big-endian, mod N.
    for media_id in ["a/clip", "b/clip", "abcdefghijk_000010_000020", "ü"]:
        digest = hashlib.sha256(media_id.encode()).hexdigest()
        assert builder.shard_of(media_id, 8) == int(digest[:16], 16) % 8
    assert builder.shard_of("good0", 2) == int(hashlib.sha256(b"good0").hexdigest()[:16],
                                                16) % 2
    # The shard of a video does not depend on the other videos built with it.
    entries = _small_videos(tmp_path / "v", ["v0", "v1", "v2", "v3", "v4", "v5"], frames=2)
    alone = builder.build_from_videos(entries[:2], str(tmp_path / "a"), num_shards=4,
                                      num_workers=1)
    together = builder.build_from_videos(entries[::-1], str(tmp_path / "b"), num_shards=4,
                                         num_workers=1)
    assert alone.written == 2 and together.written == 6
    a, b = _shard_ids(tmp_path / "a"), _shard_ids(tmp_path / "b")
    for media_id in ("v0", "v1"):
        name = f"train-{builder.shard_of(media_id, 4):05d}-of-00004.tfrecord"
        assert media_id in a[name] and media_id in b[name]
    assert all(ids == sorted(ids) for ids in b.values())  # media-id order inside a shard


def test_rerun_keeps_unchanged_shards_and_rebuilds_changed_ones(tmp_path):
    names = [f"v{i}" for i in range(6)]
    entries = _small_videos(tmp_path / "v", names)
    out = str(tmp_path / "out")
    first = builder.build_from_videos(entries, out, num_shards=3, num_workers=2)
    assert first.written == 6 and len(first.shards_written) == 3
    assert {r for _, r in first.rebuilt} == {"new shard"}
    stamps = {p: os.stat(p).st_mtime_ns for p in first.shards_written}

    again = builder.build_from_videos(entries, out, num_shards=3, num_workers=2)
    assert again.written == 0 and again.shards_written == [] and again.rebuilt == []
    assert sorted(again.shards_kept) == sorted(stamps)
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps

    # Add a video: only its shard is rebuilt; the records hold each video exactly once.
    added = [builder.VideoEntry(helpers.write_video(tmp_path / "v" / "v6.mp4",
                                                    helpers.indexed_frames(3, 16, 16),
                                                    "libx264"), 6, "c6", "v6")]
    third = builder.build_from_videos(entries + added, out, num_shards=3, num_workers=2)
    target = writer.shard_path(out, "train", builder.shard_of("v6", 3), 3)
    assert third.rebuilt == [(target, "videos 1 added")] and third.shards_written == [target]
    assert third.written == sum(builder.shard_of(n, 3) == builder.shard_of("v6", 3)
                                for n in names + ["v6"])
    assert "rebuilt 1 shards (videos 1 added)" in str(third)
    for path in set(stamps) - {target}:
        assert os.stat(path).st_mtime_ns == stamps[path]
    ids = [m for m, _, _ in helpers.read_media_ids(os.path.join(out, "train-*"))]
    assert sorted(ids) == sorted(names + ["v6"])

    # Remove two videos: their shards are rebuilt without them.
    fourth = builder.build_from_videos(entries[2:] + added, out, num_shards=3, num_workers=1)
    assert {r for _, r in fourth.rebuilt} <= {"videos 1 removed", "videos 2 removed"}
    ids = [m for m, _, _ in helpers.read_media_ids(os.path.join(out, "train-*"))]
    assert sorted(ids) == sorted(names[2:] + ["v6"])

    # A lost shard file is rebuilt from its videos.
    lost = writer.shard_path(out, "train", builder.shard_of("v3", 3), 3)
    os.remove(lost)
    fifth = builder.build_from_videos(entries[2:] + added, out, num_shards=3, num_workers=1)
    assert fifth.rebuilt == [(lost, "shard file missing")]
    ids = [m for m, _, _ in helpers.read_media_ids(os.path.join(out, "train-*"))]
    assert sorted(ids) == sorted(names[2:] + ["v6"])


def test_manifest_names_the_videos_of_each_shard(tmp_path):
    entries = _small_videos(tmp_path / "v", ["v0", "v1", "v2"])
    out = str(tmp_path / "out")
    builder.build_from_videos(entries, out, num_shards=2, num_workers=1,
                              options=builder.EncodeOptions(short_side=8))
    for shard in range(2):
        path = writer.shard_path(out, "train", shard, 2)
        manifest_file = builder.manifest_path(path)
        assert manifest_file == os.path.join(out, "train.manifest",
                                             f"train-{shard:05d}-of-00002.json")
        with open(manifest_file) as f:
            manifest = json.load(f)
        expected = sorted(e.media_id for e in entries if builder.shard_of(e.media_id, 2) == shard)
        assert [v["media_id"] for v in manifest["videos"]] == expected
        assert manifest["records"] == len(expected) and manifest["num_shards"] == 2
        assert manifest["shard_size"] == os.path.getsize(path)
        assert manifest["options"]["short_side"] == 8
        for video in manifest["videos"]:
            source = next(e.path for e in entries if e.media_id == video["media_id"])
            assert video["source"] == os.path.abspath(source)
            assert video["size"] == os.path.getsize(source)


def test_changed_options_or_num_shards_rebuild_everything(tmp_path):
    entries = _small_videos(tmp_path / "v", ["v0", "v1", "v2", "v3"])
    out = str(tmp_path / "out")
    builder.build_from_videos(entries, out, num_shards=2, num_workers=1)
    other = builder.build_from_videos(entries, out, num_shards=2, num_workers=1,
                                      options=builder.EncodeOptions(short_side=8))
    assert len(other.shards_written) == 2 and other.written == 4
    assert {r for _, r in other.rebuilt} == {"build options changed"}
    assert "encode options changed: rebuilding all shards" in str(other)
    assert {f for _, f, _ in helpers.read_media_ids(os.path.join(out, "train-*"))} == {3}

    more = builder.build_from_videos(entries, out, num_shards=3, num_workers=1,
                                     options=builder.EncodeOptions(short_side=8))
    assert "num_shards changed to 3: removed 2 shards of the old layout" in str(more)
    shards = sorted(n for n in os.listdir(out) if n.startswith("train-"))
    assert shards == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert sorted(os.listdir(os.path.join(out, "train.manifest"))) == [
        f"train-0000{i}-of-00003.json" for i in range(3)]
    ids = [m for m, _, _ in helpers.read_media_ids(os.path.join(out, "train-*"))]
    assert sorted(ids) == ["v0", "v1", "v2", "v3"]


def test_temporary_files_never_match_the_prefix(tmp_path):
    tmp = files.temporary_name(str(tmp_path / "train-00003-of-00008.tfrecord"))
    open(tmp, "w").close()  # as a build killed mid-shard leaves it
    name = os.path.basename(tmp)
    assert name.startswith(".train-00003-of-00008.tmp-") and name.endswith(".tfrecord")
    assert not fnmatch.fnmatch(name, "train-*") and tf.io.gfile.glob(
        str(tmp_path / "train-*")) == []
    # A temporary file left by a killed build is removed by the next build.
    entries = _small_videos(tmp_path / "v", ["v0"])
    builder.build_from_videos(entries, str(tmp_path), num_shards=1, num_workers=1)
    assert not os.path.exists(tmp)


def test_duplicate_media_ids_are_dropped_and_counted(tmp_path):
    entries = _small_videos(tmp_path / "v", ["v0", "v1"])
    summary = builder.build_from_videos(entries + entries[:1], str(tmp_path / "out"),
                                        num_shards=1, num_workers=1)
    assert summary.duplicates == 1 and summary.written == 2
    assert "dropped 1 duplicate rows" in str(summary)


_KILLER_BUILD = """
import json, os, signal, sys
from lgd_io import video
from lgd_io.builder import local, shards
real = video.iter_frames
def iter_frames(path, *args, **kwargs):  # SIGKILLs its own (worker) process on `killer`
    if os.path.basename(str(path)).startswith("killer"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, *args, **kwargs)
video.iter_frames = iter_frames  # the forked workers of this TensorFlow-free parent see it
entries = [shards.VideoEntry(p, 0, "c", os.path.basename(p)[:-4]) for p in sys.argv[2:]]
summary = local.build_from_videos(entries, sys.argv[1], num_shards=2, num_workers=2)
print(json.dumps({"skipped": summary.skipped, "written": summary.written,
                  "shards": len(summary.shards_written), "tf": "tensorflow" in sys.modules}))
"""


@pytest.mark.subprocess
def test_a_killed_worker_skips_its_video_and_the_build_goes_on(tmp_path, subprocess_env):
    names = [f"v{i}" for i in range(5)] + ["killer"]
    entries = _small_videos(tmp_path / "v", names)
    start = time.time()
    result = subprocess.run(
        [sys.executable, "-c", _KILLER_BUILD, str(tmp_path / "out"), *(e.path for e in entries)],
        env=subprocess_env, capture_output=True, text=True, timeout=90)
    elapsed = time.time() - start
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert elapsed < 60
    assert summary["skipped"] == [[entries[-1].path, builder.WORKER_DIED]]
    assert summary["written"] == 5 and summary["shards"] == 2 and not summary["tf"]
    ids = [m for m, _, _ in helpers.read_media_ids(str(tmp_path / "out" / "train-*"))]
    assert sorted(ids) == sorted(names[:-1])  # every other video exactly once


def test_kinetics_csv_with_bom_any_column_order_and_duplicates(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    frames = helpers.indexed_frames(4, 16, 16)
    helpers.write_video(folder / "abcdefghijk.mp4", frames, "libx264")  # untrimmed: trim
    helpers.write_video(folder / "ABC-EF_HIJK_000010_000020.mp4", frames, "libx264")  # trimmed
    csv_path = tmp_path / "k.csv"
    csv_path.write_bytes("\ufeffyoutube_id,label,time_end,time_start,split\n"
                         "abcdefghijk,riding bike,11,1,train\n"
                         "ABC-EF_HIJK,archery,20,10,train\n"
                         "missing0000,archery,10,0,train\n"
                         "abcdefghijk,riding bike,11,1,train\n"  # duplicate row
                         "abcdefghijk,archery,10,0,val\n".encode("utf-8"))
    table = builder.read_labels_csv(csv_path, folder, split="train")
    assert table.class_names == ["archery", "riding bike"]
    assert table.missing == [("missing0000_000000_000010", "no video file found")]
    assert table.duplicates == 1
    by_id = {e.media_id: e for e in table.entries}
    assert sorted(by_id) == ["ABC-EF_HIJK_000010_000020", "abcdefghijk_000001_000011"]
    untrimmed = by_id["abcdefghijk_000001_000011"]
    assert (untrimmed.label, untrimmed.start_time, untrimmed.end_time) == (1, 1.0, 11.0)
    trimmed = by_id["ABC-EF_HIJK_000010_000020"]
    assert (trimmed.label, trimmed.start_time, trimmed.end_time) == (0, None, None)
    assert os.path.basename(trimmed.path) == "ABC-EF_HIJK_000010_000020.mp4"


def test_kinetics_untrimmed_file_with_two_rows_gives_two_segments(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    helpers.write_video(folder / "abcdefghijk.mp4", helpers.indexed_frames(30, 32, 32),
                        "libx264", fps=10)  # 3 s
    csv_path = tmp_path / "k.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split\n"
                        "walk,abcdefghijk,0,1,train\nrun,abcdefghijk,1,3,train\n")
    table = builder.read_labels_csv(csv_path, folder)
    out = tmp_path / "out"
    summary = builder.build_from_videos(table.entries, str(out), num_shards=2, num_workers=2,
                                        options=builder.EncodeOptions(short_side=None))
    assert summary.written == 2
    records = _read_all(str(out / "train-*"))
    assert sorted(records) == ["abcdefghijk_000000_000001", "abcdefghijk_000001_000003"]
    first, label = records["abcdefghijk_000000_000001"]  # [0 s, 1 s): frames 0..9
    np.testing.assert_array_equal(helpers.frame_indices(first), np.arange(10))
    assert label == table.class_names.index("walk")
    second, _ = records["abcdefghijk_000001_000003"]  # [1 s, 3 s): frames 10..29
    np.testing.assert_array_equal(helpers.frame_indices(second), np.arange(10, 30))


def test_path_label_csv_media_ids_and_column_order(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "clip.mp4").write_bytes(b"x")
    (tmp_path / "c.webm").write_bytes(b"x")
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("label,path\n0,a/clip.mp4\n1,b/clip.mp4\n1,c.webm\n0,a/clip.mp4\n")
    table = builder.read_labels_csv(csv_path, tmp_path)
    assert [e.media_id for e in table.entries] == ["a/clip", "b/clip", "c"]
    assert [e.label for e in table.entries] == [0, 1, 1] and table.duplicates == 1
    headerless = tmp_path / "h.csv"
    headerless.write_text("a/clip.mp4,3\nb/clip.mp4,0\nmissing.mp4,1\n")
    table = builder.read_labels_csv(headerless, tmp_path)
    assert [(e.media_id, e.label) for e in table.entries] == [("a/clip", 3), ("b/clip", 0)]
    assert table.class_names == ["0", "1", "2", "3"] and len(table.missing) == 1
    with pytest.raises(ValueError, match="not in class_names"):
        builder.read_labels_csv(headerless, tmp_path, class_names=["0", "1"])


@pytest.mark.parametrize("name,content,needle", [
    ("empty", "\n\n", "is empty"),
    ("header_only", "label,youtube_id,time_start,time_end,split\n", "header row but no rows"),
    ("one_column", "path\na.mp4\nb.mp4\n", "has columns ['path']"),
    ("semicolons", "path;label\na.mp4;walk\nb.mp4;run\n", "separated by ';'"),
    ("unknown", "video,class\nx.mp4,walk\n", "has columns ['video', 'class']"),
    ("not_csv", "<html><body>not a table</body></html>\n", "has columns"),
])
def test_bad_csv_layouts_name_the_expected_columns(tmp_path, name, content, needle):
    csv_path = tmp_path / f"{name}.csv"
    csv_path.write_text(content)
    with pytest.raises(ValueError) as error:
        builder.read_labels_csv(csv_path, tmp_path)
    message = str(error.value)
    assert "\n" not in message and needle in message and str(csv_path) in message
    assert "`label,youtube_id,time_start,time_end,split`" in message
    assert "`path,label`" in message


def test_flow_is_stored_per_frame_pair(tmp_path):
    good, _ = _videos(tmp_path)
    out = tmp_path / "out"
    builder.build_from_videos(good[:1], str(out), num_shards=1, num_workers=1,
                              options=builder.EncodeOptions(short_side=24, flow=True))
    flows = _read_all(str(out / "train-*"), modality="flow")
    frames, label = flows["good0"]
    assert frames.shape == (5, 24, 32, 3) and label == 0
    # Flat frames: no motion, so x and y sit at the zero level 128 (q = 127.5 rounded).
    np.testing.assert_allclose(frames[..., :2].mean(), 127.5, atol=2)
