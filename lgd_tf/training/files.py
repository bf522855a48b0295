"""Crash-safe writes: every file goes to a temporary name first, then is renamed."""

import json
import os
import uuid

import tensorflow as tf


def _tmp_name(path):
    head, tail = os.path.split(path)
    stem, dot, ext = tail.partition(".")
    # Keep the extension: Keras picks the format of `model.save` from it.
    return os.path.join(head, f".{stem}.tmp-{uuid.uuid4().hex[:8]}{dot}{ext}")


def atomic_write(path, write_fn):
    """Calls `write_fn(tmp_path)` then renames tmp_path to `path` (no half-written files)."""
    path = os.fspath(path)
    tmp = _tmp_name(path)
    try:
        write_fn(tmp)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
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
