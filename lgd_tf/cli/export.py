r"""`python -m lgd_tf.export --model_dir=... --export_dir=...`: SavedModel (TF Serving), LiteRT
or ONNX, + .keras.

    python -m lgd_tf.export --model_dir=runs/lgd3d_r50 --export_dir=exports/lgd3d_r50 \
        [--version=1] [--top_k=5] [--num_clips=15] [--short_side=120] ...
    python -m lgd_tf.export --model_dir=... --export_dir=... --format=litert \
        [--quantize=float16|dynamic_int8] [--crop_size=112] [--eval_pattern=eval-*.tfrecord]
    python -m lgd_tf.export --model_dir=... --export_dir=... --format=onnx

Layout written (TF Serving polls `export_dir` and serves the highest version):

    export_dir/1/             SavedModel: signatures serving_default, serve_encoded,
                              serve_frames, features (see lgd_tf/serving/module.py)
    export_dir/model.keras    the same Keras model (load with keras.saving.load_model after
                              `import lgd_tf`, safe_mode=True)
    export_dir/class_names.txt
    export_dir/export.json    what was exported: class names, model architecture, the run's
                              input spec and the sampling (read by predict and later exports)
    export_dir/model.tflite   --format=litert, instead of export_dir/<version>/
    export_dir/model.onnx     --format=onnx (opset 17), instead of export_dir/<version>/

--format=litert / onnx: input "clip" (1, T, H, W, C) uint8 pixels, output "probabilities"
(1, K) float32 (softmax of the stage-2 head; mean of the stage-1 heads' softmaxes); T and C
from the model, H x W the run's training crop size (its run record's input spec, else 112
LGD-3D / 224 LGD-2D), or --crop_size / --input_height / --input_width. TFLite built-in ops
only (no Select-TF ops); run with ai-edge-litert or onnxruntime, no TensorFlow needed
(docs/export_formats.md); `lgd_tf.predict` runs them too. With --eval_pattern the top-1
accuracy of the exported model and of the Keras model on that evaluation set is printed.

--precise_bn_batches=N recomputes the model's BatchNorm statistics over N training batches
(the run record's train_pattern, or --precise_bn_data) before exporting (train already saves
precise statistics by default, so it is off here).

The SavedModel holds traced graphs and variables only: it runs where lgd_tf is not installed.
An existing version is never overwritten, and a failed write leaves export_dir as it was.
One run per export_dir: an export into a folder holding another run's export (other class
names or another model architecture, compared with its export.json) exits 2 and changes
nothing; export into another --export_dir. One export at a time: a second export into the
same folder while the first writes exits 1, saying that another export is writing there.

Evaluation sampling of serve_frames / serve_encoded: the run's (its run record, or the input
spec a `.keras` file carries); flags given override it; for a model without a recorded spec,
Sec. 5.2 (short side 120 / 240, 15 clips / 10 frame triples), 1 crop, stride 1, loop. The
line `sampling: ...` says what was used and where it came from.

Exit codes: 0 exported; 1 failure at run time (export_dir cannot be written: disk full,
permission denied; another export is writing there); 2 bad usage or input (a bad or missing
flag, no model at --model_dir, a version that already exists, an export_dir that is a file
or holds another run's export).
"""

import time

from absl import flags

from lgd_io.errors import BadInput
from lgd_tf.cli import precise_bn
from lgd_tf.cli.command import Command
from lgd_tf.cli.shared_flags import SAMPLING, define_sampling_flags
from lgd_tf.serving import export as export_lib
from lgd_tf.serving import litert, module
from lgd_tf.serving.export import describe_sampling, export_model

PROGRAM = "lgd_tf.export"
# Flags of the evaluation sampling; given, they override the run's.
SAMPLING_FLAGS = tuple(SAMPLING)


def define_flags(fv):
    flags.DEFINE_string("model_dir", None, "run folder of a trained model (its final "
                        "model, class names and input spec), or a .keras file.", flag_values=fv)
    flags.DEFINE_string("export_dir", None, "output folder; the SavedModel goes to "
                        "export_dir/<version>/.", flag_values=fv)
    flags.DEFINE_integer("version", 1, "TF Serving version subdirectory.", flag_values=fv)
    flags.DEFINE_integer("top_k", 5, "number of top classes the signatures return.",
                         flag_values=fv)
    define_sampling_flags(fv, {
        "model_type": "the run's, else from the model",
        "num_clips": "the run's, else 15 / 10 (Sec. 5.2)",
        "num_crops": "the run's, else 1",
        "short_side": "the run's, else 120 / 240 (Sec. 5.2)",
        "temporal_stride": "the run's, else 1",
        "short_video": "the run's, else loop"}, module_name=__name__)
    flags.DEFINE_enum("format", "saved_model", list(export_lib.FORMATS), "saved_model (TF "
                      "Serving), litert (.tflite) or onnx (.onnx).", flag_values=fv)
    flags.DEFINE_enum("quantize", None, list(litert.QUANTIZATIONS), "litert only: float16 "
                      "weights or dynamic-range int8; default float32.", flag_values=fv)
    for name, what in (("crop_size", "square input size; default the run's training crop "
                         "size, else 112 (3D) / 224 (2D)"),
                       ("input_height", "input height (overrides --crop_size)"),
                       ("input_width", "input width (overrides --crop_size)")):
        flags.DEFINE_integer(name, None, f"litert / onnx: {what}.", flag_values=fv)
    flags.DEFINE_string("eval_pattern", None, "litert / onnx: TFRecord glob of an evaluation "
                        "set; prints the top-1 of the exported and of the Keras model on it "
                        "(views sampled as the export's sampling, centre-cropped to the "
                        "input size).", flag_values=fv)
    flags.DEFINE_integer("eval_max_videos", None, "with --eval_pattern: at most this many "
                         "videos.", flag_values=fv)
    precise_bn.define_flags(fv)


def _check_flags(fv):
    if fv.version < 0:
        raise BadInput(f"--version must be >= 0. Received: {fv.version}")
    for name in ("top_k", "num_clips", "short_side", "temporal_stride", "crop_size",
                 "input_height", "input_width", "eval_max_videos"):
        if fv[name].value is not None and fv[name].value < 1:
            raise BadInput(f"--{name} must be >= 1. Received: {fv[name].value}")
    edge_only = ("quantize", "crop_size", "input_height", "input_width", "eval_pattern")
    if fv.format == "saved_model":
        given = [f"--{name}" for name in edge_only if fv[name].value is not None]
        if given:
            raise BadInput(f"{', '.join(given)} apply to --format=litert / onnx only")
    if fv.quantize is not None and fv.format != "litert":
        raise BadInput(f"--quantize applies to --format=litert only. Received: "
                         f"--format={fv.format}")
    if fv.num_crops not in (None, 1, 3):
        raise BadInput(f"--num_crops must be 1 or 3. Received: {fv.num_crops}")


def export(fv):
    _check_flags(fv)
    from lgd_tf.serving import spec

    source = spec.resolve(fv.model_dir, flag="--model_dir", gradients=True)
    sampling = {flag: fv[flag].value for flag in SAMPLING_FLAGS if fv[flag].value is not None}
    prepare = _precise_bn(fv, source)
    start = time.perf_counter()
    if fv.format != "saved_model":
        return _export_edge(fv, source, sampling, start, prepare)
    result = export_model(fv.model_dir, fv.export_dir, version=fv.version, top_k=fv.top_k,
                          source=source, prepare_model=prepare, **sampling)
    print(f"sampling: {describe_sampling(result.sampling)} ({result.sampling_from})")
    print(f"SavedModel: {result.saved_model_dir} (signatures: "
          f"{', '.join(module.SIGNATURE_KEYS)}); Keras: {result.keras_path}; "
          f"{len(result.class_names)} classes; {time.perf_counter() - start:.1f} s",
          flush=True)


def _precise_bn(fv, source):
    """`prepare_model` for --precise_bn_batches (None when off); checked before any work."""
    import os

    run_dir = fv.model_dir if os.path.isdir(fv.model_dir) else None
    pattern = precise_bn.training_pattern(fv.precise_bn_batches, fv.precise_bn_data, run_dir,
                                          fv.precise_bn_batch_size)
    if pattern is None:
        return None
    if source.video_spec is None:
        raise BadInput(f"--precise_bn_batches: {fv.model_dir} records no input spec (frames, "
                       "crop) to sample the training clips with; export the run folder")

    def prepare(model, resolved):
        from lgd_tf.serving import module

        precise_bn.recompute(model, pattern, resolved.video_spec or source.video_spec,
                             fv.precise_bn_batches, fv.precise_bn_batch_size,
                             module.num_classes(model))
    return prepare


def _export_edge(fv, source, sampling, start, prepare):
    if fv.eval_pattern is not None:
        from lgd_tf.data import pipelines

        pipelines.list_files(fv.eval_pattern)  # an error now rather than after converting
    crop = fv.crop_size
    result = export_model(fv.model_dir, fv.export_dir, format=fv.format,
                          quantize=fv.quantize, input_height=fv.input_height or crop,
                          input_width=fv.input_width or crop, source=source,
                          prepare_model=prepare, **sampling)
    name = {"litert": "LiteRT", "onnx": "ONNX"}[fv.format]
    size = "--crop_size" if fv.crop_size else (
        "--input_height / --input_width" if fv.input_height or fv.input_width else
        ("the run's training crop" if spec_crop(source) else "the default crop of the model "
         "type"))
    print(f"sampling: {describe_sampling(result.sampling)} ({result.sampling_from}); input "
          f"{result.input_shape[2]}x{result.input_shape[3]} ({size})")
    print(f"{name}: {result.model_path} (input clip {result.input_shape} uint8, output "
          f"probabilities (1, {len(result.class_names)}); "
          f"{'float32' if fv.quantize is None else fv.quantize}; "
          f"{result.model_path.stat().st_size / 2**20:.2f} MiB); Keras: {result.keras_path}; "
          f"{len(result.class_names)} classes; {time.perf_counter() - start:.1f} s",
          flush=True)
    if fv.eval_pattern is not None:
        _compare_on(fv, result, name)


def spec_crop(source):
    from lgd_tf.serving import spec

    return spec.crop_size(source)


def _compare_on(fv, result, name):
    """Prints the top-1 of the exported and of the Keras model on --eval_pattern."""
    from lgd_tf.data import eval_dataset
    from lgd_tf.serving import loading

    model, class_names, _ = loading.load_keras_model(result.keras_path)
    modality = "flow" if result.input_shape[-1] == 2 else "rgb"
    s = result.sampling
    dataset = eval_dataset(fv.eval_pattern, model=s.model, modality=modality,
                           num_clips=s.num_clips, num_crops=s.num_crops,
                           num_frames=s.num_frames, num_segments=s.num_segments,
                           short_side=s.short_side, temporal_stride=s.temporal_stride,
                           short_video=s.short_video, num_classes=len(class_names))
    if fv.format == "litert":
        runner = litert.LiteRTRunner(result.model_path)
    else:
        from lgd_tf.serving import onnx

        runner = onnx.ONNXRunner(result.model_path)
    comparison = litert.compare_top1(runner, model, dataset, max_videos=fv.eval_max_videos)
    print(f"evaluation ({fv.eval_pattern}; {describe_sampling(s)}): "
          f"{comparison.describe(name)}", flush=True)


COMMAND = Command(PROGRAM, __doc__, define_flags, export, required=["model_dir", "export_dir"])


def run(argv=None):
    """Runs the command on `argv` (default sys.argv); returns the exit code."""
    return COMMAND.run(argv)

