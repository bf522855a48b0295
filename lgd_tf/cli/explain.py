r"""`python -m lgd_tf.explain --model=PATH --video=a.mp4 --output=OUT.mp4`: Grad-CAM overlay.

    python -m lgd_tf.explain --model=runs/demo --video=a.mp4 --output=out/a_cam.mp4 \
        [--class_name=digit7_left] [--stage=local|res2|res3|res4|res5] [--short_side=120] \
        [--method=gradcam|gradcam++]

Grad-CAM (Selvaraju et al. 2017) of the final local map x_L (or of the map after the stage
given by --stage): per clip, w_c = spatio-temporal mean of d y_k / d A_c, map = ReLU(sum_c
w_c A_c), upsampled to the frames (linear in time, bilinear in space) and normalised to [0, 1].
y_k is the logit of class k of the head that reads x_L: the local head W_x P(x_L) (Eq. 6) of a
stage-1 model, the combined classifier (Eq. 4-5) of a stage-2 model (--score=log_probability:
its log softmax). k is --class_name, or the video's top class. The video is covered by
consecutive clips of the model's length.

--method=gradcam++ (Chattopadhay et al. 2018) weighs each channel by alpha-weighted positive
gradients instead of their mean. Small objects are found far better at an early stage: on the
demo videos the peak falls in the moving digit's box in ~96 % of frames with
--stage=res2 --method=gradcam++, against ~20-30 % on x_L, whose 4 x 4 cells each see the whole
64 x 64 frame (README, "Grad-CAM").

Writes OUT.mp4 (or OUT.gif): the frames with the heatmap blended over them as colours (jet),
upscaled so the shorter side is at least --min_side, the class name and its video-level
probability written on every frame; and OUT.png: a grid of --grid_frames frames with their
overlays.

--model is a run folder (its final model), a `.keras` file, or an lgd_tf export dir (its
model.keras): Grad-CAM needs gradients of the inner maps, which a SavedModel, a LiteRT or an
ONNX file does not keep, so those are refused with one line. The frames are resized to the
run's evaluation short side (recorded in the run folder and in every `.keras` of the run;
--short_side overrides it); the first line says which sampling was used and where it came
from. class_names.txt next to the `.keras` file gives the class names.

OUT.mp4 and OUT.png are validated before the work and replaced together once both are
written: a failed run leaves the old files as they were.

Exit codes: 0 success; 1 failure at run time; 2 bad usage or input (a missing flag, video or
model, an unknown --class_name, a SavedModel without model.keras). Errors are one line.
"""


from absl import flags

from lgd_io.errors import BadInput, one_line
from lgd_tf.cli.command import Command

PROGRAM = "lgd_tf.explain"
STAGES = ("local", "res2", "res3", "res4", "res5")
METHODS = ("gradcam", "gradcam++")  # lgd_tf.analysis.grad_cam.METHODS (imported lazily)


def define_flags(fv):
    flags.DEFINE_string("model", None, "run folder, .keras file or export dir (with "
                        "model.keras).", flag_values=fv)
    flags.DEFINE_string("video", None, "video file to explain.", flag_values=fv)
    flags.DEFINE_string("output", None, "overlay video to write: .mp4 (or .gif); the PNG grid "
                        "is written next to it with the suffix .png.", flag_values=fv)
    flags.DEFINE_string("class_name", None, "class explained (default: the video's top "
                        "class).", flag_values=fv)
    flags.DEFINE_enum("stage", "local", STAGES, "map explained: local = x_L (the final local "
                      "map), or the local map after res2..res5 (res3 has 4x the resolution of "
                      "x_L: better for small objects).", flag_values=fv)
    flags.DEFINE_enum("method", "gradcam", METHODS, "class-activation "
                      "weights: Grad-CAM (mean gradient per channel) or Grad-CAM++ (weighted "
                      "positive gradients; sharper on small objects at res2/res3).",
                      flag_values=fv)
    flags.DEFINE_enum("score", "logit", ["logit", "log_probability"], "what is "
                      "differentiated: the class logit (Selvaraju et al.) or its log softmax.",
                      flag_values=fv)
    flags.DEFINE_integer("short_side", None, "shorter side the frames are resized to for the "
                         "model (default: the run's evaluation short side).",
                         flag_values=fv)
    flags.DEFINE_integer("min_side", 256, "the overlay video is upscaled by a whole factor "
                         "until its shorter side is at least this.", flag_values=fv)
    flags.DEFINE_float("fps", 8.0, "frame rate of the overlay video.", flag_values=fv)
    flags.DEFINE_integer("grid_frames", 6, "frames in the PNG grid.", flag_values=fv)
    flags.DEFINE_float("alpha", 0.45, "opacity of the heatmap colours.", flag_values=fv)


def _check_flags(fv):
    for name in ("short_side", "min_side", "grid_frames"):
        if fv[name].value is not None and fv[name].value < 1:
            raise BadInput(f"--{name} must be >= 1. Received: {fv[name].value}")
    if not fv.fps > 0:
        raise BadInput(f"--fps must be positive. Received: {fv.fps}")
    if not 0.0 <= fv.alpha <= 1.0:
        raise BadInput(f"--alpha must be in [0, 1]. Received: {fv.alpha}")
    if not fv.output.lower().endswith((".mp4", ".gif")):
        raise BadInput(f"--output must end with .mp4 or .gif. Received: {fv.output}")


def explain(fv):
    import pathlib

    _check_flags(fv)
    if not pathlib.Path(fv.video).is_file():
        raise BadInput(f"--video={fv.video}: no such file")
    from lgd_io import files
    from lgd_tf.analysis import explain as explain_lib
    from lgd_tf.analysis import grad_cam, rendering
    from lgd_tf.serving.export import describe_sampling

    files.check_outputs(rendering.output_paths(fv.output), "--output")
    model, class_names, sampling, origin = explain_lib.explain_sampling(
        fv.model, short_side=fv.short_side)
    if fv.class_name is not None and fv.class_name not in class_names:
        raise BadInput(f"Unknown --class_name {fv.class_name!r}; the model's classes are: "
                       f"{', '.join(class_names)}")
    print(f"sampling: {describe_sampling(sampling)} ({origin})", flush=True)
    from lgd_tf.data import VideoError

    try:
        explanation = explain_lib.explain_video((model, class_names), fv.video,
                                                class_name=fv.class_name, layer=fv.stage,
                                                score=fv.score, method=fv.method,
                                                sampling=sampling)
    except VideoError as error:  # the video cannot be decoded: the user's input
        raise BadInput(f"--video={fv.video}: {one_line(error)}") from None
    video_path, png_path = rendering.write_explanation(
        explanation, fv.output, fps=fv.fps, min_side=fv.min_side, grid_frames=fv.grid_frames,
        alpha=fv.alpha)
    method = grad_cam.METHOD_NAMES[fv.method]
    print(f"{fv.video}: {method} of {explanation.class_name} (p={explanation.score:.4f}; "
          f"{explanation.score_name}, map {fv.stage}) on {len(explanation.frames)} frames -> "
          f"{video_path}, {png_path}", flush=True)


COMMAND = Command(PROGRAM, __doc__, define_flags, explain,
                  required=["model", "video", "output"])


def run(argv=None):
    """Runs the command on `argv` (default sys.argv); returns the exit code."""
    return COMMAND.run(argv)

