"""A generated video task whose label is a relation between two distant objects.

Each clip is `NUM_FRAMES` frames of `FRAME_SIZE` x `FRAME_SIZE`: two small square objects, one
in the top-left corner region and one in the bottom-right corner region (`REGION` x `REGION`
pixels each), every object moving `SPEED` pixels per frame in one of `directions` (default
left / right), on a noisy background. The label is the relative direction of the two motions,
`(index(d_b) - index(d_a)) mod len(directions)`: with two directions, 0 = "same" and
1 = "opposite" (an XOR of the two objects' directions). Labels are balanced and d_a is drawn
independently of the label, so each object's direction ALONE is independent of the label:
any statistic of one object gives chance accuracy; only the pair gives the class.

Why it needs global context: with global average pooling and a linear classifier, a class
logit is the sum over final-map locations of a function of what each location sees. When no
location sees both objects the logit is additive, A(object a) + B(object b), and an additive
function cannot express "same vs opposite" (the XOR argument: the two "same" cells and the two
"opposite" cells have the same sum of A + B). The receptive field of the small LGD-3D backbone
used by `benchmarks/paper_tables.py`, `lgd3d(stage_blocks=(1, 1, 1, 1))`, is 67 x 67 pixels
(conv1 7x7 stride 2; one 1x3x3 conv per stage after strides 2, 4, 8, 16: 7 + 2 * (2 + 4 + 8 +
16) = 67); a unit that sees a pixel of both corner regions needs an extent of at least
`FRAME_SIZE - 2 * REGION + 2` = 70 pixels on each axis, so none does. The LGD global path
(Eq. 2-3) broadcasts g (which holds both objects) back onto every location, where the next
local units can combine it nonlinearly with the local object; the global head on g_L is also
a nonlinear function of pooled features.

Train / eval sets are written through the builder path (frames -> SequenceExample -> shards),
cached in `cache_dir` with a `relation.json` marker, like the demo set
(`lgd_tf/data/demo.py`). Do not flip or crop when training on it
(`RelationData.train_kwargs`): a crop moves the regions and a flip swaps the corners' sides.
"""

import collections
import os

import numpy as np

from lgd_io import class_names as class_names_file
from lgd_io import files
from lgd_tf.data import builder, demo

NUM_FRAMES = 4
FRAME_SIZE = 96
REGION = 14
OBJECT_SIZE = 5
SPEED = 2
VERSION = 1

# Unit steps (dy, dx), in clockwise order so that the label of 4 directions is the rotation.
DIRECTION_STEPS = {"right": (0, 1), "down": (1, 0), "left": (0, -1), "up": (-1, 0)}
DEFAULT_DIRECTIONS = ("left", "right")

RelationData = collections.namedtuple(
    "RelationData",
    ["train_pattern", "eval_pattern", "num_classes", "class_names", "train_kwargs",
     "eval_kwargs"],
)
RelationData.__doc__ = """Where the relation-task shards are and how to read them.

train_kwargs / eval_kwargs: `train_dataset` / `eval_dataset` keyword arguments that fit the
clips (NUM_FRAMES frames of FRAME_SIZE x FRAME_SIZE, whole frame, no crop, no flip)."""

Clip = collections.namedtuple("Clip", ["frames", "label", "directions", "starts"])
Clip.__doc__ = """One generated clip.

frames: uint8 (NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3); label: int; directions: (d_a, d_b)
direction names of the top-left and bottom-right object; starts: ((y, x), (y, x)) top-left
pixel of each object in frame 0 (absolute frame coordinates)."""


def class_names(directions=DEFAULT_DIRECTIONS):
    """Names of the relative directions: "same", "opposite" for two directions; "same",
    "rot90", "opposite", "rot270" for the four clockwise ones."""
    n = len(directions)
    if n == 2:
        return ["same", "opposite"]
    return ["same" if k == 0 else "opposite" if 2 * k == n else f"rot{360 * k // n}"
            for k in range(n)]


def region_origins(frame_size=FRAME_SIZE, region=REGION):
    """Top-left pixel of the two corner regions: (0, 0) and the bottom-right one."""
    return (0, 0), (frame_size - region, frame_size - region)


def _check_directions(directions):
    directions = tuple(directions)
    unknown = [d for d in directions if d not in DIRECTION_STEPS]
    if len(directions) < 2 or unknown or len(set(directions)) != len(directions):
        raise ValueError(f"`directions` must be >= 2 distinct names of {sorted(DIRECTION_STEPS)}."
                         f" Received: {directions}")
    return directions


def _start_in_region(rng, origin, step, region, object_size, travel):
    """Frame-0 top-left of an object that stays inside its region for the whole clip."""
    start = []
    for axis in range(2):
        low, high = 0, region - object_size
        if step[axis] > 0:
            high -= travel
        elif step[axis] < 0:
            low += travel
        if high < low:
            raise ValueError("The region is too small for the object's motion.")
        start.append(origin[axis] + int(rng.integers(low, high + 1)))
    return tuple(start)


def render(starts, directions, rng, *, num_frames=NUM_FRAMES, frame_size=FRAME_SIZE,
           object_size=OBJECT_SIZE, speed=SPEED, noise=0.05):
    """Frames uint8 (num_frames, frame_size, frame_size, 3) of objects moving from `starts`."""
    frames = np.empty((num_frames, frame_size, frame_size, 3), np.uint8)
    tints = rng.uniform(0.6, 1.0, size=(len(starts), 3))
    for t in range(num_frames):
        image = 0.1 + rng.normal(0.0, noise, size=(frame_size, frame_size, 1))
        image = np.repeat(image, 3, axis=-1)
        for (y, x), name, tint in zip(starts, directions, tints, strict=True):
            dy, dx = DIRECTION_STEPS[name]
            y, x = y + dy * speed * t, x + dx * speed * t
            image[y:y + object_size, x:x + object_size] = 0.1 + 0.85 * tint
        frames[t] = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    return frames


def sample_clip(rng, *, directions=DEFAULT_DIRECTIONS, label=None, num_frames=NUM_FRAMES,
                frame_size=FRAME_SIZE, region=REGION, object_size=OBJECT_SIZE, speed=SPEED):
    """One clip: label uniform (or given), d_a uniform, d_b = d_a shifted by the label."""
    directions = _check_directions(directions)
    n = len(directions)
    label = int(rng.integers(n)) if label is None else int(label)
    first = int(rng.integers(n))
    names = (directions[first], directions[(first + label) % n])
    travel = speed * (num_frames - 1)
    starts = tuple(
        _start_in_region(rng, origin, DIRECTION_STEPS[name], region, object_size, travel)
        for origin, name in zip(region_origins(frame_size, region), names, strict=True))
    frames = render(starts, names, rng, num_frames=num_frames, frame_size=frame_size,
                    object_size=object_size, speed=speed)
    return Clip(frames, label, names, starts)


def pair_label(clip, directions=DEFAULT_DIRECTIONS):
    """The pretext label of a clip: the pair (d_a, d_b) as `n * index(d_a) + index(d_b)`.

    Unlike the relation, this label is additive over the two objects (a class logit
    A_i(object a) + B_j(object b) expresses it), so global average pooling + a linear
    classifier over local features can learn it: it trains direction features in every row.
    """
    index = {name: i for i, name in enumerate(directions)}
    return len(directions) * index[clip.directions[0]] + index[clip.directions[1]]


def sample_batch(rng, batch_size, *, pretext=False, directions=DEFAULT_DIRECTIONS):
    """`batch_size` fresh clips: (frames uint8 (B, NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3),
    labels int32 (B,)), relation labels (uniform), or the pair labels with `pretext`."""
    clips = [sample_clip(rng, directions=directions) for _ in range(batch_size)]
    labels = [pair_label(c, directions) if pretext else c.label for c in clips]
    return np.stack([c.frames for c in clips]), np.asarray(labels, np.int32)


def generate(num_clips, seed, *, directions=DEFAULT_DIRECTIONS, **kwargs):
    """`num_clips` clips with balanced labels (each label num_clips / K times, shuffled)."""
    rng = np.random.default_rng(seed)
    n = len(_check_directions(directions))
    labels = rng.permutation(np.arange(num_clips) % n)
    return [sample_clip(rng, directions=directions, label=y, **kwargs) for y in labels]


def build_relation_dataset(cache_dir, *, train_size=1024, eval_size=256, num_shards=4,
                           directions=DEFAULT_DIRECTIONS, seed=0):
    """Generates (once) and returns the relation task's train / eval shards.

    Returns:
        RelationData(train_pattern, eval_pattern, num_classes, class_names, train_kwargs,
        eval_kwargs).
    """
    cache_dir = os.fspath(cache_dir)
    directions = _check_directions(directions)
    names = class_names(directions)
    config = {"version": VERSION, "train_size": train_size, "eval_size": eval_size,
              "num_shards": num_shards, "directions": list(directions), "seed": seed,
              "frames": NUM_FRAMES, "frame_size": FRAME_SIZE, "region": REGION}
    marker = os.path.join(cache_dir, "relation.json")
    data = RelationData(
        train_pattern=os.path.join(cache_dir, "train-*-of-*.tfrecord"),
        eval_pattern=os.path.join(cache_dir, "eval-*-of-*.tfrecord"),
        num_classes=len(names),
        class_names=names,
        train_kwargs={"model": "3d", "num_frames": NUM_FRAMES,
                      "resize": (FRAME_SIZE, FRAME_SIZE), "crop_size": FRAME_SIZE,
                      "flip": False},
        eval_kwargs={"model": "3d", "num_frames": NUM_FRAMES, "num_clips": 1,
                     "short_side": FRAME_SIZE},
    )
    if demo.cache_is_current(cache_dir, marker, config):
        return data
    os.makedirs(cache_dir, exist_ok=True)
    for split, size, split_seed in (("train", train_size, 2 * seed + 1),
                                    ("eval", eval_size, 2 * seed + 2)):
        clips = generate(size, split_seed, directions=directions)
        items = [(c.frames, c.label, names[c.label], f"{split}_{i:05d}")
                 for i, c in enumerate(clips)]
        summary = builder.build_from_frames(items, cache_dir, prefix=split,
                                            num_shards=num_shards)
        if summary.skipped:
            raise RuntimeError(f"Relation task build failed: {summary}")
    class_names_file.write(cache_dir, names)
    files.write_json(marker, {"config": config, "class_names": names})
    return data
