"""tf.data input pipelines for LGD-3D / LGD-2D training and evaluation (Sec. 5.2).

Records are read from shards with interleave, parsed, and the clip's frame indices drawn
FIRST, so only the JPEGs the clip uses are decoded; then resize, crop, flip, batch, prefetch.
Randomness is stateless and seeded per record, so `deterministic=True` gives the same
batches on every run. A bad record (no frames, missing or out-of-range label, a label string
that is not `class_names[label]`, broken JPEG, a record that is not a SequenceExample or holds
a feature of another type) raises an error naming its file and record index, or with
`ignore_errors=True` is skipped, logged and counted in an optional `SkipCounter`; after
`max_consecutive_skips` bad records in a row the pipeline stops (every record is bad?).

Each record is built inside its own one-element dataset whose errors are caught
(`_try`), so a failure inside TensorFlow's parser or JPEG decoder is named and counted too.
"""

import concurrent.futures
import os
import struct

import numpy as np
import tensorflow as tf

from lgd_io.tfrecord import masked_crc32c as _masked_crc32c
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


def list_files(file_pattern, check=True):
    """Sorted files matching a glob, a comma-separated list of globs, or a list of them.

    check: refuse a folder and a file that is not a TFRecord file (its first record's length
    checksum does not match, e.g. `class_names.txt` matched by `data/*`), with a ValueError
    naming it.
    """
    patterns = file_pattern.split(",") if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p.strip())})
    if not files:
        raise ValueError(f"No file matches `file_pattern`. Received: file_pattern={file_pattern!r}")
    if check:
        check_tfrecord_files(files)
    return files


def tfrecord_problem(path):
    """None if `path` starts like a TFRecord file (or is empty), else why it is none.

    Reads the first 12 bytes: the first record's 8-byte length and its masked CRC-32C, which
    any other file (text, JSON, a video) fails.
    """
    if tf.io.gfile.isdir(path):
        return "is a folder"
    with tf.io.gfile.GFile(path, "rb") as f:
        header = f.read(12)
    if not header:
        return None
    if len(header) < 12:
        return f"is not a TFRecord file ({len(header)} bytes, shorter than a record header)"
    (crc,) = struct.unpack("<I", header[8:12])
    if _masked_crc32c(header[:8]) != crc:
        return "is not a TFRecord file (its first record's length checksum does not match)"
    return None


def check_tfrecord_files(files):
    """Raises ValueError naming the first of `files` that is a folder or not a TFRecord file."""
    files = list(files)
    if len(files) > 8:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            problems = list(pool.map(tfrecord_problem, files))
    else:
        problems = [tfrecord_problem(f) for f in files]
    for path, problem in zip(files, problems, strict=True):
        if problem:
            folder = path if problem == "is a folder" else os.path.dirname(path)
            raise ValueError(
                f"lgd_tf.data: {path} {problem}; give a glob of the TFRecord shards only, "
                f"e.g. {os.path.join(folder, 'train-*')!r}")


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


def _parse(serialized, modality, label_string=False):
    """`schema.parse_record`, plus "label_string" (`clip/label/string`) when asked."""
    context = {
        schema.LABEL_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64,
                                                      default_value=schema.MISSING_LABEL),
        schema.MEDIA_ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    if label_string:
        context[schema.LABEL_STRING_KEY] = tf.io.FixedLenFeature([], tf.string, default_value="")
    key = schema.frames_key(modality)
    sequence = {key: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)}
    ctx, seq = tf.io.parse_single_sequence_example(serialized, context_features=context,
                                                   sequence_features=sequence)
    parsed = {"frames": seq[key], "label": ctx[schema.LABEL_INDEX_KEY],
              "media_id": ctx[schema.MEDIA_ID_KEY]}
    if label_string:
        parsed["label_string"] = ctx[schema.LABEL_STRING_KEY]
    return parsed


def _try(fn, args, fallback_fn):
    """`fn(*args)`, or `fallback_fn(*args)` if a TensorFlow error is raised inside `fn`.

    Graph-safe: `fn` runs inside a one-element dataset whose errors are dropped
    (`ignore_errors`); the fallback runs only when nothing came out. Both must return the same
    structure and dtypes (shapes may differ: the result has the relaxed shape).
    """
    tried = tf.data.Dataset.from_tensors(args).map(fn).ignore_errors()
    fallback = tf.data.Dataset.from_tensors(args).map(fallback_fn)
    return tried.concatenate(fallback).take(1).get_single_element()


def _parses(serialized, context, sequence):
    """True if `serialized` parses with these features (errors caught)."""
    def parse(s):
        return tf.io.parse_single_sequence_example(s, context_features=context,
                                                   sequence_features=sequence), True

    def failed(s):
        del s
        return parse(tf.constant(b""))[0], False

    return _try(parse, serialized, failed)[1]


def _diagnose(serialized, modality, label_string):
    """Why a record failed inside the parser or the decoder (only run for such a record)."""
    def context(key, dtype):
        return {key: tf.io.FixedLenFeature([], dtype, default_value=tf.zeros([], dtype))}

    key = schema.frames_key(modality)
    checks = [
        (context("lgd_tf/none", tf.int64), {},
         "not a tf.train.SequenceExample (the record does not parse)"),
        (context(schema.LABEL_INDEX_KEY, tf.int64), {},
         f"`{schema.LABEL_INDEX_KEY}` is not one int64 value (stored with another type?)"),
        (context(schema.MEDIA_ID_KEY, tf.string), {},
         f"`{schema.MEDIA_ID_KEY}` is not one bytes value (stored with another type?)"),
        (context("lgd_tf/none", tf.int64),
         {key: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)},
         f"`{key}` is not a list of bytes (one JPEG per frame)"),
    ]
    if label_string:
        checks.append((context(schema.LABEL_STRING_KEY, tf.string), {},
                       f"`{schema.LABEL_STRING_KEY}` is not one bytes value"))
    failed = [tf.logical_not(_parses(serialized, c, q)) for c, q, _ in checks] + [True]
    reasons = [r for _, _, r in checks] + [
        "a frame does not decode as a JPEG (its data is damaged between intact markers)"]
    return tf.boolean_mask(tf.constant(reasons), tf.stack(failed))[0]


def _media_id(serialized):
    """The record's media id, or "" if it does not parse."""
    context = {schema.MEDIA_ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value="")}

    def parse(s):
        return tf.io.parse_single_sequence_example(s, context_features=context)[0][
            schema.MEDIA_ID_KEY]

    return _try(parse, serialized, lambda s: tf.constant(""))


def _message(filename, index, media_id, reason):
    return tf.strings.join(["lgd_tf.data: bad record ", tf.strings.as_string(index), " of ",
                            filename, " (media_id '", media_id, "'): ", reason])


def _failed_record(outputs, modality, label_string):
    """Fallback of `_try` for a record whose parsing or decoding raised: `outputs` (blank) with
    ok False and the message naming the record."""
    def fallback(serialized, filename, index, *rest):
        del rest
        reason = _diagnose(serialized, modality, label_string)
        return (*outputs(), tf.constant(False),
                _message(filename, index, _media_id(serialized), reason))

    return fallback


def _check_record(parsed, num_classes, class_names, source):
    """(ok, reason_fn) for the checks that need no decoding; reason_fn() builds the text
    (only ever run for a bad record: string formatting per record costs throughput)."""
    _, count, consumed, size, truncated = source
    n = tf.size(parsed["frames"])
    label = parsed["label"]
    max_label = num_classes if num_classes is not None else tf.int64.max
    conditions = [truncated, n == 0, label < 0, label >= max_label]
    if class_names is not None:
        names = tf.constant(list(class_names))
        in_range = tf.logical_and(label >= 0, label < len(class_names))
        expected = tf.gather(names, tf.clip_by_value(label, 0, len(class_names) - 1))
        given = parsed["label_string"]
        other_name = tf.reduce_all(tf.stack([in_range, tf.not_equal(given, ""),
                                             tf.not_equal(given, expected)]))
        conditions.append(other_name)
    ok = tf.logical_not(tf.reduce_any(tf.stack(conditions)))

    def reason_fn():
        checks = [
            (n == 0, tf.constant("no frames")),
            (label == schema.MISSING_LABEL, tf.constant(f"missing `{schema.LABEL_INDEX_KEY}`")),
            (tf.logical_and(label < 0, label != schema.MISSING_LABEL),
             tf.strings.format("negative label {}", label)),
            (label >= max_label,
             tf.strings.format("label {} >= num_classes " + str(num_classes), label)),
        ]
        if class_names is not None:
            checks.append((other_name, tf.strings.join([
                "label ", tf.strings.as_string(label), " is '", expected, "' in class_names "
                "but the record's `", schema.LABEL_STRING_KEY, "` is '", given,
                "' (records built with another class list? build them with these class "
                "names, or give the class names file they were built with)"])))
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


def _guarded(parsed, source, num_classes, class_names, indices_fn, build_fn):
    """Runs sample -> check JPEGs -> decode -> build; returns (output, ok, message).

    `indices_fn(n)` gives the frame indices (any shape); each distinct frame is decoded once:
    `build_fn(jpegs, position)` gets the distinct frames' JPEGs and, in the indices' shape,
    where each index sits among them. When a check fails the output is made from blank
    frames and `ok` is False (raised on by `_emit` or dropped by `_skip`); `message` is ""
    for a good record.
    """
    filename, index = source[:2]
    ok, reason_fn = _check_record(parsed, num_classes, class_names, source)
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
        return _message(filename, index, parsed["media_id"], reason)

    return output, ok, tf.cond(ok, lambda: tf.constant(""), message_fn)


def _emit(outputs, ok, message, ignore_errors):
    """Element function tail: raise on a bad record, or pass `ok` and its message to `_skip`."""
    if ignore_errors:
        return (*outputs, ok, message)

    def fail():
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.constant(False)

    checked = tf.cond(ok, lambda: tf.constant(True), fail)
    with tf.control_dependencies([checked]):
        return tuple(tf.identity(x) for x in outputs)


def _skip(ds, ignore_errors, skip_counter, max_consecutive_skips):
    """With ignore_errors: drops (logs, counts) records whose `ok` flag is False, and stops
    with one error after `max_consecutive_skips` bad records in a row (None: never)."""
    if not ignore_errors:
        return ds
    limit = int(max_consecutive_skips) if max_consecutive_skips else None

    def streak(state, element):
        run, first = state
        ok, message = element[-2], element[-1]
        run = tf.where(ok, tf.constant(0, tf.int64), run + 1)
        first = tf.where(ok, tf.constant(""), tf.where(tf.equal(run, 1), message, first))
        return (run, first), (*element, run, first)

    if limit:
        ds = ds.scan((tf.constant(0, tf.int64), tf.constant("")), streak)

        def check(*element):
            run, first = element[-2:]

            def fail():
                message = tf.strings.join([
                    "lgd_tf.data: ", tf.strings.as_string(run), " records in a row were bad "
                    "(every record is bad?); first bad: ",
                    tf.strings.regex_replace(first, "^lgd_tf.data: bad ", "")])
                with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
                    return tf.constant(False)

            checked = tf.cond(run < limit, lambda: tf.constant(True), fail)
            with tf.control_dependencies([checked]):
                return tuple(tf.identity(x) for x in element[:-2])

        # A map, not the filter, raises: its error is the bare "assertion failed: [...]".
        ds = ds.map(check)

    def keep(*element):
        ok, message = element[-2:]

        def log_and_count():
            ops = [tf.print(message, "(skipped)")]
            if skip_counter is not None:
                ops.append(skip_counter.variable.assign_add(1))
            with tf.control_dependencies(ops):
                return tf.constant(False)
        return tf.cond(ok, lambda: tf.constant(True), log_and_count)

    ds = ds.filter(keep)
    return ds.map(lambda *e: e[:-2])


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

    def build_clip(serialized, *rest):
        *source, position_in_stream = rest
        parsed = _parse(serialized, modality, class_names is not None)
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

        clip, ok, message = _guarded(parsed, source, num_classes, class_names, indices_fn,
                                     build)
        return clip, tf.cast(parsed["label"], tf.int32), ok, message

    blank = lambda: (tf.zeros([length, crop_size, crop_size, channels], tf.uint8),  # noqa: E731
                     tf.constant(0, tf.int32))
    failed = _failed_record(blank, modality, class_names is not None)

    def make_clip(position_in_stream, element):
        clip, label, ok, message = _try(build_clip, (*element, position_in_stream), failed)
        clip = tf.ensure_shape(clip, [length, crop_size, crop_size, channels])
        return _emit((clip, label), ok, message, ignore_errors)

    ds = ds.map(make_clip, num_parallel_calls=AUTOTUNE,
                deterministic=True if deterministic else None)
    ds = _skip(ds, ignore_errors, skip_counter, max_consecutive_skips)
    ds = ds.batch(per_replica, drop_remainder=True)
    ds = ds.prefetch(AUTOTUNE)
    return _with_options(ds, deterministic)


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
    channels = CHANNELS[modality]
    length = num_frames if model == "3d" else num_segments
    per_replica = (input_context.get_per_replica_batch_size(batch_size)
                   if input_context is not None else batch_size)
    ds = _records(list_files(file_pattern), training=False, seed=None, deterministic=True,
                  input_context=input_context)

    def build_views(serialized, *source):
        parsed = _parse(serialized, modality, class_names is not None)

        def indices_fn(n):
            return sampling.eval_indices(n, model=model, num_frames=num_frames,
                                         temporal_stride=temporal_stride,
                                         num_segments=num_segments, num_clips=num_clips,
                                         short_video=short_video)

        def build(jpegs, position):
            frames = sampling.resize_shorter_side(_decode(jpegs, channels), short_side)
            return sampling.views_from_frames(frames, position, num_crops)

        views, ok, message = _guarded(parsed, source, num_classes, class_names, indices_fn,
                                      build)
        return views, tf.cast(parsed["label"], tf.int32), parsed["media_id"], ok, message

    blank = lambda: (tf.zeros([num_clips * num_crops, length, 1, 1, channels], tf.uint8),  # noqa: E731
                     tf.constant(0, tf.int32), tf.constant(""))
    failed = _failed_record(blank, modality, class_names is not None)

    def make_views(*element):
        views, label, media_id, ok, message = _try(build_views, element, failed)
        views = tf.ensure_shape(views, [num_clips * num_crops, length, None, None, channels])
        return _emit((views, label, media_id), ok, message, ignore_errors)

    ds = ds.map(make_views, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = _skip(ds, ignore_errors, skip_counter, max_consecutive_skips)
    if num_crops == 1 and per_replica > 1:
        ds = ds.group_by_window(_size_key, lambda key, window: window.batch(per_replica),
                                window_size=per_replica)
    else:
        ds = ds.batch(per_replica)
    return _with_options(ds.prefetch(AUTOTUNE), True, autotune=False)


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
    # The ops it would refuse as stateful hold no state across records: `_try`'s one-element
    # datasets (DatasetToSingleElement) live within one record, and the SkipCounter's
    # variable is outside the iterator (its count is not part of the position).
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.FILE)
    return ds.with_options(options)
