"""tf.data input pipelines for LGD-3D / LGD-2D training and evaluation (Sec. 5.2).

Records are read from shards with interleave (`reader`: file checks, parsing, bad records),
and the clip's frame indices drawn FIRST, so only the JPEGs the clip uses are decoded; then
resize, crop, flip, batch, prefetch. Randomness is stateless and seeded per record, so
`deterministic=True` gives the same batches on every run. A bad record raises an error naming
its file and record index, or with `ignore_errors=True` is skipped, logged and counted in an
optional `SkipCounter`; after `max_consecutive_skips` bad records in a row the pipeline stops
(every record is bad?).
"""

import numpy as np
import tensorflow as tf

from lgd_tf.data import flow as flow_lib
from lgd_tf.data import reader, sampling, schema
from lgd_tf.data.reader import (  # noqa: F401  (their home before the reader was split off)
    SkipCounter,
    check_tfrecord_files,
    list_files,
    tfrecord_problem,
)

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_TRAIN_SIZES = {"3d": ((120, 160), 112), "2d": ((240, 320), 224)}
DEFAULT_EVAL = {"3d": {"num_clips": 15, "short_side": 120},
                "2d": {"num_clips": 10, "short_side": 240}}
CHANNELS = {"rgb": 3, "flow": 2}


def _records(files, *, training, seed, deterministic, input_context):
    """The records of `files` (`reader.read_shard` elements), read 8 shards at a time.

    With several input pipelines (`input_context`) each reads its share of the files, or of
    the records when there are fewer files than pipelines. Training: files shuffled, repeated.
    """
    sizes = [tf.io.gfile.stat(f).length for f in files]
    ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(sizes, tf.int64)))
    shard_records = False
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) >= input_context.num_input_pipelines:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        else:
            shard_records = True
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    cycle = min(len(files), 8)
    parallel = {"num_parallel_calls": AUTOTUNE, "deterministic": deterministic or None}
    ds = ds.interleave(reader.read_shard, cycle_length=cycle, block_length=1,
                       **(parallel if cycle > 1 else {}))
    if shard_records:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds


def _decode(jpegs, channels, window=None, dct_method=""):
    """JPEG strings (K,) -> uint8 (K, H, W, channels) (flow: channels 0 and 1 of the image).

    window: optional (y, x, h, w): decode only that part of each frame (libjpeg skips the
    rest of the IDCT and colour conversion). dct_method: "" (libjpeg's default, as
    evaluation and serving use) or "INTEGER_FAST" (training: faster, differences of a level
    or two).
    """
    if window is None:
        decode = lambda j: tf.io.decode_jpeg(j, channels=3, dct_method=dct_method)
    else:
        decode = lambda j: tf.io.decode_and_crop_jpeg(j, window, channels=3,
                                                      dct_method=dct_method)
    frames = tf.map_fn(decode, jpegs,
                       fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
                       parallel_iterations=16)
    return frames[..., :channels]


def _flip(clip, modality):
    return flow_lib.flip_flow(clip) if modality == "flow" else tf.reverse(clip, axis=[-2])


def _check_common(model, modality, short_video, batch_size):
    sampling.check_choice("model", model, sampling.MODELS)
    sampling.check_choice("modality", modality, schema.MODALITIES)
    sampling.check_choice("short_video", short_video, sampling.SHORT_VIDEO_MODES)
    if int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")


def _check_class_names(class_names, num_classes):
    if class_names is None:
        return None
    class_names = [str(c) for c in class_names]
    if not class_names or (num_classes is not None and len(class_names) != int(num_classes)):
        raise ValueError(f"`class_names` must hold num_classes names. Received: "
                         f"{len(class_names)} names, num_classes={num_classes}")
    return class_names


def _check_skips(max_consecutive_skips):
    if max_consecutive_skips is not None and int(max_consecutive_skips) < 1:
        raise ValueError(f"`max_consecutive_skips` must be >= 1 or None. Received: "
                         f"max_consecutive_skips={max_consecutive_skips}")


def _per_replica(batch_size, input_context):
    return (input_context.get_per_replica_batch_size(batch_size)
            if input_context is not None else batch_size)


def _train_sizes(model, resize, crop_size):
    """(resize, crop_size) with the model's defaults; a crop must fit in the resized frames."""
    default_resize, default_crop = DEFAULT_TRAIN_SIZES[model]
    resize = tuple(resize or default_resize)
    crop_size = int(crop_size or default_crop)
    if crop_size > min(resize):
        raise ValueError(f"`crop_size` must fit in `resize`. Received: crop_size={crop_size}, "
                         f"resize={resize}")
    return resize, crop_size


def _clip_length(model, num_frames, num_segments, temporal_stride):
    """Frames per clip: `num_frames` (3D) or one per TSN segment (2D)."""
    length = num_frames if model == "3d" else num_segments
    if int(length) < 1 or int(temporal_stride) < 1:
        raise ValueError(f"num_frames, num_segments and temporal_stride must be >= 1. Received: "
                         f"{num_frames}, {num_segments}, {temporal_stride}")
    return length


def train_dataset(file_pattern, batch_size, *, model="3d", modality="rgb", num_frames=16,
                  temporal_stride=1, num_segments=3, resize=None, crop_size=None, flip=True,
                  short_video="loop", num_classes=None, class_names=None, ignore_errors=False,
                  deterministic=False, shuffle_buffer=128, seed=None, input_context=None,
                  skip_counter=None, max_consecutive_skips=1000):
    """Training clips, repeated forever: `(clips, labels)` (Sec. 5.2).

    3D: `num_frames` consecutive frames (stride `temporal_stride`) from a random start; 2D:
    TSN, one random frame from each of `num_segments` segments. Frames resized to `resize`
    (default (120, 160) 3D / (240, 320) 2D), one random `crop_size` square crop (112 / 224)
    and one random horizontal flip for the whole clip (flow: x negated).

    Args:
        file_pattern: glob(s) of TFRecord shards of SequenceExamples (`schema`); a folder
            or a file that is not a TFRecord file is refused (ValueError naming it).
        batch_size: global batch; with `input_context` each replica gets its share.
        num_classes: labels must be in [0, num_classes).
        class_names: optional K names: a record whose `clip/label/string` is set and is not
            `class_names[clip/label/index]` is bad (built with another class list).
        ignore_errors: skip bad records (printed on stderr) instead of raising.
        shuffle_buffer: records (whole videos) held for shuffling.
        skip_counter: optional `SkipCounter` counting records dropped by `ignore_errors`.
        max_consecutive_skips: with `ignore_errors`, this many bad records in a row stop the
            pipeline with one error naming the first of them (None: never; the repeated
            stream of a data set without a good record would skip forever).

    Returns:
        Dataset of clips uint8 (B, T, crop, crop, C) (C = 3 rgb, 2 flow) and labels int32 (B,).
    """
    _check_common(model, modality, short_video, batch_size)
    _check_skips(max_consecutive_skips)
    class_names = _check_class_names(class_names, num_classes)
    resize, crop_size = _train_sizes(model, resize, crop_size)
    _clip_length(model, num_frames, num_segments, temporal_stride)
    if deterministic and seed is None:
        seed = 0
    per_replica = _per_replica(batch_size, input_context)
    files = list_files(file_pattern)

    ds = _records(files, training=True, seed=seed, deterministic=deterministic,
                  input_context=input_context)
    if shuffle_buffer and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    # Per-clip stateless seeds (base, position in the stream): reproducible with a seed,
    # different for every clip, whatever order the parallel map runs in.
    base = seed if seed is not None else int(np.random.default_rng().integers(1 << 31))
    make_clip = _train_clip_fn(
        model=model, modality=modality, num_frames=num_frames, temporal_stride=temporal_stride,
        num_segments=num_segments, short_video=short_video, resize=resize, crop_size=crop_size,
        flip=flip, num_classes=num_classes, class_names=class_names, base_seed=base,
        ignore_errors=ignore_errors)
    ds = ds.enumerate().map(make_clip, num_parallel_calls=AUTOTUNE,
                            deterministic=True if deterministic else None)
    ds = reader.skip_bad(ds, ignore_errors, skip_counter, max_consecutive_skips)
    ds = ds.batch(per_replica, drop_remainder=True)
    ds = ds.prefetch(AUTOTUNE)
    return _with_options(ds, deterministic)


def _train_clip_fn(*, model, modality, num_frames, temporal_stride, num_segments, short_video,
                   resize, crop_size, flip, num_classes, class_names, base_seed, ignore_errors):
    """`train_dataset`'s map: (position_in_stream, record) -> (clip, label), plus (ok, message)
    with `ignore_errors`. The clip's time, crop and flip draw from the stateless seeds
    (base_seed + 0, 1, 2; position_in_stream)."""
    length = _clip_length(model, num_frames, num_segments, temporal_stride)
    shape = [length, crop_size, crop_size, CHANNELS[modality]]

    def build_clip(serialized, *rest):
        *source, position_in_stream = rest
        parsed = reader.parse(serialized, modality, class_names is not None)
        s_time, s_crop, s_flip = (tf.stack([tf.constant(base_seed + k, tf.int64),
                                            position_in_stream]) for k in range(3))

        def indices_fn(n):
            if model == "3d":
                return sampling.random_clip_indices(n, num_frames, temporal_stride, short_video,
                                                    s_time)
            return sampling.random_tsn_indices(n, num_segments, short_video, s_time)

        def build(jpegs, position):
            clip = _train_clip(jpegs, position, resize, crop_size, modality, s_crop,
                               s_flip if flip else None)
            return tf.ensure_shape(clip, shape)

        clip, ok, message = reader.guarded_build(parsed, source, num_classes, class_names,
                                                 indices_fn, build)
        return clip, tf.cast(parsed["label"], tf.int32), ok, message

    blank = lambda: (tf.zeros(shape, tf.uint8), tf.constant(0, tf.int32))  # noqa: E731
    failed = reader.failed_record(blank, modality, class_names is not None)

    def make_clip(position_in_stream, element):
        clip, label, ok, message = reader.try_or(build_clip, (*element, position_in_stream),
                                                 failed)
        clip = tf.ensure_shape(clip, shape)
        return reader.emit((clip, label), ok, message, ignore_errors)

    return make_clip


def _train_clip(jpegs, position, resize, crop_size, modality, crop_seed, flip_seed):
    """Frames resized to `resize`, one random `crop_size` square crop and (with a flip_seed)
    one random horizontal flip for the whole clip; the clip gathered at `position`."""
    limits = tf.constant([resize[0] - crop_size + 1, resize[1] - crop_size + 1])
    offset = tf.random.stateless_uniform([2], crop_seed, 0, 1 << 30, dtype=tf.int32) % limits
    frames = _decode(jpegs, CHANNELS[modality], dct_method="INTEGER_FAST")
    y, x, h, w = tf.unstack(sampling.source_window(tf.shape(frames)[1:3], resize, offset,
                                                   crop_size))
    frames = sampling.resize_frames(frames[:, y:y + h, x:x + w], (crop_size, crop_size),
                                    skip_same=False)
    clip = tf.gather(frames, position)
    if flip_seed is not None:
        coin = tf.random.stateless_uniform([], flip_seed, 0.0, 1.0)
        clip = tf.cond(coin < 0.5, lambda: _flip(clip, modality), lambda: clip)
    return clip


def _size_key(views, *rest):
    """Frame size (H, W) of a video's views as one int64 (the group of `group_by_window`)."""
    del rest
    shape = tf.cast(tf.shape(views), tf.int64)
    return shape[2] * (1 << 20) + shape[3]


def eval_dataset(file_pattern, batch_size=1, *, model="3d", modality="rgb", num_clips=None,
                 num_crops=1, num_frames=16, num_segments=3, short_side=None,
                 temporal_stride=1, short_video="loop", num_classes=None, class_names=None,
                 ignore_errors=False, input_context=None, skip_counter=None,
                 max_consecutive_skips=1000):
    """Every video once: `(views, labels, media_ids)` (Sec. 5.2).

    views uint8 (B, V, T, H, W, C), V = num_clips * num_crops (default 15 clips 3D / 10 frame
    tuples 2D), all views of a video together so scores average per video; frames resized to
    shorter side `short_side` (120 / 240), whole frame (num_crops=1) or 3 square crops.
    Videos come in file order; with whole frames and batch_size > 1 videos of different frame
    sizes (aspect ratios) are grouped by size, each batch holds one size (nothing is padded:
    every video's views are those of batch_size=1), so the order changes and up to
    batch_size videos per distinct size are held at once. num_classes, class_names,
    ignore_errors, skip_counter, max_consecutive_skips: as in `train_dataset`.
    """
    _check_common(model, modality, short_video, batch_size)
    _check_skips(max_consecutive_skips)
    class_names = _check_class_names(class_names, num_classes)
    if num_crops not in (1, 3):
        raise ValueError(f"`num_crops` must be 1 or 3. Received: num_crops={num_crops}")
    num_clips = int(num_clips or DEFAULT_EVAL[model]["num_clips"])
    short_side = int(short_side or DEFAULT_EVAL[model]["short_side"])
    per_replica = _per_replica(batch_size, input_context)
    ds = _records(list_files(file_pattern), training=False, seed=None, deterministic=True,
                  input_context=input_context)
    make_views = _eval_views_fn(
        model=model, modality=modality, num_clips=num_clips, num_crops=num_crops,
        num_frames=num_frames, num_segments=num_segments, short_side=short_side,
        temporal_stride=temporal_stride, short_video=short_video, num_classes=num_classes,
        class_names=class_names, ignore_errors=ignore_errors)
    ds = ds.map(make_views, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = reader.skip_bad(ds, ignore_errors, skip_counter, max_consecutive_skips)
    if num_crops == 1 and per_replica > 1:
        ds = ds.group_by_window(_size_key, lambda key, window: window.batch(per_replica),
                                window_size=per_replica)
    else:
        ds = ds.batch(per_replica)
    return _with_options(ds.prefetch(AUTOTUNE), True, autotune=False)


def _eval_views_fn(*, model, modality, num_clips, num_crops, num_frames, num_segments,
                   short_side, temporal_stride, short_video, num_classes, class_names,
                   ignore_errors):
    """`eval_dataset`'s map: record -> (views, label, media_id), plus (ok, message) with
    `ignore_errors`; views (num_clips * num_crops, T, H, W, C) (Sec. 5.2)."""
    channels = CHANNELS[modality]
    length = num_frames if model == "3d" else num_segments
    num_views = num_clips * num_crops

    def build_views(serialized, *source):
        parsed = reader.parse(serialized, modality, class_names is not None)

        def indices_fn(n):
            return sampling.eval_indices(n, model=model, num_frames=num_frames,
                                         temporal_stride=temporal_stride,
                                         num_segments=num_segments, num_clips=num_clips,
                                         short_video=short_video)

        def build(jpegs, position):
            frames = sampling.resize_shorter_side(_decode(jpegs, channels), short_side)
            return sampling.views_from_frames(frames, position, num_crops)

        views, ok, message = reader.guarded_build(parsed, source, num_classes, class_names,
                                                  indices_fn, build)
        return views, tf.cast(parsed["label"], tf.int32), parsed["media_id"], ok, message

    blank = lambda: (tf.zeros([num_views, length, 1, 1, channels], tf.uint8),  # noqa: E731
                     tf.constant(0, tf.int32), tf.constant(""))
    failed = reader.failed_record(blank, modality, class_names is not None)

    def make_views(*element):
        views, label, media_id, ok, message = reader.try_or(build_views, element, failed)
        views = tf.ensure_shape(views, [num_views, length, None, None, channels])
        return reader.emit((views, label, media_id), ok, message, ignore_errors)

    return make_views


def _with_options(ds, deterministic, autotune=True):
    """`autotune=False` for the eval pipeline: an evaluation ends by deleting its iterator,
    and with tf.data's autotuning on that deletion waits for the autotuner's thread, 2-17 s of
    idle process in some evaluations (1 in 4 to 1 in 8 measured, every evaluation during
    training included); the parallel map then runs on every core and the prefetch buffer
    tunes itself, at the same views/s."""
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    options.autotune.enabled = bool(autotune)
    # Checkpointing the iterator (fit_stage's checkpoint_input_pipeline) saves its position.
    # The ops it would refuse as stateful hold no state across records: `reader.try_or`'s
    # one-element datasets (DatasetToSingleElement) live within one record, and the
    # SkipCounter's variable is outside the iterator (its count is not part of the position).
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.FILE)
    return ds.with_options(options)
