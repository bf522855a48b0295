"""The demo data set: moving handwritten digits whose label needs appearance AND motion.

12 classes = digit {0, 1, 7} x motion {left, right, up, down}. Each video is 16 frames of
64x64: one scikit-learn digit (8x8, upscaled 3x) moving 3 px per frame on a noisy background
and wrapping around the edges, from a random start, so every single frame looks the same for
all four motions (position alone says nothing) and only the frame sequence gives the class.
Train and eval videos use different digit images. Written through the builder path
(frames -> SequenceExample -> shards); cached in `cache_dir` with a `demo.json` marker.

Note: horizontal flipping turns "left" into "right"; train on it with `flip=False`
(`DemoData.train_kwargs`).
"""

import collections
import json
import os

import numpy as np

from lgd_io import class_names as class_names_file
from lgd_io import files
from lgd_tf.data import builder

DIGITS = (0, 1, 7)
MOTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
NUM_FRAMES = 16
FRAME_SIZE = 64
SCALE = 3
SPEED = 3
VERSION = 1

DemoData = collections.namedtuple(
    "DemoData",
    ["train_pattern", "eval_pattern", "num_classes", "class_names", "train_kwargs", "eval_kwargs"],
)
DemoData.__doc__ = """Where the demo shards are and how to read them.

train_kwargs / eval_kwargs: `train_dataset` / `eval_dataset` keyword arguments that fit the
demo videos (16 frames of 64x64, no flip)."""

CLASS_NAMES = [f"digit{d}_{m}" for d in DIGITS for m in MOTIONS]


def _digit_images():
    from sklearn.datasets import load_digits

    digits = load_digits()
    by_digit = {d: digits.images[digits.target == d] for d in DIGITS}
    return by_digit


def render_video(digit_image, motion, start, rng):
    """One video uint8 (NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3)."""
    sprite = np.kron(digit_image / 16.0, np.ones((SCALE, SCALE)))
    canvas = np.zeros((FRAME_SIZE, FRAME_SIZE), np.float32)
    canvas[: sprite.shape[0], : sprite.shape[1]] = sprite
    dy, dx = MOTIONS[motion]
    tint = rng.uniform(0.6, 1.0, size=3)
    frames = []
    for t in range(NUM_FRAMES):
        shifted = np.roll(canvas, (start[0] + dy * SPEED * t, start[1] + dx * SPEED * t), (0, 1))
        noise = rng.normal(0.0, 0.06, size=(FRAME_SIZE, FRAME_SIZE, 1))
        image = 0.1 + shifted[..., None] * tint[None, None, :] * 0.85 + noise
        frames.append(np.clip(image * 255.0, 0, 255).astype(np.uint8))
    return np.stack(frames)


def _rendered(split, per_class, rng):
    """The demo videos of `split` in generation order, drawn from `rng`: (frames, label,
    digit image, motion, start, k) for the k-th video of each class (CLASS_NAMES order)."""
    images = _digit_images()
    for label, (digit, motion) in enumerate((d, m) for d in DIGITS for m in MOTIONS):
        pool = images[digit]
        cut = (2 * len(pool)) // 3
        pool = pool[:cut] if split == "train" else pool[cut:]
        for k in range(per_class):
            image = pool[rng.integers(len(pool))]
            start = rng.integers(0, FRAME_SIZE, size=2)
            yield render_video(image, motion, start, rng), label, image, motion, start, k


def _videos(split, per_class, seed):
    rng = np.random.default_rng(seed)
    items = [(frames, label, CLASS_NAMES[label], f"{split}_{label:02d}_{k:03d}")
             for frames, label, _, _, _, k in _rendered(split, per_class, rng)]
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def cache_is_current(cache_dir, marker, config):
    """True when `marker` records `config`: the shards in `cache_dir` are that data set.
    Otherwise the marker and every shard of the folder are removed, to be built again."""
    if not os.path.exists(marker):
        return False
    with open(marker) as f:
        if json.load(f).get("config") == config:
            return True
    os.remove(marker)
    for name in os.listdir(cache_dir):
        if name.endswith(".tfrecord"):
            os.remove(os.path.join(cache_dir, name))
    return False


def build_demo_dataset(cache_dir, *, train_per_class=48, eval_per_class=16, num_shards=4):
    """Generates (once) and returns the demo set: 576 train / 192 eval videos by default.

    Returns:
        DemoData(train_pattern, eval_pattern, num_classes=12, class_names, train_kwargs,
        eval_kwargs).
    """
    cache_dir = os.fspath(cache_dir)
    config = {"version": VERSION, "train_per_class": train_per_class,
              "eval_per_class": eval_per_class, "num_shards": num_shards}
    marker = os.path.join(cache_dir, "demo.json")
    data = DemoData(
        train_pattern=os.path.join(cache_dir, "train-*-of-*.tfrecord"),
        eval_pattern=os.path.join(cache_dir, "eval-*-of-*.tfrecord"),
        num_classes=len(CLASS_NAMES),
        class_names=list(CLASS_NAMES),
        train_kwargs={"model": "3d", "num_frames": NUM_FRAMES, "resize": (FRAME_SIZE, FRAME_SIZE),
                      "crop_size": FRAME_SIZE - 8, "flip": False},
        eval_kwargs={"model": "3d", "num_frames": NUM_FRAMES, "num_clips": 1,
                     "short_side": FRAME_SIZE},
    )
    if cache_is_current(cache_dir, marker, config):
        return data
    os.makedirs(cache_dir, exist_ok=True)
    for split, per_class, seed in (("train", train_per_class, 1), ("eval", eval_per_class, 2)):
        summary = builder.build_from_frames(_videos(split, per_class, seed), cache_dir,
                                            prefix=split, num_shards=num_shards)
        if summary.skipped:
            raise RuntimeError(f"Demo build failed: {summary}")
    class_names_file.write(cache_dir, list(CLASS_NAMES))
    files.write_json(marker, {"config": config, "class_names": CLASS_NAMES})
    return data


def labelled_videos(split, per_class, seed):
    """Demo videos rendered as `build_demo_dataset` renders them, with what is needed to find
    the digit (e.g. to score where a Grad-CAM map peaks):
    a list of (frames (16, 64, 64, 3), label, sprite mask (24, 24), motion, start)."""
    videos = _rendered(split, per_class, np.random.default_rng(seed))
    return [(frames, label, np.kron(image / 16.0, np.ones((SCALE, SCALE))) > 0.25, motion,
             start) for frames, label, image, motion, start, _ in videos]
