"""Scoring a video file: decode, evaluation views, the model(s), late fusion (Sec. 5.2, 5.5).

`predict_video(model, video)` decodes the video with PyAV and scores it as evaluation does:
`lgd_tf.data.eval_views` samples the clips (3D) or frame tuples (2D) over the whole video and
the views' class probabilities are averaged. A model is an export dir (with or without the
version subdirectory), a `.keras` file (loaded with safe_mode=True; class_names.txt next to it
gives the labels) or a loaded `VideoClassifier`. With `fuse_with` a second model scores the
video too and the result is the late fusion `(1 - w) * rgb + w * flow`; a model taking 2
channels is a flow model and gets TV-L1 flow computed from the video.

Models loaded from a path are kept (the last 4, keyed by file and modification time), so a loop
calling `predict_video` with the same path loads the model once.
"""

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from lgd_tf.serving import classifier as classifier_lib
from lgd_tf.serving import fusion, loading


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
    """Decoded frames `(N, H, W, channels)` uint8: RGB (3) or quantised TV-L1 flow (2)."""
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
        classifiers.append(_as_classifier(fuse_with, overrides))
        if classifiers[0].class_names != classifiers[1].class_names:
            raise ValueError(
                "The fused models must have the same classes in the same order. Received: "
                f"{len(classifiers[0].class_names)} and {len(classifiers[1].class_names)} "
                "class names that differ")
    frames_cache = {}
    scores = []
    for clf in classifiers:
        key = (clf.input_channels, clf.sampling.short_side)
        if key not in frames_cache:
            frames_cache[key] = video_frames(video, clf.input_channels, clf.sampling.short_side)
        scores.append(clf.video_probabilities(frames_cache[key]))
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
        models=[{"path": c.path, "modality": c.modality} for c in classifiers],
        fusion_weight=weight,
        class_names=classifiers[0].class_names,
        probabilities=np.asarray(probabilities, np.float32),
    )


def _as_classifier(model, overrides):
    if isinstance(model, classifier_lib.VideoClassifier):
        return model
    saved_model_dir = loading.find_saved_model(model)
    if saved_model_dir is not None:
        overrides = {}  # SavedModel sampling is fixed at export; the flags apply to .keras.
        source = saved_model_dir / loading.SAVED_MODEL_FILE
    else:
        source = loading.find_keras_file(model)
    # Loading is the slow part (tens of seconds for ResNet-50); a loop calling predict_video
    # with the same path reuses the model until its file changes.
    key = (str(source.resolve()), source.stat().st_mtime_ns,
           tuple(sorted(overrides.items())))
    return _load_cached(key, str(model), tuple(overrides.items()))


@functools.lru_cache(maxsize=4)
def _load_cached(key, model, overrides):
    del key  # only part of the cache key
    try:
        return classifier_lib.load_classifier(model, **dict(overrides))
    except (OSError, tf.errors.OpError) as error:
        # TensorFlow reports a corrupt saved_model.pb or variables file as an OSError without
        # an errno or as an OpError: the model is bad input. A real I/O error passes on.
        if isinstance(error, OSError) and error.errno is not None:
            raise
        raise ValueError(f"Could not load the SavedModel {model}: "
                         f"{loading.one_line(getattr(error, 'message', None) or error)}"
                         ) from error


def clear_model_cache():
    """Forgets the models kept by `predict_video` (they are reloaded on the next call)."""
    _load_cached.cache_clear()


def format_text(prediction, k):
    """The top `k` labels of a `Prediction` as text, one line per label."""
    lines = [f"{prediction.video}: top {min(k, len(prediction.class_names))} of "
             f"{len(prediction.class_names)} classes"]
    if prediction.fusion_weight is not None:
        lines[0] += f" (late fusion, fusion_weight={prediction.fusion_weight:g})"
    for rank, (_, label, score) in enumerate(prediction.top_k(k), start=1):
        lines.append(f"{rank:>3}. {score:.4f}  {label}")
    return "\n".join(lines)
