"""Which model a path names, and the input spec and evaluation sampling it was trained with.

Every command that takes a model (export, predict, explain) resolves it here, so they all
score a video the same way:

- a run folder: its record (`lgd_tf.runs.run_folder`, the run's `video_spec`) and its
  final model (stage 2, else stage 1);
- a `.keras` file: the `video_spec` in the classifier's config (`lgd_tf.models.video_spec`),
  or, inside an export folder, the sampling that export recorded;
- an export folder: its SavedModel (sampling fixed at export), else its `model.tflite` /
  `model.onnx` (one clip at the training crop size), else its `model.keras`;
- a `.tflite` / `.onnx` file: the sampling its export recorded;
- anything without a spec (a model saved before specs were recorded): the Sec. 5.2 defaults,
  and the origin says so.

`ModelSource.origin` is the text of the command's line "sampling: ... (from ...)".
"""

import dataclasses
import json
import os
import pathlib

from lgd_io.errors import BadInput
from lgd_tf.serving import loading, module

KERAS_SUFFIX = ".keras"
EDGE_SUFFIXES = {".tflite": "litert", ".onnx": "onnx"}
# The files of an export folder (lgd_tf.serving.export writes them).
KERAS_FILE = "model.keras"
EXPORT_RECORD = "export.json"
EDGE_FILES = {"litert": "model.tflite", "onnx": "model.onnx"}
MODEL_TYPES = {"lgd3d": "3d", "lgd2d": "2d"}
SAMPLING_KEYS = ("num_clips", "num_crops", "short_side", "temporal_stride", "short_video")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A resolved model path.

    Attributes:
        kind: "keras", "saved_model", "litert" or "onnx".
        file: the `.keras` / `.tflite` / `.onnx` file, or the SavedModel's version folder.
        given: the path the user gave.
        video_spec: the run's input spec (dict, see `lgd_tf.runs.run_folder`), or None.
        sampling: a recorded `module.Sampling` (a SavedModel's, an export's), or None.
        origin: where the spec / sampling came from ("from runs/x/run.json").
        class_names: the class names recorded with the model, or None.
        run_id: the training run's id (its run.json), when the model came from a run folder.
    """

    kind: str
    file: pathlib.Path
    given: str
    video_spec: dict = None
    sampling: module.Sampling = None
    origin: str = ""
    class_names: tuple = None
    run_id: str = None


def _run_folder():
    from lgd_tf.runs import run_folder

    return run_folder


def resolve(path, *, flag="--model", gradients=False):
    """The model at `path` (see the module docstring).

    Args:
        path: what the user gave.
        flag: the flag it came from, for messages.
        gradients: the caller needs a Keras model (explain, export): a SavedModel, LiteRT or
            ONNX file is refused with one line.

    Raises:
        BadInput: nothing usable at `path` (one line naming the flag and the path).
    """
    given = os.fspath(path)
    path = pathlib.Path(given)
    if not path.exists():
        raise BadInput(f"{flag}={given}: no such file or folder")
    source = _resolve_file(path, flag) if path.is_file() else _resolve_folder(path, gradients)
    if source is None:
        raise BadInput(
            f"{flag}={given}: no model there; expected a run folder, an export folder, or a "
            f".keras{'' if gradients else ', .tflite or .onnx'} file")
    source = dataclasses.replace(source, given=given)
    if gradients and source.kind != "keras":
        what = {"saved_model": "a SavedModel", "litert": "a LiteRT file",
                "onnx": "an ONNX file"}[source.kind]
        raise BadInput(f"{flag}={given} is {what}, which keeps no gradients; give the run "
                       "folder or a .keras file")
    return source


def _resolve_file(path, flag):
    suffix = path.suffix.lower()
    if suffix == KERAS_SUFFIX:
        return _keras_source(path)
    if suffix in EDGE_SUFFIXES:
        return _edge_source(path, EDGE_SUFFIXES[suffix])
    raise BadInput(f"{flag}={path} is not a model file: expected a .keras, .tflite or .onnx "
                   "file, a run folder or an export folder")


def _resolve_folder(path, gradients):
    run_folder = _run_folder()
    if (path / run_folder.RUN_RECORD).is_file():
        run = run_folder.RunFolder(path).read_run()
        return ModelSource("keras", pathlib.Path(run.final_model_path()), str(path),
                           video_spec=run.video_spec,
                           origin=f"from {path / run_folder.RUN_RECORD}",
                           class_names=tuple(run.class_names), run_id=run.run_id)
    saved_model = loading.find_saved_model(path)
    if saved_model is not None and not gradients:
        return ModelSource("saved_model", saved_model, str(path))
    for name in loading.STAGE_FILES:  # a folder of stage files without a record (older runs)
        if (path / name).is_file():
            return _keras_source(path / name)
    if not gradients:
        for kind, name in EDGE_FILES.items():
            if (path / name).is_file():
                return _edge_source(path / name, kind)
    if (path / KERAS_FILE).is_file():
        return _keras_source(path / KERAS_FILE)
    if saved_model is not None:
        return ModelSource("saved_model", saved_model, str(path))
    for kind, name in EDGE_FILES.items():
        if (path / name).is_file():
            return ModelSource(kind, path / name, str(path))
    return None


def read_export_record(folder):
    """`folder/export.json` as a dict, or None when there is none (or it is unreadable)."""
    path = pathlib.Path(folder) / EXPORT_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "sampling" in record else None


def _keras_source(path):
    record = read_export_record(path.parent)
    if record is not None and path.name == KERAS_FILE:
        return ModelSource("keras", path, str(path), video_spec=record.get("video_spec"),
                           sampling=module.Sampling(**record["sampling"]),
                           origin=f"from {path.parent / EXPORT_RECORD}")
    return ModelSource("keras", path, str(path))  # the spec is in the file: `with_model`


def _edge_source(path, kind):
    record = read_export_record(path.parent)
    if record is None:
        return ModelSource(kind, path, str(path),
                           origin=f"Sec. 5.2 defaults: {path.parent} holds no export record")
    return ModelSource(kind, path, str(path), video_spec=record.get("video_spec"),
                       sampling=module.Sampling(**record["sampling"]),
                       origin=f"from {path.parent / EXPORT_RECORD}",
                       class_names=tuple(record["class_names"]))


def keras_video_spec(model):
    """The `video_spec` a `.keras` model carries in its config, or None (older files)."""
    from lgd_tf import models

    reader = getattr(models, "video_spec", None)
    return reader(model) if reader is not None else None


def with_model(source, model):
    """`source` completed from the loaded Keras model: its own spec when none was recorded
    beside it."""
    if source.video_spec is not None or source.sampling is not None:
        return source
    spec = keras_video_spec(model)
    if spec is None:
        return dataclasses.replace(
            source, origin=f"Sec. 5.2 defaults: {source.file} records no input spec")
    return dataclasses.replace(source, video_spec=spec,
                               origin=f"from the config of {source.file}")


def sampling_for(source, model=None, **overrides):
    """The evaluation sampling of `source`: the recorded sampling, else its `video_spec`'s
    evaluation settings, else the Sec. 5.2 defaults for `model`; `overrides` given (not None)
    replace single settings.

    Returns:
        `(module.Sampling, origin)`, the origin naming the overriding flags.
    """
    given = {name: value for name, value in overrides.items() if value is not None}
    if source.sampling is not None:
        sampling = dataclasses.replace(
            source.sampling, **{k: v for k, v in given.items() if k != "model_type"})
        if "model_type" in given:
            sampling = dataclasses.replace(sampling, model=given["model_type"])
    else:
        if model is None:
            raise ValueError(f"{source.file} records no sampling: a Keras model is needed")
        spec = source.video_spec or {}
        recorded = {k: v for k, v in (spec.get("eval") or {}).items()
                    if k in SAMPLING_KEYS and v is not None}
        model_type = given.get("model_type") or MODEL_TYPES.get(spec.get("model_type"))
        settings = {**recorded, **{k: v for k, v in given.items() if k != "model_type"}}
        sampling = module.default_sampling(
            model, model_type=model_type, num_clips=settings.get("num_clips"),
            num_crops=settings.get("num_crops", 1), short_side=settings.get("short_side"),
            temporal_stride=settings.get("temporal_stride", 1),
            short_video=settings.get("short_video", "loop"))
    return sampling, describe_origin(source.origin, given)


def describe_origin(origin, given):
    """"from runs/x/run.json; --num_clips overrides"."""
    origin = origin or "Sec. 5.2 defaults"
    if given:
        names = ", ".join(f"--{name}" for name in given)
        origin += f"; {names} override{'s' if len(given) == 1 else ''}"
    return origin


def crop_size(source):
    """The run's training crop size, or None when not recorded."""
    spec = source.video_spec or {}
    return spec.get("crop_size")
