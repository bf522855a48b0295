"""Export of a trained classifier for TF Serving (a SavedModel), LiteRT or ONNX, and as `.keras`.

Layout written (TF Serving polls `export_dir` and serves the highest version):

    export_dir/1/             format "saved_model": signatures serving_default, serve_encoded,
                              serve_frames, features (see lgd_tf/serving/module.py)
    export_dir/model.tflite   format "litert": one clip (1, T, H, W, C) uint8 -> probabilities
                              (1, K), TFLite built-in ops only (lgd_tf/serving/litert.py)
    export_dir/model.onnx     format "onnx": the same function, opset 17 (lgd_tf/serving/onnx.py)
    export_dir/model.keras    the same Keras model (load with keras.saving.load_model after
                              `import lgd_tf`, safe_mode=True)
    export_dir/class_names.txt
    export_dir/export.json    what was exported: class names, model architecture, the run's
                              input spec and the evaluation sampling (read by predict)

One run per folder: an export into a folder holding another run's export (other class names or
another model architecture) is refused before anything is written. One export at a time: the
folder is locked (`lgd_io.files.folder_lock`) for the whole export.

Everything is first written under temporary names in `export_dir` (the SavedModel in
`export_dir/.<version>.partial/`) and renamed once every file is complete, so TF Serving never
sees half a version. A write that fails (disk full, permission denied) removes what it wrote
and raises `ExportWriteError` naming `export_dir`; the versions and files already there are
kept.
"""

import dataclasses
import json
import pathlib
import shutil

import tensorflow as tf

from lgd_io import files
from lgd_io.errors import BadInput, RunFailure
from lgd_tf.runs.run_folder import LOCK  # held by the export writing into the folder
from lgd_tf.serving import loading, module, spec
from lgd_tf.serving.spec import (  # noqa: F401  (the export folder's files, defined there)
    EDGE_FILES,
    EXPORT_RECORD,
    KERAS_FILE,
    read_export_record,
)

FORMATS = ("saved_model", "litert", "onnx")
# When neither the caller nor a training run gives them (module.default_sampling takes the
# Sec. 5.2 defaults of num_clips and short_side for the model type).
DEFAULT_NUM_CROPS = 1
DEFAULT_TEMPORAL_STRIDE = 1
DEFAULT_SHORT_VIDEO = "loop"


class ExportWriteError(RunFailure, OSError):
    """The export could not be written (disk full, permission denied, ...); exit 1.

    `filename` is the export dir, `reason` says why; nothing that was in the export dir
    before was changed or removed.
    """

    def __init__(self, export_dir, reason):
        self.message = (f"cannot write the export in {export_dir}: {reason}; what was in it "
                        "before is unchanged")
        super().__init__(self.message)
        self.filename = str(export_dir)
        self.reason = reason

    def __str__(self):
        return self.message


@dataclasses.dataclass(frozen=True)
class ExportResult:
    saved_model_dir: pathlib.Path  # None for the litert and onnx formats
    keras_path: pathlib.Path
    sampling: module.Sampling
    class_names: tuple
    format: str = "saved_model"
    model_path: pathlib.Path = None  # model.tflite / model.onnx
    input_shape: tuple = None  # (1, T, H, W, C) of model.tflite / model.onnx
    quantize: str = None
    sampling_from: str = ""  # where the sampling came from ("from runs/x/run.json; ...")


def describe_sampling(sampling):
    """One line: "2 clips x 1 crop of 8 frames, short side 32, stride 1, loop"."""
    crops = f"{sampling.num_crops} crop{'s' if sampling.num_crops != 1 else ''}"
    if sampling.model == "2d":
        views = (f"{sampling.num_clips} frame tuples x {crops} of {sampling.num_segments} "
                 "segments")
    else:
        views = (f"{sampling.num_clips} clips x {crops} of {sampling.num_frames} frames, "
                 f"short side {sampling.short_side}, stride {sampling.temporal_stride}")
        return f"{views}, {sampling.short_video}"
    return f"{views}, short side {sampling.short_side}, {sampling.short_video}"


def export_model(model_dir_or_keras_path, export_dir, *, version=1, class_names=None, top_k=5,
                 model_type=None, num_clips=None, num_crops=None, short_side=None,
                 temporal_stride=None, short_video=None, format="saved_model", quantize=None,
                 input_height=None, input_width=None, video_spec=None, source=None,
                 prepare_model=None):
    """Exports a trained classifier for TF Serving, LiteRT or ONNX, and as a `.keras` file.

    Args:
        model_dir_or_keras_path: a run folder (its final model and class names) or a `.keras`
            file (class_names.txt next to it, if any); or an in-memory `keras.Model`.
        export_dir: output directory; must not already hold `export_dir/<version>`, nor
            another run's export.
        version: TF Serving version number (subdirectory name).
        class_names: overrides the class names read from disk.
        top_k: classes returned by the signatures.
        model_type, num_clips, num_crops, short_side, temporal_stride, short_video: evaluation
            sampling of serve_frames and serve_encoded (`lgd_tf.data.eval_views`); None takes
            the run's (its `video_spec`), else the default: model type from the model, 15 /
            10 clips and short side 120 / 240 (Sec. 5.2), 1 crop, stride 1, "loop".
        format: "saved_model" (TF Serving, `export_dir/<version>/`), "litert"
            (`export_dir/model.tflite`) or "onnx" (`export_dir/model.onnx`); the last two
            take one uint8 clip `(1, T, input_height, input_width, C)` and return the class
            probabilities `(1, K)`.
        quantize: litert only: None, "float16" or "dynamic_int8".
        input_height, input_width: litert / onnx input size; default the run's training crop
            size (else 112 LGD-3D, 224 LGD-2D) unless the model's input has a fixed size.
        video_spec: the run's input spec for an in-memory model (read from the run otherwise).
        source: a resolved `spec.ModelSource` (the command resolves it once).
        prepare_model: optional `prepare_model(model, source)` called on the loaded model
            before anything is exported (the command's precise BatchNorm statistics).

    Returns:
        An `ExportResult`.

    Raises:
        BadInput: a bad argument, model or class names, `export_dir/<version>` exists, or
            `export_dir` holds another run's export.
        RunFailure: another export is writing into `export_dir`.
        ExportWriteError: writing failed; what export_dir held before is unchanged.
    """
    _check_arguments(format, quantize, version)
    version = int(version)
    export_dir = pathlib.Path(export_dir)
    _check_is_a_folder(export_dir)
    if format == "saved_model":
        _new_version_dir(export_dir, version)  # before the slow part; again under the lock
    model, names_on_disk, source = _load_model(model_dir_or_keras_path, source, video_spec)
    if prepare_model is not None:
        prepare_model(model, source)
    class_names = _class_names(model, class_names, names_on_disk)
    sampling, origin = spec.sampling_for(
        source, model, model_type=model_type, num_clips=num_clips, num_crops=num_crops,
        short_side=short_side, temporal_stride=temporal_stride, short_video=short_video)
    record = _export_record(model, class_names, source, sampling)
    height = input_height or spec.crop_size(source)
    width = input_width or spec.crop_size(source)
    created = [p for p in (export_dir, *export_dir.parents) if not p.exists()]
    try:
        with files.folder_lock(export_dir, lock_name=LOCK, in_use_hint=(
                "another export is writing there; wait for it to end, or give another "
                "--export_dir")):
            _check_same_run(export_dir, record)
            if format != "saved_model":
                result = _export_edge(model, export_dir, record, sampling, format, quantize,
                                      height, width)
                return dataclasses.replace(result, sampling_from=origin)
            version_dir = _new_version_dir(export_dir, version)
            serving = module.VideoClassifierModule(model, class_names, sampling=sampling,
                                                   top_k=top_k)
            keras_path = _write(export_dir, model, record, version_dir=version_dir,
                                serving=serving)
    except BaseException:
        _remove_created(created)
        raise
    return ExportResult(version_dir, keras_path, sampling, tuple(class_names),
                        sampling_from=origin)


def _load_model(model_dir_or_keras_path, source, video_spec):
    """(model, class names read from disk, resolved `spec.ModelSource`) of a run folder or
    `.keras` path (resolved here unless `source` is given), or of an in-memory model."""
    if isinstance(model_dir_or_keras_path, (str, pathlib.Path)):
        if source is None:
            source = spec.resolve(model_dir_or_keras_path, flag="--model_dir", gradients=True)
        model, names_on_disk, _ = loading.load_keras_model(source.file)
        return model, names_on_disk, spec.with_model(source, model)
    model = model_dir_or_keras_path
    names_on_disk = loading.read_class_names(None, module.num_classes(model))
    return model, names_on_disk, spec.ModelSource("keras", None, "", video_spec=video_spec)


def _class_names(model, class_names, names_on_disk):
    """The class names exported: `class_names` if given, else those read from disk; BadInput
    unless there is one per class of the model."""
    class_names = [str(c) for c in class_names] if class_names is not None else names_on_disk
    if len(class_names) != module.num_classes(model):
        raise BadInput(f"{len(class_names)} class names for a model of "
                       f"{module.num_classes(model)} classes")
    return class_names


def _new_version_dir(export_dir, version):
    version_dir = export_dir / str(version)
    if version_dir.exists():
        raise BadInput(
            f"{version_dir} already exists; export with a new --version (TF Serving serves "
            f"the highest one). Received: export_dir={export_dir}, version={version}")
    return version_dir


def _check_arguments(format, quantize, version):
    if format not in FORMATS:
        raise BadInput(f"`format` must be one of {FORMATS}. Received: {format!r}")
    if quantize is not None and format != "litert":
        raise BadInput(f"`quantize` applies to the litert format only. Received: "
                       f"quantize={quantize!r}, format={format!r}")
    if isinstance(version, bool) or int(version) < 0:
        raise BadInput(f"`version` must be a non-negative integer. Received: {version}")


def _export_record(model, class_names, source, sampling):
    from lgd_tf.runs import run_folder

    return {"class_names": list(class_names),
            "architecture": json.loads(json.dumps(run_folder.model_architecture(model))),
            "source": str(source.file) if source.file is not None else None,
            "video_spec": source.video_spec,
            "run_id": source.run_id,
            "sampling": sampling.as_kwargs()}


def _check_same_run(export_dir, record):
    """BadInput if `export_dir` holds an export of another run (other class names, model
    architecture, or training run id where both exports know theirs); an export folder
    written before export.json existed is compared by its class_names.txt and model.keras."""
    recorded = read_export_record(export_dir)
    if recorded is None:
        recorded = _legacy_record(export_dir)
        if recorded is None:
            return
    what = None
    old, new = recorded.get("class_names"), record["class_names"]
    if old is not None and list(old) != list(new):
        if len(old) != len(new):
            what = f"{len(old)} classes there, {len(new)} here"
        else:
            i = next(i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b)
            what = f"class {i} is {old[i]!r} there and {new[i]!r} here"
    elif recorded.get("architecture") is not None:
        before, now = recorded["architecture"], record["architecture"]
        differ = [k for k in sorted(set(before) & set(now)) if before[k] != now[k]]
        if differ:
            setting = differ[0].rsplit(".", 1)[-1]
            what = (f"its model has {setting}={before[differ[0]]!r}, this one "
                    f"{setting}={now[differ[0]]!r}")
    if what is None and None not in (recorded.get("run_id"), record["run_id"]) and (
            recorded["run_id"] != record["run_id"]):
        what = (f"run {recorded['run_id'][:8]} there, run {record['run_id'][:8]} here, with the "
                "same classes and model")
    if what is not None:
        raise BadInput(f"--export_dir={export_dir} holds the export of another run ({what}); "
                       "export into another --export_dir")


def _legacy_record(export_dir):
    """{"class_names", "architecture"} of an export folder without export.json, or None."""
    from lgd_tf.runs import run_folder

    names = run_folder.RunFolder(export_dir).read_class_names()
    keras_path = export_dir / KERAS_FILE
    if names is None and not keras_path.is_file():
        return None
    architecture = None
    if keras_path.is_file():
        try:
            model, _, _ = loading.load_keras_model(keras_path)
        except ValueError:
            raise BadInput(f"--export_dir={export_dir} holds a {KERAS_FILE} that cannot be "
                           "loaded; export into another --export_dir") from None
        architecture = json.loads(json.dumps(run_folder.model_architecture(model)))
    return {"class_names": names, "architecture": architecture}


def _export_edge(model, export_dir, record, sampling, format, quantize, height, width):
    from lgd_tf.serving import litert

    shape = litert.input_shape(model, height, width)
    if format == "litert":
        content = litert.convert_litert(model, height=shape[2], width=shape[3],
                                        quantize=quantize)
    else:
        from lgd_tf.serving import onnx

        content = onnx.convert_onnx(model, height=shape[2], width=shape[3])
    path = export_dir / EDGE_FILES[format]
    record = dict(record, input_shapes={**_recorded_shapes(export_dir), format: list(shape)})
    keras_path = _write(export_dir, model, record, files_to_write={path: content})
    return ExportResult(None, keras_path, sampling, tuple(record["class_names"]),
                        format=format, model_path=path, input_shape=shape, quantize=quantize)


def _recorded_shapes(export_dir):
    return (read_export_record(export_dir) or {}).get("input_shapes", {})


def _check_is_a_folder(export_dir):
    """BadInput if export_dir, or the nearest existing folder above it, is a file."""
    for path in (export_dir, *export_dir.parents):
        if path.exists():
            if not path.is_dir():
                if path == export_dir:
                    raise BadInput(f"--export_dir={export_dir} is a file, not a folder")
                raise BadInput(
                    f"--export_dir={export_dir} cannot be created: {path} is a file")
            return


def _write(export_dir, model, record, *, version_dir=None, serving=None, files_to_write=None):
    """Writes the export under temporary names, then renames; returns the .keras path.

    With `serving` None no SavedModel is written; `files_to_write` ({path: bytes}, e.g.
    model.tflite) are staged with model.keras, class_names.txt and export.json, and all are
    renamed together once every one is complete."""
    from lgd_tf.runs import run_folder

    staging_dir = (export_dir / f".{version_dir.name}.partial") if serving is not None else None
    keras_path = export_dir / KERAS_FILE
    # Traces the functions (before anything is written).
    signatures = serving.signatures() if serving is not None else None
    renamed = False
    try:
        with files.Outputs() as outputs:
            export_dir.mkdir(parents=True, exist_ok=True)
            if serving is not None:
                shutil.rmtree(staging_dir, ignore_errors=True)  # left by a killed export
                tf.saved_model.save(serving, str(staging_dir), signatures=signatures)
            for path, content in (files_to_write or {}).items():
                pathlib.Path(outputs.path(path)).write_bytes(content)
            model.save(outputs.path(keras_path))
            pathlib.Path(outputs.path(export_dir / run_folder.CLASS_NAMES)).write_text(
                "\n".join(record["class_names"]) + "\n")
            pathlib.Path(outputs.path(export_dir / EXPORT_RECORD)).write_text(
                json.dumps(record, indent=2, sort_keys=True) + "\n")
            if serving is not None:
                staging_dir.rename(version_dir)
                renamed = True
    except (OSError, tf.errors.OpError, RunFailure) as error:
        if isinstance(error, ExportWriteError):
            raise
        if staging_dir is not None:
            shutil.rmtree(staging_dir, ignore_errors=True)
        if renamed:
            shutil.rmtree(version_dir, ignore_errors=True)
        reason = (error.args[0].rsplit(": ", 1)[-1] if isinstance(error, RunFailure)
                  else files.failure_reason(error))
        raise ExportWriteError(export_dir, reason) from error
    return keras_path


def _remove_created(created_dirs):
    for folder in created_dirs:  # deepest first; only folders this export created, if empty
        lock = folder / LOCK
        if folder.is_dir() and [p.name for p in folder.iterdir()] == [lock.name]:
            lock.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            break
