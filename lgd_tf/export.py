r"""`python -m lgd_tf.export --model_dir=... --export_dir=...`: SavedModel for TF Serving + .keras.

    python -m lgd_tf.export --model_dir=runs/lgd3d_r50 --export_dir=exports/lgd3d_r50 \
        [--version=1] [--top_k=5] [--num_clips=15] [--short_side=120] ...

Layout written (TF Serving polls `export_dir` and serves the highest version):

    export_dir/1/             SavedModel: signatures serving_default, serve_encoded,
                              serve_frames, features (see lgd_tf/serving/module.py)
    export_dir/model.keras    the same Keras model (load with keras.saving.load_model after
                              `import lgd_tf`, safe_mode=True)
    export_dir/class_names.txt

The SavedModel holds traced graphs and variables only: it runs where lgd_tf is not installed.
An existing version is never overwritten, and a failed write leaves export_dir as it was.

Evaluation sampling of serve_frames / serve_encoded: when --model_dir is a training run
folder, the run's own (`lgd_tf.data.eval_dataset.*` in its operative_config.gin); flags given
override it; otherwise Sec. 5.2 (short side 120 / 240, 15 clips / 10 frame triples), 1 crop,
stride 1, loop. The line `sampling: ...` says what was used and where it came from.

Exit codes: 0 exported; 1 failure at run time (export_dir cannot be written: disk full,
permission denied); 2 bad usage or input (a bad or missing flag, no model at --model_dir, a
version that already exists, an export_dir that is a file).
"""

import pathlib
import sys
import time
import tokenize

from absl import flags

from lgd_tf.cli.command import Command
from lgd_tf.serving import module
from lgd_tf.serving.export import ExportResult, describe_sampling, export_model  # noqa: F401

PROGRAM = "lgd_tf.export"
OPERATIVE_CONFIG = "operative_config.gin"
# Flags of the evaluation sampling, in the order of the run's `lgd_tf.data.eval_dataset`
# settings they stand for (its `model` is the flag `model_type`).
SAMPLING_FLAGS = {"model": "model_type", "num_clips": "num_clips", "num_crops": "num_crops",
                  "short_side": "short_side", "temporal_stride": "temporal_stride",
                  "short_video": "short_video"}


def define_flags(fv):
    flags.DEFINE_string("model_dir", None, "model_dir of a trained model (stage2.keras else "
                        "stage1.keras, class_names.txt, operative_config.gin), or a .keras "
                        "file.", flag_values=fv)
    flags.DEFINE_string("export_dir", None, "output folder; the SavedModel goes to "
                        "export_dir/<version>/.", flag_values=fv)
    flags.DEFINE_integer("version", 1, "TF Serving version subdirectory.", flag_values=fv)
    flags.DEFINE_integer("top_k", 5, "number of top classes the signatures return.",
                         flag_values=fv)
    flags.DEFINE_enum("model_type", None, ["3d", "2d"], "sampling of the in-graph evaluation "
                      "views; default: the run's, else from the model.", flag_values=fv)
    flags.DEFINE_integer("num_clips", None, "clips (3D) / frame tuples (2D) per video; "
                         "default: the run's, else 15 / 10 (Sec. 5.2).", flag_values=fv)
    flags.DEFINE_integer("num_crops", None, "1 (whole frame) or 3 crops per clip; default: "
                         "the run's, else 1.", flag_values=fv)
    flags.DEFINE_integer("short_side", None, "frames resized to this shorter side; default: "
                         "the run's, else 120 / 240 (Sec. 5.2).", flag_values=fv)
    flags.DEFINE_integer("temporal_stride", None, "3D: every n-th frame in a clip (as in "
                         "training); default: the run's, else 1.", flag_values=fv)
    flags.DEFINE_enum("short_video", None, ["loop", "pad"], "videos shorter than a clip: "
                      "indices wrap around or the last frame repeats; default: the run's, "
                      "else loop.", flag_values=fv)


def run_sampling(model_dir):
    """The evaluation sampling of the training run at `model_dir` (a run folder, or a `.keras`
    file in one): ({export_model argument: value}, operative config path), or ({}, None)."""
    path = pathlib.Path(model_dir)
    config = (path if path.is_dir() else path.parent) / OPERATIVE_CONFIG
    if not path.exists() or not config.is_file():
        return {}, None
    from lgd_tf.cli import configs  # gin stays at the edge

    try:
        bound = configs.run_eval_sampling(str(config))
    except tokenize.TokenError as error:  # gin's tokenizer on a truncated file
        raise ValueError(f"cannot read {config}: {error.args[0]}") from None
    return ({SAMPLING_FLAGS[name]: value for name, value in bound.items()
             if name in SAMPLING_FLAGS and value is not None}, config)


def _check_flags(fv):
    if fv.version < 0:
        raise ValueError(f"--version must be >= 0. Received: {fv.version}")
    for name in ("top_k", "num_clips", "short_side", "temporal_stride"):
        if fv[name].value is not None and fv[name].value < 1:
            raise ValueError(f"--{name} must be >= 1. Received: {fv[name].value}")
    if fv.num_crops not in (None, 1, 3):
        raise ValueError(f"--num_crops must be 1 or 3. Received: {fv.num_crops}")


def _source(config, from_run, given):
    """Where the sampling came from: "from run/operative_config.gin; --num_clips overrides"."""
    if from_run:
        source = f"from {config}"
    elif config is not None:
        source = f"Sec. 5.2 defaults: {config} sets no lgd_tf.data.eval_dataset sampling"
    else:
        source = "Sec. 5.2 defaults"
    if given:
        source += (f"; {', '.join('--' + name for name in given)} "
                   f"override{'s' if len(given) == 1 else ''}")
    return source


def export(fv):
    _check_flags(fv)
    from_run, config = run_sampling(fv.model_dir)
    given = {flag: fv[flag].value for flag in SAMPLING_FLAGS.values()
             if fv[flag].value is not None}
    start = time.perf_counter()
    result = export_model(fv.model_dir, fv.export_dir, version=fv.version, top_k=fv.top_k,
                          **{**from_run, **given})
    print(f"sampling: {describe_sampling(result.sampling)} ({_source(config, from_run, given)})")
    print(f"SavedModel: {result.saved_model_dir} (signatures: "
          f"{', '.join(module.SIGNATURE_KEYS)}); Keras: {result.keras_path}; "
          f"{len(result.class_names)} classes; {time.perf_counter() - start:.1f} s",
          flush=True)


COMMAND = Command(PROGRAM, __doc__, define_flags, export, required=["model_dir", "export_dir"])


def run(argv=None):
    """Runs the command on `argv` (default sys.argv); returns the exit code."""
    return COMMAND.run(argv)


if __name__ == "__main__":
    sys.exit(run())
