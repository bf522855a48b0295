"""tf.data input pipelines for LGD-3D / LGD-2D training and evaluation (Sec. 5.2).

Records are read from shards with interleave, parsed, and the clip's frame indices drawn
FIRST, so only the JPEGs the clip uses are decoded; then resize, crop, flip, batch, prefetch.
Randomness is stateless and seeded per record, so `deterministic=True` gives the same
batches on every run. A bad record (no frames, missing or out-of-range label, broken JPEG)
raises an error naming its file and record index, or with `ignore_errors=True` is skipped,
logged and counted in an optional `SkipCounter`.
"""

import numpy as np
import tensorflow as tf

from lgd_tf.data import flow as flow_lib
from lgd_tf.data import sampling, schema

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_TRAIN_SIZES = {"3d": ((120, 160), 112), "2d": ((240, 320), 224)}
DEFAULT_EVAL = {"3d": {"num_clips": 15, "short_side": 120},
                "2d": {"num_clips": 10, "short_side": 240}}
CHANNELS = {"rgb": 3, "flow": 2}
_TAIL = 32  # bytes searched for the JPEG end-of-image marker
_END = b"\x00lgd_tf.data end of shard\x00"  # appended after each shard's last record


class SkipCounter:
    """Counts records skipped by `ignore_errors=True` (read `.count` after iterating)."""

    def __init__(self):
        self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_records")

    @property
    def count(self):
        return int(self.variable.numpy())


def list_files(file_pattern):
    """Sorted files matching a glob, a comma-separated list of globs, or a list of them."""
    patterns = file_pattern.split(",") if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p.strip())})
    if not files:
        raise ValueError(f"No file matches `file_pattern`. Received: file_pattern={file_pattern!r}")
    return files


def _records(files, *, training, seed, deterministic, input_context):
    """(serialized, filename, record_index, bytes_before, file_size, truncated) from shards.

    A shard that is truncated or corrupt yields its readable records and then one element
    with `truncated` True (found by counting the bytes read against the file size), so the
    damage is reported with the file's name or skipped like any bad record.
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

    def read(filename, size):
        records = tf.data.TFRecordDataset(filename, buffer_size=1 << 20).ignore_errors()
        records = records.concatenate(tf.data.Dataset.from_tensors(tf.constant(_END)))

        def step(state, record):
            consumed, count = state
            is_end = tf.equal(record, _END)
            # TFRecord framing: 8-byte length, 4-byte length CRC, data, 4-byte data CRC.
            grown = consumed + tf.cast(tf.strings.length(record), tf.int64) + 16
            # The end marker itself is no record: it parses as an empty one.
            record = tf.where(is_end, tf.constant(b""), record)
            return (grown, count + 1), (record, filename, count, consumed, size, is_end)

        scanned = records.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), step)
        # Keep the end marker only if the bytes read fall short of the file: truncated.
        return scanned.filter(lambda r, f, i, consumed, size, is_end: tf.logical_or(
            tf.logical_not(is_end), tf.not_equal(consumed, size)))

    cycle = min(len(files), 8)
    parallel = {"num_parallel_calls": AUTOTUNE, "deterministic": deterministic or None}
    ds = ds.interleave(read, cycle_length=cycle, block_length=1, **(parallel if cycle > 1 else {}))
    if shard_records:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds


def _check_record(parsed, num_classes, source):
    """(ok, reason_fn) for the checks that need no decoding; reason_fn() builds the text
    (only ever run for a bad record: string formatting per record costs throughput)."""
    _, count, consumed, size, truncated = source
    n = tf.size(parsed["frames"])
    label = parsed["label"]
    max_label = num_classes if num_classes is not None else tf.int64.max
    ok = tf.logical_not(tf.reduce_any(tf.stack([
        truncated, n == 0, label < 0, label >= max_label])))

    def reason_fn():
        checks = [
            (n == 0, tf.constant("no frames")),
            (label == schema.MISSING_LABEL, tf.constant(f"missing `{schema.LABEL_INDEX_KEY}`")),
            (tf.logical_and(label < 0, label != schema.MISSING_LABEL),
             tf.strings.format("negative label {}", label)),
            (label >= max_label,
             tf.strings.format("label {} >= num_classes " + str(num_classes), label)),
        ]
        bad = tf.stack([c for c, _ in checks])
        reason = tf.strings.reduce_join(
            tf.boolean_mask(tf.stack([r for _, r in checks]), bad), separator="; ")
        file_error = tf.strings.join([
            "shard truncated or corrupt: only ", tf.strings.as_string(count), " records (",
            tf.strings.as_string(consumed), " of ", tf.strings.as_string(size),
            " bytes) readable"])
        return tf.where(truncated, file_error, reason)

    return ok, reason_fn


def _jpegs_ok(jpegs):
    """True if every string starts with the JPEG SOI marker and ends with an EOI marker."""
    soi = tf.reduce_all(tf.equal(tf.strings.substr(jpegs, 0, 2), b"\xff\xd8"))
    length = tf.strings.length(jpegs)
    tail = tf.strings.substr(jpegs, tf.maximum(length - _TAIL, 0), tf.fill(tf.shape(length), _TAIL))
    raw = tf.io.decode_raw(tail, tf.uint8, fixed_length=_TAIL)
    eoi = tf.reduce_any(tf.logical_and(tf.equal(raw[:, :-1], 0xFF), tf.equal(raw[:, 1:], 0xD9)),
                        axis=1)
    return tf.logical_and(soi, tf.reduce_all(eoi))


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


def _blank_jpeg():
    from lgd_tf.data import writer

    return tf.constant(writer.encode_jpeg(np.zeros((16, 16, 3), np.uint8)))


def _guarded(parsed, source, num_classes, indices_fn, build_fn):
    """Runs sample -> check JPEGs -> decode -> build; returns (output, ok, message_fn).

    `indices_fn(n)` gives the frame indices (any shape); each distinct frame is decoded once:
    `build_fn(jpegs, position)` gets the distinct frames' JPEGs and, in the indices' shape,
    where each index sits among them. When a check fails the output is made from blank
    frames and `ok` is False (raised on by `_emit` or dropped by `_skip`).
    """
    filename, index = source[:2]
    ok, reason_fn = _check_record(parsed, num_classes, source)
    n = tf.size(parsed["frames"])
    indices = indices_fn(tf.maximum(n, 1))
    flat = tf.reshape(indices, [-1])
    unique, position = tf.unique(flat)
    jpegs = tf.cond(n > 0, lambda: tf.gather(parsed["frames"], unique),
                    lambda: tf.fill(tf.shape(unique), ""))
    jpeg_ok = tf.logical_or(tf.logical_not(ok), _jpegs_ok(jpegs))
    record_ok = ok
    ok = tf.logical_and(ok, jpeg_ok)
    # A bad record goes through the same ops on a blank frame (cheaper than a tf.cond).
    blank = tf.fill(tf.shape(jpegs), _blank_jpeg())
    jpegs = tf.where(ok, jpegs, blank)
    # Frames of one clip must share a size (headers only; decoding would fail unnamed).
    shapes = tf.map_fn(tf.io.extract_jpeg_shape, jpegs, fn_output_signature=tf.int32)
    same_size = tf.reduce_all(tf.equal(shapes[:, :2], shapes[:1, :2]))
    sizes_ok = tf.logical_or(tf.logical_not(ok), same_size)
    ok = tf.logical_and(ok, sizes_ok)
    jpegs = tf.where(ok, jpegs, blank)
    output = build_fn(jpegs, tf.reshape(position, tf.shape(indices)))

    def message_fn():
        reason = tf.cond(
            record_ok,
            lambda: tf.where(jpeg_ok, tf.constant("frames of different sizes"),
                             tf.constant("a frame is not a valid JPEG")),
            reason_fn)
        return tf.strings.join([
            "lgd_tf.data: bad record ", tf.strings.as_string(index), " of ", filename,
            " (media_id '", parsed["media_id"], "'): ", reason])

    return output, ok, message_fn


def _emit(outputs, ok, message_fn, ignore_errors):
    """Element function tail: raise on a bad record, or pass `ok` and its message to `_skip`."""
    if ignore_errors:
        return (*outputs, ok, tf.cond(ok, lambda: tf.constant(""), message_fn))

    def fail():
        with tf.control_dependencies([tf.debugging.Assert(False, [message_fn()])]):
            return tf.constant(False)

    checked = tf.cond(ok, lambda: tf.constant(True), fail)
    with tf.control_dependencies([checked]):
        return tuple(tf.identity(x) for x in outputs)


def _skip(ds, ignore_errors, skip_counter):
    """With ignore_errors: drops (logs, counts) records whose `ok` flag is False.

    A failure no check foresaw (a JPEG with valid markers but damaged data, a record that is
    not a SequenceExample) is skipped by `Dataset.ignore_errors`: logged by TensorFlow, not
    counted.
    """
    if not ignore_errors:
        return ds
    ds = ds.ignore_errors(log_warning=True)

    def keep(ok, message):
        def log_and_count():
            ops = [tf.print(message, "(skipped)")]
            if skip_counter is not None:
                ops.append(skip_counter.variable.assign_add(1))
            with tf.control_dependencies(ops):
                return tf.constant(False)
        return tf.cond(ok, lambda: tf.constant(True), log_and_count)

    ds = ds.filter(lambda *e: keep(e[-2], e[-1]))
    return ds.map(lambda *e: e[:-2])


def _flip(clip, modality):
    return flow_lib.flip_flow(clip) if modality == "flow" else tf.reverse(clip, axis=[-2])


def _check_common(model, modality, short_video, batch_size):
    sampling.check_choice("model", model, sampling.MODELS)
    sampling.check_choice("modality", modality, schema.MODALITIES)
    sampling.check_choice("short_video", short_video, sampling.SHORT_VIDEO_MODES)
    if int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")


def train_dataset(file_pattern, batch_size, *, model="3d", modality="rgb", num_frames=16,
                  temporal_stride=1, num_segments=3, resize=None, crop_size=None, flip=True,
                  short_video="loop", num_classes=None, ignore_errors=False,
                  deterministic=False, shuffle_buffer=128, seed=None, input_context=None,
                  skip_counter=None):
    """Training clips, repeated forever: `(clips, labels)` (Sec. 5.2).

    3D: `num_frames` consecutive frames (stride `temporal_stride`) from a random start; 2D:
    TSN, one random frame from each of `num_segments` segments. Frames resized to `resize`
    (default (120, 160) 3D / (240, 320) 2D), one random `crop_size` square crop (112 / 224)
    and one random horizontal flip for the whole clip (flow: x negated).

    Args:
        file_pattern: glob(s) of TFRecord shards of SequenceExamples (`schema`).
        batch_size: global batch; with `input_context` each replica gets its share.
        shuffle_buffer: records (whole videos) held for shuffling.
        skip_counter: optional `SkipCounter` counting records dropped by `ignore_errors`.

    Returns:
        Dataset of clips uint8 (B, T, crop, crop, C) (C = 3 rgb, 2 flow) and labels int32 (B,).
    """
    _check_common(model, modality, short_video, batch_size)
    default_resize, default_crop = DEFAULT_TRAIN_SIZES[model]
    resize = tuple(resize or default_resize)
    crop_size = int(crop_size or default_crop)
    if crop_size > min(resize):
        raise ValueError(f"`crop_size` must fit in `resize`. Received: crop_size={crop_size}, "
                         f"resize={resize}")
    length = num_frames if model == "3d" else num_segments
    if int(length) < 1 or int(temporal_stride) < 1:
        raise ValueError(f"num_frames, num_segments and temporal_stride must be >= 1. Received: "
                         f"{num_frames}, {num_segments}, {temporal_stride}")
    if deterministic and seed is None:
        seed = 0
    channels = CHANNELS[modality]
    per_replica = (input_context.get_per_replica_batch_size(batch_size)
                   if input_context is not None else batch_size)
    files = list_files(file_pattern)

    ds = _records(files, training=True, seed=seed, deterministic=deterministic,
                  input_context=input_context)
    if shuffle_buffer and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    # Per-clip stateless seeds (base, position in the stream): reproducible with a seed,
    # different for every clip, whatever order the parallel map runs in.
    base = seed if seed is not None else int(np.random.default_rng().integers(1 << 31))
    ds = ds.enumerate()

    def make_clip(position_in_stream, element):
        serialized, *source = element
        parsed = schema.parse_record(serialized, modality)
        s_time, s_crop, s_flip = (tf.stack([tf.constant(base + k, tf.int64), position_in_stream])
                                  for k in range(3))

        def indices_fn(n):
            if model == "3d":
                return sampling.random_clip_indices(n, num_frames, temporal_stride, short_video,
                                                    s_time)
            return sampling.random_tsn_indices(n, num_segments, short_video, s_time)

        def build(jpegs, position):
            limits = tf.constant([resize[0] - crop_size + 1, resize[1] - crop_size + 1])
            offset = tf.random.stateless_uniform([2], s_crop, 0, 1 << 30, dtype=tf.int32) % limits
            frames = _decode(jpegs, channels, dct_method="INTEGER_FAST")
            y, x, h, w = tf.unstack(sampling.source_window(tf.shape(frames)[1:3], resize, offset,
                                                           crop_size))
            frames = sampling.resize_frames(frames[:, y:y + h, x:x + w], (crop_size, crop_size),
                                            skip_same=False)
            clip = tf.gather(frames, position)
            if flip:
                coin = tf.random.stateless_uniform([], s_flip, 0.0, 1.0)
                clip = tf.cond(coin < 0.5, lambda: _flip(clip, modality), lambda: clip)
            return tf.ensure_shape(clip, [length, crop_size, crop_size, channels])

        clip, ok, message_fn = _guarded(parsed, source, num_classes, indices_fn, build)
        return _emit((clip, tf.cast(parsed["label"], tf.int32)), ok, message_fn, ignore_errors)

    ds = ds.map(make_clip, num_parallel_calls=AUTOTUNE,
                deterministic=True if deterministic else None)
    ds = _skip(ds, ignore_errors, skip_counter)
    ds = ds.batch(per_replica, drop_remainder=True)
    ds = ds.prefetch(AUTOTUNE)
    return _with_options(ds, deterministic)


def eval_dataset(file_pattern, batch_size=1, *, model="3d", modality="rgb", num_clips=None,
                 num_crops=1, num_frames=16, num_segments=3, short_side=None,
                 temporal_stride=1, short_video="loop", num_classes=None, ignore_errors=False,
                 input_context=None, skip_counter=None):
    """Every video once, in file order: `(views, labels, media_ids)` (Sec. 5.2).

    views uint8 (B, V, T, H, W, C), V = num_clips * num_crops (default 15 clips 3D / 10 frame
    tuples 2D), all views of a video together so scores average per video; frames resized to
    shorter side `short_side` (120 / 240), whole frame (num_crops=1) or 3 square crops. With
    whole frames, batch_size > 1 needs videos of one frame size.
    """
    _check_common(model, modality, short_video, batch_size)
    if num_crops not in (1, 3):
        raise ValueError(f"`num_crops` must be 1 or 3. Received: num_crops={num_crops}")
    num_clips = int(num_clips or DEFAULT_EVAL[model]["num_clips"])
    short_side = int(short_side or DEFAULT_EVAL[model]["short_side"])
    channels = CHANNELS[modality]
    length = num_frames if model == "3d" else num_segments
    per_replica = (input_context.get_per_replica_batch_size(batch_size)
                   if input_context is not None else batch_size)
    ds = _records(list_files(file_pattern), training=False, seed=None, deterministic=True,
                  input_context=input_context)

    def make_views(serialized, *source):
        parsed = schema.parse_record(serialized, modality)

        def indices_fn(n):
            return sampling.eval_indices(n, model=model, num_frames=num_frames,
                                         temporal_stride=temporal_stride,
                                         num_segments=num_segments, num_clips=num_clips,
                                         short_video=short_video)

        def build(jpegs, position):
            frames = sampling.resize_shorter_side(_decode(jpegs, channels), short_side)
            return sampling.views_from_frames(frames, position, num_crops)

        views, ok, message = _guarded(parsed, source, num_classes, indices_fn, build)
        views = tf.ensure_shape(views, [num_clips * num_crops, length, None, None, channels])
        return _emit((views, tf.cast(parsed["label"], tf.int32), parsed["media_id"]), ok, message,
                     ignore_errors)

    ds = ds.map(make_views, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = _skip(ds, ignore_errors, skip_counter)
    ds = ds.batch(per_replica).prefetch(AUTOTUNE)
    return _with_options(ds, True)


def _with_options(ds, deterministic):
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.FILE)
    return ds.with_options(options)
