r"""`python -m lgd_tf.predict --model=PATH --video=a.mp4`: top-k labels of one video.

    python -m lgd_tf.predict --model=exports/lgd3d_r50 --video=a.mp4 [--top_k=5] [--json] \
        [--fuse_with=exports/lgd3d_flow --fusion_weight=0.5]

The video is decoded with PyAV and scored as evaluation does (Sec. 5.2): `eval_views` samples
the clips (3D) or frame tuples (2D) over the whole video, the views' class probabilities are
averaged. `--model` is any form of one trained model, and every form scores the same views,
the run's evaluation sampling (the same top-k and probabilities within 1e-4):

- a run folder (its final model; the sampling from its run record);
- a `.keras` file (loaded with safe_mode=True; the sampling it carries in its config, or the
  export's record for an export's model.keras; class_names.txt next to it gives the labels);
- an export dir (with or without the version subdirectory; its SavedModel's sampling was
  fixed by lgd_tf.export);
- a LiteRT / ONNX file (model.tflite / model.onnx, or an export dir holding one and no
  SavedModel), run in ai-edge-litert / onnxruntime: they take one clip at the training crop
  size, so each view is centre-cropped to it.

--num_clips / --num_crops / --short_side override the recorded sampling. The first line says
which views were scored and where their sampling came from:
`sampling: 2 clips x 1 crop of 4 frames, short side 32, stride 1, loop (from runs/x/run.json)`
(with --json: the "sampling" and "sampling_from" of each entry of "models").

Two-stream (Sec. 5.5): `--fuse_with=PATH` scores the video with a second model too and prints
the late fusion `(1 - w) * rgb + w * flow`, w = `--fusion_weight`. A model taking 2 channels is
a flow model and gets TV-L1 flow computed from the video; if both models have the same
modality, w is the weight of the `--fuse_with` model.

Timeline: `--timeline=PREFIX` also slides a window (one clip) over the whole video, every
`--window_stride` frames (default: the clip length), and writes PREFIX.csv (one row per
window: start and end in seconds, top-k labels and scores) and PREFIX.png (the top classes'
scores over time, the video-level top-k in the title); see lgd_tf/inference/timeline.py. It takes
one model (no --fuse_with). Both files are validated before the video is scored and
replaced together at the end: a failed run leaves the old ones as they were.

The video is decoded streaming: memory does not depend on its length.

Exit codes: 0 success; 1 failure at run time (e.g. out of memory); 2 bad usage or input (a bad
or missing flag, a wrong model path or a model that cannot be loaded, an unreadable or empty
video). Errors are one line on stderr.
"""

import json

from absl import flags

from lgd_io.errors import BadInput, one_line
from lgd_tf.cli.command import Command
from lgd_tf.cli.shared_flags import define_fusion_flags, define_sampling_flags
from lgd_tf.inference.predict import (
    format_text,
    predict_video,
)

PROGRAM = "lgd_tf.predict"


def define_flags(fv):
    flags.DEFINE_string("model", None, "run folder, export dir, or .keras / .tflite / .onnx "
                        "file.", flag_values=fv)
    flags.DEFINE_string("video", None, "video file to classify.", flag_values=fv)
    flags.DEFINE_integer("top_k", 5, "number of labels printed.", flag_values=fv)
    flags.DEFINE_bool("json", False, "print one JSON object instead of text.", flag_values=fv)
    define_fusion_flags(fv, "second model (e.g. the flow stream) for two-stream late fusion "
                        "(Sec. 5.5).", module_name=__name__)
    define_sampling_flags(fv, dict.fromkeys(("num_clips", "num_crops", "short_side"),
                                            "the recorded sampling"), module_name=__name__)
    flags.DEFINE_string("timeline", None, "write PREFIX.csv and PREFIX.png: scores of a window "
                        "slid over the video.", flag_values=fv)
    flags.DEFINE_integer("window_stride", None, "with --timeline: frames between window "
                         "starts (default: the clip length).", flag_values=fv)


def _check_flags(fv):
    for name in ("top_k", "num_clips", "short_side", "window_stride"):
        if fv[name].value is not None and fv[name].value < 1:
            raise BadInput(f"--{name} must be >= 1. Received: {fv[name].value}")
    if fv.num_crops not in (None, 1, 3):
        raise BadInput(f"--num_crops must be 1 or 3. Received: {fv.num_crops}")
    if not 0.0 <= fv.fusion_weight <= 1.0:
        raise BadInput(f"--fusion_weight must be in [0, 1]. Received: {fv.fusion_weight}")
    if fv.timeline is not None:
        if fv.fuse_with is not None:
            raise BadInput("--timeline takes one model; drop --fuse_with")
        from lgd_io import files
        from lgd_tf.inference import timeline

        files.check_outputs(timeline.timeline_paths(fv.timeline), "--timeline")
    elif fv.window_stride is not None:
        raise BadInput("--window_stride needs --timeline=PREFIX")


def _sampling_lines(prediction):
    """"sampling: ... (from ...)", one per model."""
    names = ("sampling", "--fuse_with sampling")
    return [f"{name}: {m['sampling']} ({m['sampling_from']})"
            for name, m in zip(names, prediction.models, strict=False)]


def predict(fv):
    _check_flags(fv)
    from lgd_tf.data import VideoError

    try:
        _predict(fv)
    except VideoError as error:  # the video cannot be decoded: the user's input
        raise BadInput(f"--video={fv.video}: {one_line(error)}") from None


def _predict(fv):
    prediction = predict_video(
        fv.model, fv.video, fuse_with=fv.fuse_with, fusion_weight=fv.fusion_weight,
        num_clips=fv.num_clips, num_crops=fv.num_crops, short_side=fv.short_side)
    written = None
    if fv.timeline is not None:
        from lgd_tf.inference import timeline as timeline_lib
        from lgd_tf.inference.predict import as_classifier

        classifier = as_classifier(fv.model, num_clips=fv.num_clips, num_crops=fv.num_crops,
                                   short_side=fv.short_side)
        timeline = timeline_lib.video_timeline(classifier, fv.video,
                                               window_stride=fv.window_stride,
                                               with_prediction=False)
        timeline.prediction = prediction
        written = timeline_lib.write_timeline(timeline, fv.timeline, k=fv.top_k)
    if fv.json:
        output = prediction.as_json(fv.top_k)
        if written is not None:
            output["timeline"] = {"csv": written[0], "png": written[1]}
        print(json.dumps(output), flush=True)
    else:
        print("\n".join(_sampling_lines(prediction)), flush=True)
        print(format_text(prediction, fv.top_k), flush=True)
        if written is not None:
            print(f"timeline: {written[0]}, {written[1]}", flush=True)


COMMAND = Command(PROGRAM, __doc__, define_flags, predict, required=["model", "video"])


def run(argv=None):
    """Runs the command on `argv` (default sys.argv); returns the exit code."""
    return COMMAND.run(argv)

