"""The run folder (model_dir) of a training run: its files, its record, a lock, atomic writes.

Layout (the file names are defined here only: every command gets them from this module):

    model_dir/
      .lock                 held by the training process (pid, host, start time inside)
      run.json              the run record: class names, each stage's model architecture, the
                            video spec (input and evaluation sampling), the data, the finished
                            stages (`RunFolder.read_run` -> `RunRecord`)
      class_names.txt       one class name per line (index order)
      operative_config.gin  the configuration of the last finished stage (gin's operative config)
      stage1/ stage2/       checkpoints (ckpt-N), best/ (best eval top-1), train/ and eval/
                            TensorBoard logs
      stage1.keras          the final model of each stage (Sec. 4.3), carrying the video spec
      stage2.keras
      eval_results.json, confusion_matrix.{csv,png}, eval_predictions.csv, eval_scores.npz

Every file is written to a temporary name and renamed, so a file on disk is whole or absent;
a write that fails (disk full, permission denied) is a `RunFailure` naming the path, and the
complete file it would have replaced is kept. A rerun first compares its class names and
model architecture with `run.json` and refuses a difference (`BadInput`, naming the
setting) before it writes anything; schedule-only changes (steps, learning rate) go on.
"""

import ast
import contextlib
import dataclasses
import json
import os
import re
import uuid

import keras
import tensorflow as tf

from lgd_io import class_names as class_names_file
from lgd_io import files
from lgd_io.files import atomic_write, failure_reason, write_bytes, write_json, write_text  # noqa: F401
from lgd_tf.data import pipelines
from lgd_io.errors import BadInput, RunFailure, TrainingError

RUN_RECORD = "run.json"
CLASS_NAMES = class_names_file.FILE_NAME
OPERATIVE_CONFIG = "operative_config.gin"
EVAL_RESULTS = "eval_results.json"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
EVAL_PREDICTIONS = "eval_predictions.csv"
EVAL_SCORES = "eval_scores.npz"
EVAL_FILES = (EVAL_RESULTS, CONFUSION_CSV, CONFUSION_PNG, EVAL_PREDICTIONS, EVAL_SCORES)
LOCK = ".lock"
STAGES = ("stage1", "stage2")
MODEL_SUFFIX = ".keras"


def stage_file(stage):
    """The file name of a stage's final model: "stage1" -> "stage1.keras"."""
    return f"{stage}{MODEL_SUFFIX}"


# The stage models a loader looks for, the last stage first.
STAGE_FILES = tuple(stage_file(stage) for stage in reversed(STAGES))


class_names_path = class_names_file.path_in


def eval_scores_path(folder):
    """`folder/eval_scores.npz`, the per-video scores `evaluate --fuse_with` reads."""
    return os.path.join(os.fspath(folder), EVAL_SCORES)


read_class_names = class_names_file.read


def class_difference(recorded, current, recorded_as="there", current_as=None):
    """What differs between two lists of class names, in words, or None.

    `recorded_as` / `current_as` say where each list is from ("there" / "here", the counts
    "in this run's data")."""
    recorded, current = list(recorded), list(current)
    if recorded == current:
        return None
    if len(recorded) != len(current):
        counted_as = current_as or "in this run's data"
        return f"{len(recorded)} classes {recorded_as}, {len(current)} {counted_as}"
    i = next(i for i, (a, b) in enumerate(zip(recorded, current, strict=True)) if a != b)
    named_as = current_as or "here"
    return f"class {i} is {recorded[i]!r} {recorded_as} and {current[i]!r} {named_as}"


# Keys of a serialised model that do not change the weights' meaning: names, dtype policies,
# and initialisation-only settings (a restored checkpoint overwrites what they chose,
# Tensor Sketch's hashes and signs included).
_NOT_ARCHITECTURE = {"name", "dtype", "trainable", "build_config", "compile_config", "module",
                     "registered_name", "zero_init_global_residual", "sketch_seed", "video_spec"}


def save_model(model, path, what=None):
    """`model.save(path)` (a `.keras` file) through a temporary name; `what` names the file
    in an error (default the path)."""
    atomic_write(path, model.save, what=what)


def model_architecture(model):
    """The settings that define a model's weights, flattened: {"backbone.base_filters": 4, ...}.

    From Keras' serialisation of the model (every constructor argument of the classifier and
    its backbone), without names and dtype policies.
    """
    flat = {}

    def walk(value, prefix):
        if isinstance(value, dict):
            if "config" in value and "class_name" in value:
                flat[f"{prefix}class" if prefix else "class"] = value["class_name"]
                walk(value["config"], prefix)
                return
            for key, item in value.items():
                if key not in _NOT_ARCHITECTURE:
                    walk(item, f"{prefix}{key}.")
            return
        if isinstance(value, (list, tuple)):
            value = json.loads(json.dumps(value))
        flat[prefix.rstrip(".")] = value

    walk(keras.saving.serialize_keras_object(model), "")
    return flat


def _first_difference(recorded, current):
    """The first setting both records hold with different values (settings only one of them
    has, e.g. an argument added by a later version, are not compared)."""
    for key in sorted(set(recorded) & set(current)):
        if key in _NOT_ARCHITECTURE or key.rsplit(".", 1)[-1] in _NOT_ARCHITECTURE:
            continue
        if recorded[key] != current[key]:
            return key, recorded[key], current[key]
    return None


# -- the video spec -----------------------------------------------------------------------

EVAL_SAMPLING = ("num_clips", "num_crops", "short_side", "temporal_stride", "short_video")
_BACKBONES = {"LGD3DBackbone": "lgd3d", "LGD2DBackbone": "lgd2d"}


def video_spec(architecture, crop_size=None, eval_sampling=None):
    """What a model's input is and how a video is sampled for it (Sec. 5.2), as recorded in
    run.json and in every `.keras` of the run (`lgd_tf.models.video_spec`):

        {"model_type": "lgd3d" | "lgd2d", "num_frames": T (LGD-2D: segments),
         "crop_size": training crop, "modality": "rgb" | "flow",
         "eval": {"num_clips", "num_crops", "short_side", "temporal_stride", "short_video"}}

    Args:
        architecture: `model_architecture(model)` (or a stage's entry of run.json "models").
        crop_size: the training crop (`train_dataset.crop_size`); default 112 / 224.
        eval_sampling: the `eval_dataset` settings the run evaluates with (any of
            `EVAL_SAMPLING`; others ignored); the pipeline's defaults for the rest.

    Returns:
        The spec, or None for a model that is not an LGD-3D / LGD-2D classifier.
    """
    model_type = _BACKBONES.get(architecture.get("backbone.class"))
    if model_type is None:
        return None
    key = model_type[-2:]
    defaults = dict(pipelines.DEFAULT_EVAL[key], num_crops=1, temporal_stride=1,
                    short_video="loop")
    given = {k: v for k, v in (eval_sampling or {}).items() if k in EVAL_SAMPLING and v}
    sampling = dict(defaults, **given)
    return {
        "model_type": model_type,
        "num_frames": int(architecture["backbone.num_frames"]),
        "crop_size": int(crop_size or pipelines.DEFAULT_TRAIN_SIZES[key][1]),
        "modality": "flow" if int(architecture.get("backbone.input_channels", 3)) == 2
        else "rgb",
        "eval": {name: (str(v) if name == "short_video" else int(v))
                 for name, v in sampling.items()},
    }


def _gin_values(text):
    """{"[scope/]configurable.parameter": value} of the one-line bindings in a gin operative
    config, macros resolved, configurables by their short name (gin writes "eval_dataset"
    or "lgd_tf.data.eval_dataset"); values that are not Python literals are left out. (The
    run's own file, read without gin: the library does not import it.)"""
    bindings, macros = {}, {}
    for line in text.splitlines():
        found = re.match(r"^([\w./]+)\s*=\s*(.+?)\s*$", line)
        if not found:
            continue
        name, value = found.groups()
        if value.startswith("%"):
            if value[1:] not in macros:
                continue
            parsed = macros[value[1:]]
        else:
            try:
                parsed = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                continue
        if "." in name:
            scope, _, selector = name.rpartition("/")
            configurable, parameter = selector.rsplit(".", 1)
            short = configurable.rsplit(".", 1)[-1]
            bindings[f"{scope}/{short}.{parameter}" if scope else f"{short}.{parameter}"] = (
                parsed)
        else:
            macros[name] = parsed
    return bindings


def _setting(bindings, name, stage):
    for scope in (f"{stage}/", ""):
        if scope + name in bindings:
            return bindings[scope + name]
    return None


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What a training run is, from its run.json (`RunFolder.read_run`).

    Attributes:
        path: the run folder.
        class_names: the class names, index order.
        video_spec: the input spec and evaluation sampling (`video_spec`).
        data: {"train_pattern": ..., "eval_pattern": ...} the run was trained and evaluated
            on (the demo set's generated shards when the config gave none).
        models: {stage: model architecture} (`model_architecture`).
        finished_stages: the stages whose final `.keras` is written, in order.
    """

    path: str
    class_names: list
    video_spec: dict
    data: dict
    models: dict
    finished_stages: list
    run_id: str = None

    def stage_model_path(self, stage):
        return os.path.join(self.path, stage_file(stage))

    def final_model_path(self):
        """The `.keras` of the last finished stage, or None (no stage finished yet)."""
        if not self.finished_stages:
            return None
        return self.stage_model_path(self.finished_stages[-1])


class RunFolder:
    """A training run's model_dir (see the module docstring for its layout).

    Args:
        path: the folder (created on the first write); local or any `tf.io.gfile` path.
        flag: the command-line flag it was given by, named in errors.
    """

    def __init__(self, path, flag="--model_dir"):
        self.path = os.fspath(path)
        self.flag = flag

    def __repr__(self):
        return f"RunFolder({self.path!r})"

    def file(self, name):
        return os.path.join(self.path, name)

    def what(self, path):
        """How an error names a file of the run: "runs/x/run.json (--model_dir)"."""
        return f"{path} ({self.flag})"

    def stage_dir(self, stage):
        return os.path.join(self.path, stage)

    def stage_model(self, stage):
        """`model_dir/<stage>.keras`, the final model of a stage."""
        return os.path.join(self.path, stage_file(stage))

    def makedirs(self):
        try:
            tf.io.gfile.makedirs(self.path)
        except (OSError, tf.errors.OpError) as error:
            raise RunFailure(f"cannot create {self.flag}={self.path}: "
                             f"{failure_reason(error)}") from None

    # -- lock -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, in_use_hint="wait for that run to end (or stop it), or give another "
               "--model_dir"):
        """Holds `model_dir/.lock` for the block (`lgd_io.files.folder_lock`): a second
        process on the folder is refused with its pid and host; a lock left by a killed
        process is taken over, and its temporary files removed.

        Raises:
            RunFailure: another live process holds the lock.
        """
        with files.folder_lock(self.path, lock_name=LOCK, in_use_hint=in_use_hint):
            yield self

    # -- what the run is ----------------------------------------------------------------------

    def read_record(self):
        """run.json as a dict ({} if absent)."""
        path = self.file(RUN_RECORD)
        if not tf.io.gfile.exists(path):
            return {}
        with tf.io.gfile.GFile(path) as f:
            try:
                record = json.load(f)
            except ValueError:
                record = None
        if not isinstance(record, dict):
            raise BadInput(f"{path} is not a valid run record (JSON object); move it away if "
                           "the run folder is yours")
        return record

    def read_class_names(self):
        """class_names.txt of the run, or None."""
        return read_class_names(self.file(CLASS_NAMES))

    def check(self, class_names, architectures):
        """Refuses a rerun whose classes or model architecture differ from the run's.

        Args:
            class_names: this run's class names (index order).
            architectures: {stage: `model_architecture(model)`} of the stages to run.

        Raises:
            BadInput: one line naming the model_dir and the first setting that differs.
        """
        record = self.read_record()
        recorded = record.get("class_names") or self.read_class_names()
        what = None if recorded is None else class_difference(recorded, class_names)
        if what:
            raise TrainingError(
                f"{self.path} was trained on other classes ({what}); train into a new "
                "--model_dir, or give the data the run was trained on")
        for stage, current in architectures.items():
            before = record.get("models", {}).get(stage)
            if before is None:
                continue
            difference = _first_difference(before, current)
            if difference:
                key, old, new = difference
                setting = key.rsplit(".", 1)[-1]
                raise TrainingError(
                    f"{self.path} holds a {stage} model with {setting}={old!r}, this run has "
                    f"{setting}={new!r}; train into a new --model_dir, or set it back")

    def record(self, class_names, architectures, *, video_spec=None, data=None):
        """Writes run.json (adding the stages not yet recorded; the video spec and the data
        of this run) and class_names.txt, after a `check` that passed. Files already holding
        the same content are not rewritten."""
        self.makedirs()
        record = self.read_record()
        models = dict(record.get("models", {}))
        models.update({k: v for k, v in architectures.items() if k not in models})
        updated = dict(record, class_names=list(class_names), models=models)
        updated.setdefault("run_id", uuid.uuid4().hex)  # tells this run's exports apart
        if video_spec is not None:
            updated["video_spec"] = video_spec
        if data is not None:
            updated["data"] = dict(data)
        self._write_record(record, updated)
        if self.read_class_names() != list(class_names):
            write_text(self.file(CLASS_NAMES), "\n".join(class_names) + "\n",
                       what=self.what(self.file(CLASS_NAMES)))

    def finish_stage(self, stage):
        """Records in run.json that `stage`'s final `.keras` is written."""
        record = self.read_record()
        finished = [s for s in STAGES if s in {*record.get("finished_stages", []), stage}]
        self._write_record(record, dict(record, finished_stages=finished))

    def _write_record(self, record, updated):
        if updated != record:
            from lgd_tf import __version__

            updated.setdefault("lgd_tf_version", __version__)
            write_json(self.file(RUN_RECORD), updated, what=self.what(self.file(RUN_RECORD)))

    def read_run(self):
        """The run record (`RunRecord`) of a finished or running training run.

        Runs recorded before run.json held the video spec get it from their model
        architecture and operative_config.gin; their finished stages are the stage files
        present.

        Raises:
            BadInput: the folder is not a training run's (no run.json, or an invalid one), or
                an older run whose video spec cannot be derived (one line: what to do).
        """
        if not tf.io.gfile.isdir(self.path):
            raise BadInput(f"{self.path} is not a run folder (no such folder); give the "
                           "--model_dir a training run wrote (python -m lgd_tf.train)")
        if not tf.io.gfile.exists(self.file(RUN_RECORD)):
            raise BadInput(f"{self.path} is not a run folder: it has no {RUN_RECORD}; give "
                           "the --model_dir a training run wrote (python -m lgd_tf.train)")
        record = self.read_record()
        names, models = record.get("class_names"), record.get("models")
        if not isinstance(names, list) or not names or not isinstance(models, dict) or (
                not models):
            raise BadInput(f"{self.file(RUN_RECORD)} holds no class names or models; it is "
                           "not a training run's record (retrain into a new --model_dir)")
        finished = record.get("finished_stages")
        if finished is None:  # recorded before finished_stages
            finished = [s for s in STAGES if tf.io.gfile.exists(self.stage_model(s))]
        spec, data = record.get("video_spec"), record.get("data")
        if spec is None or data is None:
            derived_spec, derived_data = self._from_operative_config(models)
            spec, data = spec or derived_spec, data if data is not None else derived_data
        if spec is None:
            raise BadInput(f"{self.file(RUN_RECORD)} records no LGD-3D / LGD-2D model, so no "
                           "input spec; retrain it into a new --model_dir")
        return RunRecord(self.path, list(names), spec, dict(data), dict(models),
                         list(finished), record.get("run_id"))

    def _from_operative_config(self, models):
        """(video spec, data) of a run recorded before run.json held them."""
        path = self.file(OPERATIVE_CONFIG)
        stage = [s for s in STAGES if s in models][-1] if any(s in models for s in STAGES) \
            else next(iter(models))
        if not tf.io.gfile.exists(path):
            raise BadInput(
                f"{self.path} was trained before {RUN_RECORD} recorded the input spec, and "
                f"it has no {OPERATIVE_CONFIG} to derive it from; retrain it into a new "
                "--model_dir, or give the input spec with the command's flags (evaluate: "
                "--gin_file)")
        with tf.io.gfile.GFile(path) as f:
            bindings = _gin_values(f.read())
        sampling = {name: _setting(bindings, f"eval_dataset.{name}", stage)
                    for name in EVAL_SAMPLING}
        crop = _setting(bindings, "train_dataset.crop_size", stage)
        spec = video_spec(models[stage], crop, sampling)
        data = {f"{kind}_pattern": _setting(bindings, f"data_sources.{kind}_pattern", stage)
                for kind in ("train", "eval")}
        return spec, data
