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

Everything is first written under temporary names in `export_dir` (the SavedModel in
`export_dir/.<version>.partial/`) and renamed once complete (model.tflite / model.onnx replace
the previous file), so TF Serving never sees half a
version. A write that fails (disk full, permission denied) removes what it wrote and raises
`ExportWriteError` naming `export_dir`; the versions and files already there are kept.
"""

import dataclasses
import errno
import os
import pathlib
import shutil
import uuid

import tensorflow as tf

from lgd_tf.serving import loading, module

KERAS_FILE = "model.keras"
FORMATS = ("saved_model", "litert", "onnx")
EDGE_FILES = {"litert": "model.tflite", "onnx": "model.onnx"}
# When neither the caller nor a training run gives them (module.default_sampling takes the
# Sec. 5.2 defaults of num_clips and short_side for the model type).
DEFAULT_NUM_CROPS = 1
DEFAULT_TEMPORAL_STRIDE = 1
DEFAULT_SHORT_VIDEO = "loop"


class ExportWriteError(OSError):
    """The export could not be written (disk full, permission denied, ...).

    `filename` is the export dir, `strerror` says why; nothing that was in the export dir
    before was changed or removed.
    """


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
                 input_height=None, input_width=None):
    """Exports a trained classifier for TF Serving, LiteRT or ONNX, and as a `.keras` file.

    Args:
        model_dir_or_keras_path: a model_dir (uses stage2.keras, else stage1.keras, and
            class_names.txt) or a `.keras` file (class_names.txt next to it, if any); or an
            in-memory `keras.Model`.
        export_dir: output directory; must not already hold `export_dir/<version>`.
        version: TF Serving version number (subdirectory name).
        class_names: overrides the class names read from disk.
        top_k: classes returned by the signatures.
        model_type, num_clips, num_crops, short_side, temporal_stride, short_video: evaluation
            sampling of serve_frames and serve_encoded (`lgd_tf.data.eval_views`); None takes
            the default: model type from the model, 15 / 10 clips and short side 120 / 240
            (Sec. 5.2), 1 crop, stride 1, "loop". SavedModel only.
        format: "saved_model" (TF Serving, `export_dir/<version>/`), "litert"
            (`export_dir/model.tflite`) or "onnx" (`export_dir/model.onnx`); the last two
            take one uint8 clip `(1, T, input_height, input_width, C)` and return the class
            probabilities `(1, K)`.
        quantize: litert only: None, "float16" or "dynamic_int8".
        input_height, input_width: litert / onnx input size; default the model's training
            crop size (112 LGD-3D, 224 LGD-2D) unless the model's input has a fixed size.

    Returns:
        An `ExportResult`.

    Raises:
        ValueError: a bad argument, model or class names, or `export_dir/<version>` exists.
        NotADirectoryError: `export_dir` (or a folder above it) is a file.
        ExportWriteError: writing failed; what export_dir held before is unchanged.
    """
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}. Received: {format!r}")
    if quantize is not None and format != "litert":
        raise ValueError(f"`quantize` applies to the litert format only. Received: "
                         f"quantize={quantize!r}, format={format!r}")
    if isinstance(version, bool) or int(version) < 0:
        raise ValueError(f"`version` must be a non-negative integer. Received: {version}")
    version = int(version)
    export_dir = pathlib.Path(export_dir)
    _check_is_a_folder(export_dir)
    version_dir = export_dir / str(version)
    if format == "saved_model" and version_dir.exists():
        raise ValueError(
            f"{version_dir} already exists; export with a new --version (TF Serving serves "
            f"the highest one). Received: export_dir={export_dir}, version={version}")
    if isinstance(model_dir_or_keras_path, (str, pathlib.Path)):
        model, names_on_disk, _ = loading.load_keras_model(model_dir_or_keras_path)
    else:
        model = model_dir_or_keras_path
        names_on_disk = loading.read_class_names(None, module.num_classes(model))
    class_names = [str(c) for c in class_names] if class_names is not None else names_on_disk
    sampling = module.default_sampling(
        model, model_type=model_type, num_clips=num_clips,
        num_crops=DEFAULT_NUM_CROPS if num_crops is None else num_crops,
        short_side=short_side,
        temporal_stride=DEFAULT_TEMPORAL_STRIDE if temporal_stride is None else temporal_stride,
        short_video=DEFAULT_SHORT_VIDEO if short_video is None else short_video)
    if format != "saved_model":
        return _export_edge(model, export_dir, class_names, sampling, format, quantize,
                            input_height, input_width)
    serving = module.VideoClassifierModule(model, class_names, sampling=sampling, top_k=top_k)
    keras_path = _write(export_dir, version_dir, serving, model, class_names)
    return ExportResult(version_dir, keras_path, sampling, tuple(class_names))


def _export_edge(model, export_dir, class_names, sampling, format, quantize, height, width):
    from lgd_tf.serving import litert

    if len(class_names) != module.num_classes(model):
        raise ValueError(f"{len(class_names)} class names for a model of "
                         f"{module.num_classes(model)} classes")
    shape = litert.input_shape(model, height, width)
    if format == "litert":
        content = litert.convert_litert(model, height=shape[2], width=shape[3],
                                        quantize=quantize)
    else:
        from lgd_tf.serving import onnx

        content = onnx.convert_onnx(model, height=shape[2], width=shape[3])
    path = export_dir / EDGE_FILES[format]
    keras_path = _write(export_dir, None, None, model, class_names, files={path: content})
    return ExportResult(None, keras_path, sampling, tuple(class_names), format=format,
                        model_path=path, input_shape=shape, quantize=quantize)


def _check_is_a_folder(export_dir):
    """NotADirectoryError if export_dir, or the nearest existing folder above it, is a file."""
    for path in (export_dir, *export_dir.parents):
        if path.exists():
            if not path.is_dir():
                if path == export_dir:
                    raise NotADirectoryError(f"export_dir {export_dir} is a file, not a folder")
                raise NotADirectoryError(
                    f"export_dir {export_dir} cannot be created: {path} is a file")
            return


def _write(export_dir, version_dir, serving, model, class_names, files=None):
    """Writes the export under temporary names, then renames; returns the .keras path.

    With `serving` None no SavedModel is written; `files` ({path: bytes}, e.g. model.tflite)
    are written under temporary names and replace their paths first."""
    created = [p for p in (export_dir, *export_dir.parents) if not p.exists()]
    tag = uuid.uuid4().hex[:8]
    staging_dir = (export_dir / f".{version_dir.name}.partial") if serving is not None else None
    keras_tmp = export_dir / f".model.tmp-{tag}.keras"  # Keras picks the format by the suffix
    names_tmp = export_dir / f".{loading.CLASS_NAMES_FILE}.tmp-{tag}"
    file_tmps = {path: export_dir / f".{path.name}.tmp-{tag}" for path in (files or {})}
    keras_path = export_dir / KERAS_FILE
    # Traces the functions (before anything is written).
    signatures = serving.signatures() if serving is not None else None
    renamed = False
    try:
        export_dir.mkdir(parents=True, exist_ok=True)
        if serving is not None:
            shutil.rmtree(staging_dir, ignore_errors=True)  # left by an export that was killed
            tf.saved_model.save(serving, str(staging_dir), signatures=signatures)
        for path, tmp in file_tmps.items():
            tmp.write_bytes(files[path])
        model.save(keras_tmp)
        names_tmp.write_text("\n".join(class_names) + "\n")
        if serving is not None:
            staging_dir.rename(version_dir)
            renamed = True
        for path, tmp in file_tmps.items():
            os.replace(tmp, path)
        os.replace(keras_tmp, keras_path)
        os.replace(names_tmp, export_dir / loading.CLASS_NAMES_FILE)
    except (OSError, tf.errors.OpError) as error:
        if renamed and not keras_tmp.exists():
            renamed = False  # model.keras was replaced: the new version stays whole
        _remove([p for p in [staging_dir, keras_tmp, names_tmp, *file_tmps.values()] if p]
                + ([version_dir] if renamed else []), created)
        reason = _reason(error, export_dir)
        raise ExportWriteError(
            _errno(error), f"cannot write the export: {reason}; what was in it before is "
            "unchanged", str(export_dir)) from error
    return keras_path


def _remove(paths, created_dirs):
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
    for folder in created_dirs:  # deepest first; only folders this export created, if empty
        try:
            folder.rmdir()
        except OSError:
            break


def _errno(error):
    if isinstance(error, OSError) and error.errno:
        return error.errno
    if isinstance(error, tf.errors.ResourceExhaustedError):
        return errno.ENOSPC
    if isinstance(error, tf.errors.PermissionDeniedError):
        return errno.EACCES
    return errno.EIO


def _reason(error, export_dir):
    """"No space left on device" (and the file) for an OSError; TF's first line otherwise."""
    if isinstance(error, OSError) and error.strerror:
        if error.filename and str(error.filename) != str(export_dir):
            return f"{error.strerror} ({error.filename})"
        return error.strerror
    return loading.one_line(getattr(error, "message", None) or error)
