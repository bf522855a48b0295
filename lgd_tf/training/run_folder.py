"""The run folder (model_dir) of a training run: its files, a lock, atomic writes, checks.

Layout:

    model_dir/
      .lock                 held by the training process (pid, host, start time inside)
      run.json              what the run is: class names and each stage's model architecture
      class_names.txt       one class name per line (index order)
      operative_config.gin  the configuration of the last finished stage (gin's operative config)
      stage1/ stage2/       checkpoints (ckpt-N), best/ (best eval top-1), train/ and eval/
                            TensorBoard logs
      stage1.keras          the final model of each stage (Sec. 4.3)
      stage2.keras
      eval_results.json, confusion_matrix.{csv,png}, eval_predictions.csv, eval_scores.npz

Every file is written to a temporary name and renamed, so a file on disk is whole or absent;
a write that fails (disk full, permission denied) is a `RunFailure` naming the path, and the
complete file it would have replaced is kept. A rerun first compares its class names and
model architecture with `run.json` and refuses a difference (`TrainingError`, naming the
setting) before it writes anything; schedule-only changes (steps, learning rate) go on.
"""

import contextlib
import json
import os

import keras
import tensorflow as tf

from lgd_io import files
from lgd_io.files import atomic_write, failure_reason, write_bytes, write_json, write_text  # noqa: F401
from lgd_tf.training.errors import RunFailure, TrainingError

RUN_RECORD = "run.json"
CLASS_NAMES = "class_names.txt"
OPERATIVE_CONFIG = "operative_config.gin"
LOCK = ".lock"

# Keys of a serialised model that do not change the weights' meaning: names, dtype policies,
# and initialisation-only settings (a restored checkpoint overwrites what they chose,
# Tensor Sketch's hashes and signs included).
_NOT_ARCHITECTURE = {"name", "dtype", "trainable", "build_config", "compile_config", "module",
                     "registered_name", "zero_init_global_residual", "sketch_seed"}


def save_model(model, path):
    """`model.save(path)` (a `.keras` file) through a temporary name."""
    atomic_write(path, model.save)


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


class RunFolder:
    """A training run's model_dir (see the module docstring for its layout).

    Args:
        path: the folder (created on the first write); local or any `tf.io.gfile` path.
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return f"RunFolder({self.path!r})"

    def file(self, name):
        return os.path.join(self.path, name)

    def stage_dir(self, stage):
        return os.path.join(self.path, stage)

    def stage_model(self, stage):
        """`model_dir/<stage>.keras`, the final model of a stage."""
        return os.path.join(self.path, f"{stage}.keras")

    def makedirs(self):
        try:
            tf.io.gfile.makedirs(self.path)
        except (OSError, tf.errors.OpError) as error:
            raise RunFailure(f"cannot create {self.path}: {failure_reason(error)}") from None

    # -- lock -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self):
        """Holds `model_dir/.lock` for the block (`lgd_io.files.folder_lock`): a second
        process on the folder is refused with its pid and host; a lock left by a killed
        process is taken over, and its temporary files removed.

        Raises:
            RunFailure: another live process holds the lock.
        """
        with files.folder_lock(self.path, lock_name=LOCK, in_use_hint=(
                "wait for that run to end (or stop it), or give another --model_dir")):
            yield self

    # -- what the run is ----------------------------------------------------------------------

    def read_record(self):
        """run.json as a dict ({} if absent)."""
        path = self.file(RUN_RECORD)
        if not tf.io.gfile.exists(path):
            return {}
        with tf.io.gfile.GFile(path) as f:
            try:
                return json.load(f)
            except ValueError:
                raise TrainingError(f"{path} is not valid JSON; move it away if the run "
                                    "folder is yours") from None

    def read_class_names(self):
        """class_names.txt of the run, or None."""
        path = self.file(CLASS_NAMES)
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path) as f:
            return [line.strip() for line in f if line.strip()]

    def check(self, class_names, architectures):
        """Refuses a rerun whose classes or model architecture differ from the run's.

        Args:
            class_names: this run's class names (index order).
            architectures: {stage: `model_architecture(model)`} of the stages to run.

        Raises:
            TrainingError: one line naming the model_dir and the first setting that differs.
        """
        record = self.read_record()
        recorded = record.get("class_names") or self.read_class_names()
        if recorded is not None and list(recorded) != list(class_names):
            if len(recorded) != len(class_names):
                what = f"{len(recorded)} classes there, {len(class_names)} in this run's data"
            else:
                i = next(i for i, (a, b) in enumerate(zip(recorded, class_names, strict=True))
                         if a != b)
                what = f"class {i} is {recorded[i]!r} there and {class_names[i]!r} here"
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

    def record(self, class_names, architectures):
        """Writes run.json (adding the stages not yet recorded) and class_names.txt, after a
        `check` that passed. Files already holding the same content are not rewritten."""
        self.makedirs()
        record = self.read_record()
        models = dict(record.get("models", {}))
        models.update({k: v for k, v in architectures.items() if k not in models})
        updated = dict(record, class_names=list(class_names), models=models)
        if updated != record:
            from lgd_tf import __version__

            updated.setdefault("lgd_tf_version", __version__)
            write_json(self.file(RUN_RECORD), updated)
        if self.read_class_names() != list(class_names):
            write_text(self.file(CLASS_NAMES), "\n".join(class_names) + "\n")
