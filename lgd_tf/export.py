"""`python -m lgd_tf.export --model_dir=... --export_dir=...`: SavedModel for TF Serving + .keras.

Layout written (TF Serving polls `export_dir` and serves the highest version):

    export_dir/1/             SavedModel: signatures serving_default, serve_encoded,
                              serve_frames, features (see lgd_tf/serving/module.py)
    export_dir/model.keras    the same Keras model (load with keras.saving.load_model after
                              `import lgd_tf`, safe_mode=True)
    export_dir/class_names.txt

The SavedModel holds traced graphs and variables only: it runs where lgd_tf is not installed.
Evaluation sampling for serve_frames / serve_encoded follows Sec. 5.2 (short side 120 / 240,
15 clips / 10 frame triples) unless overridden.
"""

import dataclasses
import pathlib
import shutil
import sys
import time

import tensorflow as tf
from absl import flags

from lgd_tf.serving import loading, module

FLAGS = flags.FlagValues()
flags.DEFINE_string("model_dir", None, "model_dir of a trained model (stage2.keras else "
                    "stage1.keras, class_names.txt), or a .keras file.", flag_values=FLAGS)
flags.DEFINE_string("export_dir", None, "Output directory; the SavedModel goes to "
                    "export_dir/<version>/.", flag_values=FLAGS)
flags.DEFINE_integer("version", 1, "TF Serving version subdirectory.", flag_values=FLAGS)
flags.DEFINE_integer("top_k", 5, "Number of top classes the signatures return.",
                     flag_values=FLAGS)
flags.DEFINE_enum("model_type", None, ["3d", "2d"], "Sampling of the in-graph evaluation "
                  "views; default: from the model.", flag_values=FLAGS)
flags.DEFINE_integer("num_clips", None, "Clips (3D) / frame tuples (2D) per video; default "
                     "15 / 10 (Sec. 5.2).", flag_values=FLAGS)
flags.DEFINE_integer("num_crops", 1, "1 (whole frame) or 3 crops per clip.", flag_values=FLAGS)
flags.DEFINE_integer("short_side", None, "Frames resized to this shorter side; default "
                     "120 / 240 (Sec. 5.2).", flag_values=FLAGS)
flags.DEFINE_integer("temporal_stride", 1, "3D: every n-th frame in a clip (as in training).",
                     flag_values=FLAGS)
flags.DEFINE_enum("short_video", "loop", ["loop", "pad"], "Videos shorter than a clip: "
                  "indices wrap around or the last frame repeats.", flag_values=FLAGS)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    saved_model_dir: pathlib.Path
    keras_path: pathlib.Path
    sampling: module.Sampling
    class_names: tuple


def export_model(model_dir_or_keras_path, export_dir, *, version=1, class_names=None, top_k=5,
                 model_type=None, num_clips=None, num_crops=1, short_side=None,
                 temporal_stride=1, short_video="loop"):
    """Exports a trained classifier for TF Serving and as a `.keras` file.

    Args:
        model_dir_or_keras_path: a model_dir (uses stage2.keras, else stage1.keras, and
            class_names.txt) or a `.keras` file (class_names.txt next to it, if any); or an
            in-memory `keras.Model`.
        export_dir: output directory; must not already hold `export_dir/<version>`.
        version: TF Serving version number (subdirectory name).
        class_names: overrides the class names read from disk.
        top_k: classes returned by the signatures.
        model_type, num_clips, num_crops, short_side, temporal_stride, short_video: evaluation
            sampling of serve_frames and serve_encoded (`lgd_tf.data.eval_views`); defaults
            from Sec. 5.2.

    Returns:
        An `ExportResult`.
    """
    if int(version) < 0:
        raise ValueError(f"`version` must be a non-negative integer. Received: {version}")
    export_dir = pathlib.Path(export_dir)
    version_dir = export_dir / str(int(version))
    if version_dir.exists():
        raise ValueError(
            f"{version_dir} already exists; export with a new --version (TF Serving serves "
            f"the highest one). Received: export_dir={export_dir}, version={version}")
    if isinstance(model_dir_or_keras_path, (str, pathlib.Path)):
        model, names_on_disk, _ = loading.load_keras_model(model_dir_or_keras_path)
    else:
        model = model_dir_or_keras_path
        names_on_disk = loading.read_class_names(None, module.num_classes(model))
    class_names = list(class_names) if class_names is not None else names_on_disk
    sampling = module.default_sampling(model, model_type=model_type, num_clips=num_clips,
                                       num_crops=num_crops, short_side=short_side,
                                       temporal_stride=temporal_stride, short_video=short_video)
    serving = module.VideoClassifierModule(model, class_names, sampling=sampling, top_k=top_k)

    export_dir.mkdir(parents=True, exist_ok=True)
    # Written next to the final name and renamed, so TF Serving never sees half a version.
    staging_dir = export_dir / f".{int(version)}.partial"
    shutil.rmtree(staging_dir, ignore_errors=True)
    tf.saved_model.save(serving, str(staging_dir), signatures=serving.signatures())
    staging_dir.rename(version_dir)

    keras_path = export_dir / "model.keras"
    model.save(keras_path)
    (export_dir / loading.CLASS_NAMES_FILE).write_text("\n".join(class_names) + "\n")
    return ExportResult(version_dir, keras_path, sampling, tuple(class_names))


def _usage():
    return f"{__doc__}\nFlags:\n{FLAGS.get_help()}"


def run(argv=None):
    """Entry point; returns the process exit code (2 for bad flags, inputs or models)."""
    argv = list(sys.argv if argv is None else argv)
    if any(arg in ("-h", "--help", "-help") for arg in argv[1:]):
        print(_usage())
        return 0
    try:
        FLAGS.unparse_flags()  # run() may be called more than once in a process
        FLAGS(argv)
        for name in ("model_dir", "export_dir"):
            if not FLAGS[name].value:
                raise ValueError(f"--{name} is required. Received: {argv[1:]}")
        start = time.perf_counter()
        result = export_model(
            FLAGS.model_dir, FLAGS.export_dir, version=FLAGS.version, top_k=FLAGS.top_k,
            model_type=FLAGS.model_type, num_clips=FLAGS.num_clips, num_crops=FLAGS.num_crops,
            short_side=FLAGS.short_side, temporal_stride=FLAGS.temporal_stride,
            short_video=FLAGS.short_video)
    except (flags.Error, ValueError, OSError) as error:
        print(f"lgd_tf.export: error: {loading.one_line(error)}", file=sys.stderr)
        return 2
    print(f"SavedModel: {result.saved_model_dir} (signatures: "
          f"{', '.join(module.SIGNATURE_KEYS)}); Keras: {result.keras_path}; "
          f"{len(result.class_names)} classes; {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv))
