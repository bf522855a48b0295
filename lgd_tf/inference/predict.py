"""Scoring a video file: decode, evaluation views, the model(s), late fusion (Sec. 5.2, 5.5).

`predict_video(model, video)` decodes the video with PyAV and scores it as evaluation does:
the clips (3D) or frame tuples (2D) that `lgd_tf.data.eval_views` samples over the whole video,
the views' class probabilities averaged.

Decoding streams (`video_views`), so memory does not depend on the video's length: the frame
count comes from the container (no decoding; a header count or one demux pass), the views'
frame indices are `lgd_tf.data.sampling.eval_indices` of that count (as `eval_views` computes
them), and one decode pass (`lgd_tf.data.video.iter_frames`: rotation applied, mid-stream size
changes resized) keeps only the frames some view uses. If that pass finds a different number
of frames than the container said, the indices are computed again from the true count and the
video is decoded once more, so the views are always those of the whole-video path
(`video_frames` + `VideoClassifier.video_probabilities`) and the scores equal its scores.

A model is an export dir (with or without the version subdirectory), a `.keras` file (loaded
with safe_mode=True; class_names.txt next to it gives the labels) or a loaded
`VideoClassifier`. With `fuse_with` a second model scores the video too and the result is the
late fusion `(1 - w) * rgb + w * flow`; a model taking 2 channels is a flow model and gets
TV-L1 flow computed from the video.

Models loaded from a path are kept (the last 4, keyed by file and modification time), so a loop
calling `predict_video` with the same path loads the model once.
"""

import dataclasses
import functools

import av
import numpy as np
import tensorflow as tf

from lgd_io.errors import BadInput, one_line
from lgd_tf.inference import classifier as classifier_lib
from lgd_tf.runs import fusion
from lgd_tf.serving import loading


@dataclasses.dataclass
class Prediction:
    """Video-level scores of one video; `top_k` is a list of (index, label, score)."""

    video: str
    models: list
    fusion_weight: float | None
    class_names: list
    probabilities: np.ndarray

    def top_k(self, k):
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(i), self.class_names[i], float(self.probabilities[i])) for i in order]

    def as_json(self, k):
        return {
            "video": self.video,
            "models": self.models,
            "fusion_weight": self.fusion_weight,
            "top_k": [{"index": i, "label": label, "score": score}
                      for i, label, score in self.top_k(k)],
        }


def video_frames(video_path, channels, short_side):
    """Decoded frames `(N, H, W, channels)` uint8: RGB (3) or quantised TV-L1 flow (2).

    The whole video in memory; `video_views` streams instead and gives the same views.
    """
    from lgd_tf import data
    from lgd_tf.data import flow

    if channels not in (2, 3):
        raise ValueError(f"Models take 3 (RGB) or 2 (flow) channels. Received: {channels}")
    frames = data.decode_video(video_path, short_side=short_side)
    if channels == 3:
        return frames
    if len(frames) < 2:
        raise data.VideoError(f"Flow needs at least 2 frames; {video_path} has {len(frames)}")
    # The TFRecord builder's quantisation (lgd_tf.data.flow), without its JPEG round trip.
    return flow.quantize_flow(flow.tvl1_flow(frames))[..., :2]


def count_frames(video_path):
    """Number of frames in the first video stream, from the container without decoding.

    The stream's frame count in the header if it has one (mp4, mov, avi), else the number of
    its packets holding data (one demux pass; webm, mkv). `None` if the file cannot be read:
    the decoder then reports the error. An estimate: `video_views` checks it while decoding.
    """
    try:
        with av.open(str(video_path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.frames and stream.frames > 0:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size)
    except (av.error.FFmpegError, OSError, ValueError, EOFError):
        return None


def iter_model_frames(video_path, channels, short_side, wanted=None):
    """Yields `(index, frame)` for the model's input frames of a video, one at a time.

    RGB (3 channels): the decoded frames (`lgd_tf.data.video.iter_frames`, shorter side
    `short_side`). Flow (2): quantised TV-L1 flow between frames i and i + 1 (the TFRecord
    builder's quantisation without its JPEG round trip), one fewer than the frames. With
    `wanted` (a set of indices), other frames are yielded as `None` (flow is computed only for
    the wanted pairs). Holds at most two decoded frames.
    """
    from lgd_tf.data import VideoError, flow
    from lgd_tf.data.video import iter_frames

    if channels not in (2, 3):
        raise ValueError(f"Models take 3 (RGB) or 2 (flow) channels. Received: {channels}")
    frames = iter_frames(video_path, short_side)
    if channels == 3:
        for index, frame in enumerate(frames):
            yield index, (frame if wanted is None or index in wanted else None)
        return
    previous, count = None, 0
    for count, frame in enumerate(frames, start=1):
        index = count - 2  # the flow frame between the previous frame and this one
        if previous is not None:
            if wanted is None or index in wanted:
                pair = np.stack([previous, frame])
                yield index, flow.quantize_flow(flow.tvl1_flow(pair))[0, ..., :2]
            else:
                yield index, None
        previous = frame
    if count < 2:
        raise VideoError(f"Flow needs at least 2 frames; {video_path} has {count}")


def video_views(video_path, sampling, channels=3):
    """The evaluation views of a video, uint8 `(V, T, H, W, channels)`, decoded streaming.

    The same views as `lgd_tf.data.eval_views(video_frames(...), **sampling.as_kwargs())`
    (see the module docstring), holding only the frames the views use: memory does not
    depend on the video's length.

    Args:
        video_path: the video file.
        sampling: a `lgd_tf.serving.module.Sampling`.
        channels: 3 (RGB) or 2 (flow).
    """
    from lgd_tf.data import sampling as sampling_lib

    count = count_frames(video_path)
    if count is not None and channels == 2:
        count -= 1
    if count is None or count < 1:  # no usable count in the container: count by decoding
        count = sum(1 for _ in iter_model_frames(video_path, channels, sampling.short_side,
                                                 wanted=()))
    for _ in range(2):
        indices = sampling_lib.eval_indices(
            count, model=sampling.model, num_frames=sampling.num_frames,
            temporal_stride=sampling.temporal_stride, num_segments=sampling.num_segments,
            num_clips=sampling.num_clips, short_video=sampling.short_video).numpy()
        wanted = set(indices.ravel().tolist())
        kept, decoded = {}, 0
        for index, frame in iter_model_frames(video_path, channels, sampling.short_side,
                                              wanted=wanted):
            decoded = index + 1
            if frame is not None:
                kept[index] = frame
        if decoded == count:
            break
        count = decoded  # the container's count was wrong: again with the true one
    if len(kept) != len(wanted):
        from lgd_tf.data import VideoError

        raise VideoError(f"{video_path} gave a different number of frames on each decode")
    unique = np.array(sorted(kept), np.int64)
    frames = np.stack([kept[i] for i in unique])
    del kept
    # As eval_views: resize the used frames (a no-op when the decoder already did), gather.
    frames = sampling_lib.resize_shorter_side(frames, sampling.short_side)
    position = np.searchsorted(unique, indices)
    return sampling_lib.views_from_frames(frames, position, sampling.num_crops).numpy()


def mean_over_views(view_probabilities):
    """Video-level scores `(K,)`: the mean of `(V, K)` view scores, as serve_frames takes it."""
    return tf.reduce_mean(tf.constant(view_probabilities, tf.float32), axis=0).numpy()


def predict_video(model, video, *, fuse_with=None, fusion_weight=fusion.DEFAULT_FLOW_WEIGHT,
                  num_clips=None, num_crops=None, short_side=None):
    """Scores one video with one model or the late fusion of two (Sec. 5.5).

    Args:
        model: a model path (see `load_classifier`) or a loaded `VideoClassifier`.
        video: path of the video file.
        fuse_with: optional second model (path or `VideoClassifier`).
        fusion_weight: w of the flow stream (or of `fuse_with` if both have one modality).
        num_clips, num_crops, short_side: sampling overrides for `.keras` models.

    Returns:
        A `Prediction`.
    """
    overrides = {"num_clips": num_clips, "num_crops": num_crops, "short_side": short_side}
    classifiers = [_as_classifier(model, overrides)]
    if fuse_with is not None:
        classifiers.append(_as_classifier(fuse_with, overrides, flag="--fuse_with"))
        if classifiers[0].class_names != classifiers[1].class_names:
            raise BadInput(
                "The fused models must have the same classes in the same order. Received: "
                f"{len(classifiers[0].class_names)} and {len(classifiers[1].class_names)} "
                "class names that differ")
    views_cache = {}
    scores = []
    for clf in classifiers:
        key = (clf.input_channels, clf.sampling)
        if key not in views_cache:
            views_cache[key] = video_views(video, clf.sampling, clf.input_channels)
        scores.append(mean_over_views(clf.view_probabilities(views_cache[key])))
    if len(classifiers) == 1:
        probabilities, weight = scores[0], None
    else:
        # Sec. 5.5: w weighs the flow stream; with two models of one modality, the second.
        probabilities = fusion.fuse_two_models(
            scores[0], scores[1], modality=classifiers[0].modality,
            fuse_with_modality=classifiers[1].modality, fusion_weight=fusion_weight)
        weight = float(fusion_weight)
    return Prediction(
        video=str(video),
        models=[describe_classifier(c) for c in classifiers],
        fusion_weight=weight,
        class_names=classifiers[0].class_names,
        probabilities=np.asarray(probabilities, np.float32),
    )


def describe_classifier(classifier):
    """{"path", "modality", "sampling": the views in words, "sampling_from": their origin}."""
    from lgd_tf.serving.export import describe_sampling

    views = describe_sampling(classifier.sampling)
    if classifier.views:
        views += f"; {classifier.views}"
    return {"path": classifier.path, "modality": classifier.modality, "sampling": views,
            "sampling_from": classifier.origin}


def as_classifier(model, *, num_clips=None, num_crops=None, short_side=None):
    """A loaded `VideoClassifier` for a model path (kept as `predict_video` keeps it) or the
    classifier itself; the overrides apply to `.keras` models."""
    overrides = {"num_clips": num_clips, "num_crops": num_crops, "short_side": short_side}
    return _as_classifier(model, overrides)


def _as_classifier(model, overrides, flag="--model"):
    if isinstance(model, (classifier_lib.VideoClassifier, classifier_lib.EdgeClassifier)):
        return model
    from lgd_tf.serving import spec

    source = spec.resolve(model, flag=flag)
    # Loading is the slow part (tens of seconds for ResNet-50); a loop calling predict_video
    # with the same path reuses the model until its file changes.
    stamp = source.file / loading.SAVED_MODEL_FILE if source.file.is_dir() else source.file
    key = (str(stamp.resolve()), stamp.stat().st_mtime_ns, tuple(sorted(overrides.items())))
    return _load_cached(key, str(model), tuple(overrides.items()), flag)


@functools.lru_cache(maxsize=4)
def _load_cached(key, model, overrides, flag):
    del key  # only part of the cache key
    try:
        return classifier_lib.load_classifier(model, flag=flag, **dict(overrides))
    except (OSError, tf.errors.OpError) as error:
        # TensorFlow reports a corrupt saved_model.pb or variables file as an OSError without
        # an errno or as an OpError: the model is bad input. A real I/O error passes on.
        if isinstance(error, OSError) and error.errno is not None:
            raise
        raise BadInput(f"Could not load the SavedModel {model}: "
                       f"{one_line(error)}"
                       ) from error


def format_text(prediction, k):
    """The top `k` labels of a `Prediction` as text, one line per label."""
    lines = [f"{prediction.video}: top {min(k, len(prediction.class_names))} of "
             f"{len(prediction.class_names)} classes"]
    if prediction.fusion_weight is not None:
        lines[0] += f" (late fusion, fusion_weight={prediction.fusion_weight:g})"
    for rank, (_, label, score) in enumerate(prediction.top_k(k), start=1):
        lines.append(f"{rank:>3}. {score:.4f}  {label}")
    return "\n".join(lines)
