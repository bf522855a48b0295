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
import datetime
import errno
import json
import os
import re
import socket
import sys
import uuid

import keras
import tensorflow as tf

from lgd_tf.training.errors import RunFailure, TrainingError, one_line

RUN_RECORD = "run.json"
CLASS_NAMES = "class_names.txt"
OPERATIVE_CONFIG = "operative_config.gin"
LOCK = ".lock"

# Keys of a serialised model that do not change the weights' meaning: names, dtype policies,
# and initialisation-only settings (a restored checkpoint overwrites what they chose,
# Tensor Sketch's hashes and signs included).
_NOT_ARCHITECTURE = {"name", "dtype", "trainable", "build_config", "compile_config", "module",
                     "registered_name", "zero_init_global_residual", "sketch_seed"}


def failure_reason(error):
    """Why a write failed, in a few words: "No space left on device", "Permission denied".

    OSError: its strerror. TensorFlow errors: the first line without the op's function name,
    the temporary file's name and the `[Op:...]` tag.
    """
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", one_line(error))
    text = re.sub(r"\s*\[Op:\w+\]\s*$", "", text)
    return text.rsplit("; ", 1)[-1].strip() or text


def _tmp_name(path):
    head, tail = os.path.split(path)
    stem, dot, ext = tail.partition(".")
    # Keep the extension: Keras picks the format of `model.save` from it.
    return os.path.join(head, f".{stem}.tmp-{uuid.uuid4().hex[:8]}{dot}{ext}")


def atomic_write(path, write_fn):
    """Calls `write_fn(tmp_path)` then renames tmp_path to `path` (no half-written files).

    Raises:
        RunFailure: the write or the rename failed (the message names `path` and why); a
            file already at `path` is left as it was.
    """
    path = os.fspath(path)
    tmp = _tmp_name(path)
    try:
        write_fn(tmp)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except (OSError, tf.errors.OpError) as error:
        raise RunFailure(f"cannot write {path}: {failure_reason(error)}") from None
    finally:
        with contextlib.suppress(OSError, tf.errors.OpError):
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)


def write_text(path, text):
    def write(tmp):
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def write_bytes(path, data):
    def write(tmp):
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


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
        self._lock_file = None

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
        """Holds `model_dir/.lock` for the block: a second process on the folder is refused.

        The lock is an advisory `flock` on a local file, released by the kernel when the
        holder exits, killed or not: a lock file left by a dead process is taken over.
        Folders on remote file systems (`gs://...`) are not locked.

        Raises:
            RunFailure: another live process holds the lock (its pid and host are named).
        """
        if "://" in self.path:
            yield self
            return
        import fcntl

        self.makedirs()
        path = self.file(LOCK)
        handle = open(path, "a+")  # noqa: SIM115 (held until the block ends)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise RunFailure(
                    f"{self.path} is in use by {holder}; wait for that run to end (or stop "
                    "it), or give another --model_dir") from None
            raise RunFailure(f"cannot lock {path}: {failure_reason(error)}") from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            print(f"{self.path}: took over the lock left by {previous} (no longer running)",
                  file=sys.stderr, flush=True)
        self._remove_stale_temporaries()
        handle.seek(0)
        handle.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} (since {started})\n")
        handle.flush()
        self._lock_file = handle
        try:
            yield self
        finally:
            # Emptied, not removed: removing it would let two later processes lock two files.
            handle.seek(0)
            handle.truncate()
            handle.close()
            self._lock_file = None

    def _remove_stale_temporaries(self):
        """Temporary files of a process killed mid-write (`.stage1.tmp-1a2b3c4d.keras`): with
        the lock held nobody else is writing them."""
        for name in os.listdir(self.path):
            if name.startswith(".") and ".tmp-" in name:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.path, name))

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
