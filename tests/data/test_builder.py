"""The TFRecord builder: bad videos skipped and reported, atomic shards, resume, CSV forms."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from lgd_tf.data import builder, eval_dataset, schema
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


def _read_all(pattern, modality="rgb"):
    out = {}
    for path in tf.io.gfile.glob(pattern):
        for record in tf.data.TFRecordDataset(path):
            parsed = schema.parse_record(record, modality)
            frames = [tf.io.decode_jpeg(j).numpy() for j in parsed["frames"]]
            out[parsed["media_id"].numpy().decode()] = (np.stack(frames), int(parsed["label"]))
    return out


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
                                       "train-00001-of-00002.tfrecord"]  # no .tmp left
    records = _read_all(str(out / "train-*"))
    assert sorted(records) == ["good0", "good1", "good2", "good3"]
    for k in range(4):
        frames, label = records[f"good{k}"]
        assert label == k and frames.shape == (6 + k, 32, 43, 3)  # 48x64 -> shorter side 32
        np.testing.assert_array_equal(helpers.frame_indices(frames), np.arange(6 + k))
    # The pipeline reads the built shards end to end.
    views = [v for v, _, _ in eval_dataset(str(out / "train-*"), num_frames=4, num_clips=2,
                                           short_side=32)]
    assert len(views) == 4 and views[0].shape == (1, 2, 4, 32, 43, 3)


def test_rerun_resumes_without_rewriting_finished_shards(tmp_path):
    good, _ = _videos(tmp_path)
    out = str(tmp_path / "out")
    options = builder.EncodeOptions(short_side=24)
    first = builder.build_from_videos(good, out, num_shards=2, num_workers=1, options=options)
    assert len(first.shards_written) == 2
    stamps = {p: os.stat(p).st_mtime_ns for p in first.shards_written}
    again = builder.build_from_videos(good, out, num_shards=2, num_workers=1, options=options)
    assert again.shards_written == [] and sorted(again.shards_kept) == sorted(stamps)
    assert again.written == 0
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps
    lost = sorted(stamps)[1]
    os.remove(lost)
    third = builder.build_from_videos(good, out, num_shards=2, num_workers=1, options=options)
    assert third.shards_written == [lost] and third.written == 2  # videos 1 and 3 of shard 1
    kept = sorted(stamps)[0]
    assert os.stat(kept).st_mtime_ns == stamps[kept]


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


def test_kinetics_csv(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    frames = helpers.indexed_frames(4, 16, 16)
    helpers.write_video(folder / "abcdefghijk.mp4", frames, "libx264")  # untrimmed: trim
    helpers.write_video(folder / "ABCDEFGHIJK_000010_000020.mp4", frames, "libx264")  # trimmed
    csv_path = tmp_path / "k.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split\n"
                        "riding bike,abcdefghijk,1.5,11.5,train\n"
                        "archery,ABCDEFGHIJK,10,20,train\n"
                        "archery,missing0000,0,10,train\n"
                        "archery,abcdefghijk,0,10,val\n")
    entries, names, missing = builder.read_labels_csv(csv_path, folder, split="train")
    assert names == ["archery", "riding bike"]
    assert missing == [("missing0000", "no video file found")]
    by_id = {e.media_id: e for e in entries}
    assert (by_id["abcdefghijk"].label, by_id["abcdefghijk"].start_time,
            by_id["abcdefghijk"].end_time) == (1, 1.5, 11.5)
    assert (by_id["ABCDEFGHIJK"].label, by_id["ABCDEFGHIJK"].start_time) == (0, None)


def test_path_label_csv(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("a.mp4,3\nb.mp4,0\nc.mp4,1\n")
    entries, names, missing = builder.read_labels_csv(csv_path, tmp_path)
    assert [(os.path.basename(e.path), e.label) for e in entries] == [("a.mp4", 3), ("b.mp4", 0)]
    assert names == ["0", "1", "2", "3"] and len(missing) == 1
    with pytest.raises(ValueError, match="not in class_names"):
        builder.read_labels_csv(csv_path, tmp_path, class_names=["0", "1"])


@pytest.mark.subprocess
def test_command_line(tmp_path, repo_root, subprocess_env):
    good, bad = _videos(tmp_path)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\n" + "".join(
        f"{os.path.basename(e.path)},{e.label_string}\n" for e in good[:2] + bad))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(repo_root / "tfrecords" / "build_tfrecords.py"),
         f"--videos_dir={tmp_path / 'videos'}", f"--labels_csv={csv_path}",
         f"--output_dir={out}", "--num_shards=1", "--num_workers=1", "--short_side=24"],
        capture_output=True, text=True, env=subprocess_env, timeout=120, check=True)
    assert "written 2 videos" in result.stdout and "skipped 2 videos" in result.stdout
    assert (out / "class_names.txt").read_text().split("\n")[:2] == ["class0", "class1"]
    assert sorted(_read_all(str(out / "train-*"))) == ["good0", "good1"]
