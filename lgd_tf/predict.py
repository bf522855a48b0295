"""`python -m lgd_tf.predict --model=PATH --video=a.mp4`: top-k labels of one video.

The video is decoded with PyAV and scored as evaluation does (Sec. 5.2): `eval_views` samples
the clips (3D) or frame tuples (2D) over the whole video, the views' class probabilities are
averaged. `--model` is an export dir (with or without the version subdirectory) or a `.keras`
file (loaded with safe_mode=True; class_names.txt next to it gives the labels).

Two-stream (Sec. 5.5): `--fuse_with=PATH` scores the video with a second model too and prints
the late fusion `(1 - w) * rgb + w * flow`, w = `--fusion_weight`. A model taking 2 channels is
a flow model and gets TV-L1 flow computed from the video; if both models have the same
modality, w is the weight of the `--fuse_with` model.

Exit codes: 0 success, 2 for a bad flag, an unreadable or empty video or a wrong model path
(one-line message on stderr).
"""

import dataclasses
import functools
import json
import sys

import numpy as np
import tensorflow as tf
from absl import flags

from lgd_tf.serving import classifier as classifier_lib
from lgd_tf.serving import fusion, loading

FLAGS = flags.FlagValues()
flags.DEFINE_string("model", None, "Export dir (SavedModel) or .keras file.", flag_values=FLAGS)
flags.DEFINE_string("video", None, "Video file to classify.", flag_values=FLAGS)
flags.DEFINE_integer("top_k", 5, "Number of labels printed.", flag_values=FLAGS)
flags.DEFINE_bool("json", False, "Print one JSON object instead of text.", flag_values=FLAGS)
flags.DEFINE_string("fuse_with", None, "Second model (e.g. the flow stream) for two-stream "
                    "late fusion (Sec. 5.5).", flag_values=FLAGS)
flags.DEFINE_float("fusion_weight", fusion.DEFAULT_FLOW_WEIGHT, "w in (1 - w) * rgb + w * "
                   "flow.", flag_values=FLAGS)
flags.DEFINE_integer("num_clips", None, ".keras models only: views per video (default 15 for "
                     "3D, 10 for 2D).", flag_values=FLAGS)
flags.DEFINE_integer("num_crops", None, ".keras models only: 1 or 3 crops per view.",
                     flag_values=FLAGS)
flags.DEFINE_integer("short_side", None, ".keras models only: shorter side the frames are "
                     "resized to (default 120 for 3D, 240 for 2D).", flag_values=FLAGS)


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
    return classifier_lib.load_classifier(model, **dict(overrides))


def format_text(prediction, k):
    lines = [f"{prediction.video}: top {min(k, len(prediction.class_names))} of "
             f"{len(prediction.class_names)} classes"]
    if prediction.fusion_weight is not None:
        lines[0] += f" (late fusion, fusion_weight={prediction.fusion_weight:g})"
    for rank, (_, label, score) in enumerate(prediction.top_k(k), start=1):
        lines.append(f"{rank:>3}. {score:.4f}  {label}")
    return "\n".join(lines)


def _usage():
    return f"{__doc__}\nFlags:\n{FLAGS.get_help()}"


def run(argv=None):
    """Entry point; returns the process exit code."""
    argv = list(sys.argv if argv is None else argv)
    if any(arg in ("-h", "--help", "-help") for arg in argv[1:]):
        print(_usage())
        return 0
    try:
        FLAGS.unparse_flags()  # run() may be called more than once in a process
        FLAGS(argv)
        for name in ("model", "video"):
            if not FLAGS[name].value:
                raise ValueError(f"--{name} is required. Received: {argv[1:]}")
        if FLAGS.top_k < 1:
            raise ValueError(f"--top_k must be >= 1. Received: {FLAGS.top_k}")
        if not 0.0 <= FLAGS.fusion_weight <= 1.0:
            raise ValueError(f"--fusion_weight must be in [0, 1]. Received: {FLAGS.fusion_weight}")
        prediction = predict_video(
            FLAGS.model, FLAGS.video, fuse_with=FLAGS.fuse_with,
            fusion_weight=FLAGS.fusion_weight, num_clips=FLAGS.num_clips,
            num_crops=FLAGS.num_crops, short_side=FLAGS.short_side)
    except (flags.Error, ValueError, OSError, tf.errors.OpError) as error:
        message = error.message if isinstance(error, tf.errors.OpError) else error
        print(f"lgd_tf.predict: error: {loading.one_line(message)}", file=sys.stderr)
        return 2
    if FLAGS.json:
        print(json.dumps(prediction.as_json(FLAGS.top_k)))
    else:
        print(format_text(prediction, FLAGS.top_k))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv))
