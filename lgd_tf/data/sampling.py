"""Which frames a clip uses, and the evaluation views; pure TF ops (graph-safe) (Sec. 5.2).

- LGD-3D train: `num_frames` consecutive frames (every `temporal_stride`-th) from a random start.
- LGD-2D train: TSN sampling, the video split into `num_segments` equal segments, one random
  frame from each.
- Evaluation: `num_clips` uniformly spaced clips (3D) or frame tuples (2D) over the whole
  video, frames resized so the shorter side is `short_side`, whole frame (1 view per clip) or
  3 square crops of the shorter side along the longer one.
- Videos shorter than a clip "loop" (indices wrap around) or "pad" (the last frame repeats).
"""

import tensorflow as tf

SHORT_VIDEO_MODES = ("loop", "pad")
MODELS = ("3d", "2d")


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")


def _wrap(indices, num_available, short_video):
    n = tf.cast(num_available, indices.dtype)
    if short_video == "loop":
        return tf.math.floormod(indices, n)
    return tf.minimum(indices, n - 1)


def clip_indices(num_available, num_frames, temporal_stride=1, start=0, short_video="loop"):
    """Indices `start + i * temporal_stride`, i < num_frames, kept inside [0, num_available)."""
    check_choice("short_video", short_video, SHORT_VIDEO_MODES)
    indices = tf.cast(start, tf.int32) + tf.range(num_frames, dtype=tf.int32) * temporal_stride
    return _wrap(indices, tf.cast(num_available, tf.int32), short_video)


def random_clip_indices(num_available, num_frames, temporal_stride=1, short_video="loop",
                        seed=(0, 0)):
    """A clip at a uniformly random start (train, 3D). `seed`: stateless seed, shape (2,)."""
    n = tf.cast(num_available, tf.int32)
    span = (num_frames - 1) * temporal_stride + 1
    # Shorter than the clip: looping may start anywhere, padding starts at frame 0.
    short_start = n - 1 if short_video == "loop" else tf.zeros_like(n)
    max_start = tf.where(n >= span, n - span, short_start)
    start = tf.random.stateless_uniform([], seed, 0, max_start + 1, dtype=tf.int32)
    return clip_indices(n, num_frames, temporal_stride, start, short_video)


def tsn_indices(num_available, num_segments, offsets, short_video="loop"):
    """One frame per segment (TSN): segment i is frames [floor(i N / T), floor((i + 1) N / T)),
    and it gives frame `start_i + floor(offsets[i] * length_i)`.

    offsets in [0, 1): random for training, fixed for evaluation. With fewer frames than
    segments, segment i takes frame i (looping or padding).
    """
    check_choice("short_video", short_video, SHORT_VIDEO_MODES)
    n = tf.cast(num_available, tf.int32)
    i = tf.range(num_segments + 1, dtype=tf.int64)
    bounds = tf.cast((i * tf.cast(n, tf.int64)) // num_segments, tf.int32)
    starts, lengths = bounds[:-1], bounds[1:] - bounds[:-1]
    pick = tf.cast(tf.floor(offsets * tf.cast(lengths, tf.float32)), tf.int32)
    spread = starts + tf.minimum(pick, tf.maximum(lengths - 1, 0))
    short = _wrap(tf.range(num_segments, dtype=tf.int32), n, short_video)
    return tf.where(n >= num_segments, spread, short)


def random_tsn_indices(num_available, num_segments, short_video="loop", seed=(0, 0)):
    offsets = tf.random.stateless_uniform([num_segments], seed, 0.0, 1.0)
    return tsn_indices(num_available, num_segments, offsets, short_video)


def eval_indices(num_available, *, model="3d", num_frames=16, temporal_stride=1,
                 num_segments=3, num_clips=15, short_video="loop"):
    """Frame indices of the evaluation clips, int32 (num_clips, T).

    3D: clip k starts at round(k * (N - span) / (num_clips - 1)) (uniform, first and last
    clip at the ends). 2D: tuple k takes, from each TSN segment, the frame at fraction
    (k + 0.5) / num_clips of the segment.
    """
    check_choice("model", model, MODELS)
    n = tf.cast(num_available, tf.int32)
    if model == "2d":
        offsets = (tf.range(num_clips, dtype=tf.float32) + 0.5) / num_clips
        return tf.map_fn(lambda o: tsn_indices(n, num_segments, tf.fill([num_segments], o),
                                               short_video),
                         offsets, fn_output_signature=tf.int32)
    span = (num_frames - 1) * temporal_stride + 1
    last = tf.cast(tf.maximum(n - span, 0), tf.float32)
    steps = tf.range(num_clips, dtype=tf.float32) / max(num_clips - 1, 1)
    starts = tf.cast(tf.round(steps * last), tf.int32)
    ramp = tf.range(num_frames, dtype=tf.int32) * temporal_stride
    return _wrap(starts[:, None] + ramp[None, :], n, short_video)


def resized_shape(height, width, short_side):
    """(H', W') with min(H', W') == short_side and the aspect ratio kept (rounded)."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    scale = short_side / tf.minimum(h, w)
    new_h = tf.where(h <= w, short_side, tf.cast(tf.round(h * scale), tf.int32))
    new_w = tf.where(w < h, short_side, tf.cast(tf.round(w * scale), tf.int32))
    return tf.cast(new_h, tf.int32), tf.cast(new_w, tf.int32)


def resize_frames(frames, size, skip_same=True):
    """Bilinear resize of uint8 (..., H, W, C) frames to `size` (H', W'), uint8 out.

    skip_same: return the frames unchanged when the size already matches (what bilinear
    resizing gives then anyway), so decode_video(short_side=s) then eval_views(short_side=s)
    resizes once.
    """
    frames = tf.convert_to_tensor(frames)
    shape = tf.shape(frames)
    size = tf.stack([tf.cast(size[0], tf.int32), tf.cast(size[1], tf.int32)])

    def resize():
        flat = tf.reshape(frames, tf.concat([[-1], shape[-3:]], 0))
        out = tf.image.resize(flat, size, method="bilinear")
        out = tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)
        return tf.reshape(out, tf.concat([shape[:-3], size, shape[-1:]], 0))

    if not skip_same:
        return resize()
    same = tf.reduce_all(tf.equal(shape[-3:-1], size))
    return tf.cond(same, lambda: tf.identity(frames), resize)


def source_window(source_size, size, offset, crop_size):
    """The part of a (H, W) frame that the `crop_size` square at `offset` of the frame resized
    to `size` (H', W') shows: int32 (y, x, h, w) in source pixels (Sec. 5.2 random crop).

    Cropping this window and resizing it to crop_size x crop_size equals resizing the whole
    frame then cropping, up to rounding the window to whole source pixels (< 0.5 px, i.e. a
    scale change below 1 % for 112-pixel crops), at a fraction of the decode and resize cost.
    """
    src = tf.cast(source_size, tf.float32)
    scale = src / tf.constant(size, tf.float32)
    extent = tf.minimum(tf.round(crop_size * scale), src)
    start = tf.clip_by_value(tf.round(tf.cast(offset, tf.float32) * scale), 0.0, src - extent)
    return tf.cast(tf.concat([start, extent], axis=0), tf.int32)


def resize_shorter_side(frames, short_side):
    """uint8 (..., H, W, C) -> shorter side `short_side`, aspect ratio kept."""
    shape = tf.shape(frames)
    return resize_frames(frames, resized_shape(shape[-3], shape[-2], short_side))


def three_crops(clips):
    """(K, T, H, W, C) -> (K * 3, T, S, S, C): square crops of side S = min(H, W) at the start,
    centre and end of the longer side, ordered clip-major (clip0 crops 0..2, clip1 ...)."""
    shape = tf.shape(clips)
    h, w = shape[2], shape[3]
    side = tf.minimum(h, w)
    long_extra = tf.maximum(h, w) - side
    views = []
    for offset in (0, long_extra // 2, long_extra):
        oy = tf.where(h > w, offset, 0)
        ox = tf.where(h > w, 0, offset)
        views.append(clips[:, :, oy:oy + side, ox:ox + side, :])
    stacked = tf.stack(views, axis=1)  # (K, 3, T, S, S, C)
    return tf.reshape(stacked, tf.concat([[-1], tf.shape(stacked)[2:]], 0))


def views_from_frames(frames, indices, num_crops):
    """Frames (N, H, W, C) + eval indices (K, T) -> views (K * num_crops, T, H', W', C)."""
    if num_crops not in (1, 3):
        raise ValueError(f"`num_crops` must be 1 or 3. Received: num_crops={num_crops}")
    clips = tf.gather(frames, indices)
    return three_crops(clips) if num_crops == 3 else clips


def eval_views(frames, *, model="3d", num_frames=16, num_segments=3, num_clips=15, num_crops=1,
               short_side=120, temporal_stride=1, short_video="loop"):
    """Decoded video uint8 (N, H, W, C) -> evaluation views (V, T, H', W', C) (Sec. 5.2).

    V = num_clips * num_crops, T = num_frames (3D) or num_segments (2D); the shorter side is
    resized to `short_side` (None keeps the frames' size). Pure TF ops: usable in a
    tf.function exported to a SavedModel, and the same sampling `eval_dataset` uses.
    """
    check_choice("model", model, MODELS)
    for name, value in (("num_frames", num_frames), ("num_segments", num_segments),
                        ("num_clips", num_clips), ("temporal_stride", temporal_stride)):
        if int(value) < 1:
            raise ValueError(f"`{name}` must be >= 1. Received: {name}={value}")
    frames = tf.convert_to_tensor(frames)
    if frames.shape.rank is not None and frames.shape.rank != 4:
        raise ValueError(f"`frames` must be (N, H, W, C). Received shape: {frames.shape}")
    with tf.control_dependencies([tf.debugging.assert_positive(
            tf.shape(frames)[0], message="eval_views: the video has no frames")]):
        indices = eval_indices(tf.shape(frames)[0], model=model, num_frames=num_frames,
                               temporal_stride=temporal_stride, num_segments=num_segments,
                               num_clips=num_clips, short_video=short_video)
    # Resize only the frames the views use.
    unique, position = tf.unique(tf.reshape(indices, [-1]))
    used = tf.gather(frames, unique)
    if short_side is not None:
        used = resize_shorter_side(used, short_side)
    return views_from_frames(used, tf.reshape(position, tf.shape(indices)), num_crops)
