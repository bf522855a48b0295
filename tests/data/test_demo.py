"""The demo set: sizes, balance, caching, and that the label is digit x motion."""

import collections
import os
import time

import numpy as np
import tensorflow as tf

from lgd_tf.data import build_demo_dataset, demo, eval_dataset, schema, train_dataset


def _shift(a, b):
    """Circular translation (dy, dx) taking frame a to frame b (phase correlation)."""
    fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
    r = np.fft.ifft2(fb * np.conj(fa) / (np.abs(fb * np.conj(fa)) + 1e-9)).real
    dy, dx = np.unravel_index(np.argmax(r), r.shape)
    size = a.shape[0]
    return ((dy + size // 2) % size - size // 2, (dx + size // 2) % size - size // 2)


def test_demo_dataset(tmp_path):
    start = time.time()
    data = build_demo_dataset(tmp_path / "demo")
    assert time.time() - start < 30
    assert data.num_classes == 12 and len(data.class_names) == 12
    assert data.class_names[0] == "digit0_left" and data.class_names[-1] == "digit7_down"
    stamps = {f: os.stat(tmp_path / "demo" / f).st_mtime_ns for f in os.listdir(tmp_path / "demo")}
    start = time.time()
    assert build_demo_dataset(tmp_path / "demo") == data
    assert time.time() - start < 0.5  # cached: the demo.json marker
    assert {f: os.stat(tmp_path / "demo" / f).st_mtime_ns for f in stamps} == stamps

    counts = {}
    for split, pattern in (("train", data.train_pattern), ("eval", data.eval_pattern)):
        labels = collections.Counter()
        for path in tf.io.gfile.glob(pattern):
            for record in tf.data.TFRecordDataset(path):
                parsed = schema.parse_record(record)
                labels[int(parsed["label"])] += 1
                if labels[int(parsed["label"])] == 1 and split == "train":
                    _check_motion(parsed)
        counts[split] = labels
    assert counts["train"] == {k: 48 for k in range(12)}
    assert counts["eval"] == {k: 16 for k in range(12)}

    clips, labels = next(iter(train_dataset(data.train_pattern, 4, **data.train_kwargs)))
    assert clips.shape == (4, 16, 56, 56, 3) and labels.shape == (4,)
    views, _, _ = next(iter(eval_dataset(data.eval_pattern, 2, **data.eval_kwargs)))
    assert views.shape == (2, 1, 16, 64, 64, 3)


def _check_motion(parsed):
    label = int(parsed["label"])
    motion = list(demo.MOTIONS)[label % 4]
    frames = np.stack([tf.io.decode_jpeg(j).numpy().mean(axis=-1) for j in parsed["frames"]])
    assert frames.shape == (16, 64, 64)
    dy, dx = demo.MOTIONS[motion]
    for t in range(3):
        assert _shift(frames[t], frames[t + 1]) == (dy * demo.SPEED, dx * demo.SPEED), motion


def test_every_frame_position_is_possible_for_every_motion():
    # Start positions are uniform over the (wrapping) canvas, so where the digit is in one
    # frame says nothing about the motion: only the sequence does.
    rng = np.random.default_rng(0)
    image = np.full((8, 8), 16.0)
    a = demo.render_video(image, "left", (5, 20), rng)
    b = demo.render_video(image, "right", (5, 20 - 2 * demo.SPEED * 15), rng)
    # Frame 15 of "left" sits where frame 15 of "right" does (up to noise).
    assert np.abs(a[15].astype(int) - b[15].astype(int)).mean() < 20
    assert np.abs(a[0].astype(int) - b[0].astype(int)).mean() > 20
