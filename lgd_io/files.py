"""Whole-or-absent file writes and folder locks, for every command and the data build.

A file is written under a temporary name in its own folder and renamed over the target, so a
reader sees the old file or the new one, never half of one; a failed write leaves the old file
as it was. `Outputs` extends this to a command's several outputs: all are staged first and
replaced together at the end, so a command that fails replaces none of them.

Local paths use `os`; paths with a scheme (`gs://...`) use `tf.io.gfile`, imported only then,
so the data build's workers never import TensorFlow.
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

from lgd_io.errors import RunFailure, one_line

TEMPORARY_MARK = ".tmp-"


def is_remote(path):
    return "://" in os.fspath(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


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


def temporary_name(path):
    """A hidden sibling of `path` that keeps its extension (Keras picks a format from it):
    `dir/.model.tmp-1a2b3c4d.keras`."""
    head, tail = os.path.split(os.fspath(path))
    stem, dot, ext = tail.partition(".")
    return os.path.join(head, f".{stem}{TEMPORARY_MARK}{uuid.uuid4().hex[:8]}{dot}{ext}")


def _write_errors():
    if "tensorflow" in sys.modules:
        return (OSError, sys.modules["tensorflow"].errors.OpError)
    return (OSError,)


def io_errors():
    """The exception classes a file operation raises: OSError, and TensorFlow's OpError once
    TensorFlow is loaded (remote paths)."""
    return _write_errors()


def exists(path):
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def is_dir(path):
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def replace(src, dst):
    if is_remote(dst):
        _gfile().rename(src, dst, overwrite=True)
    else:
        os.replace(src, dst)


def remove_quietly(path):
    with contextlib.suppress(*_write_errors()):
        if is_remote(path):
            if _gfile().exists(path):
                _gfile().remove(path)
        elif os.path.lexists(path):
            os.remove(path)


def atomic_write(path, write_fn, *, what=None):
    """Calls `write_fn(tmp_path)` then renames tmp_path to `path` (no half-written files).

    Args:
        path: the target file.
        write_fn: writes the whole file at the path it is given.
        what: how the message names the file (e.g. "--timeline P.csv"); default the path.

    Raises:
        RunFailure: the write or the rename failed (the message names the file and why); a
            file already at `path` is left as it was.
    """
    path = os.fspath(path)
    tmp = temporary_name(path)
    try:
        write_fn(tmp)
        replace(tmp, path)
    except _write_errors() as error:
        raise RunFailure(f"cannot write {what or path}: {failure_reason(error)}") from None
    finally:
        remove_quietly(tmp)


def open_file(path, mode):
    """`open`, or `tf.io.gfile.GFile` for a remote path (TensorFlow is imported only then)."""
    return _gfile().GFile(path, mode) if is_remote(path) else open(path, mode)  # noqa: SIM115


def write_text(path, text, **kwargs):
    def write(tmp):
        with open_file(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write, **kwargs)


def write_bytes(path, data, **kwargs):
    def write(tmp):
        with open_file(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write, **kwargs)


def write_json(path, obj, **kwargs):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", **kwargs)


def remove_stale_temporaries(folder):
    """Temporary files of a process killed mid-write (`.stage1.tmp-1a2b3c4d.keras`). Call it
    only while holding the folder's lock: then nobody else is writing them."""
    for name in os.listdir(folder):
        if name.startswith(".") and TEMPORARY_MARK in name:
            remove_quietly(os.path.join(folder, name))


_HELD_LOCKS = set()  # file descriptors of the folder locks this process holds


def _drop_held_locks_in_child():
    """A forked child (a data-build worker) must not keep its parent's lock alive after the
    parent died: its copies of the lock descriptors are pointed at /dev/null."""
    if not _HELD_LOCKS:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.dup2(null, fd)
    os.close(null)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_held_locks_in_child)


@contextlib.contextmanager
def folder_lock(folder, *, lock_name=".lock", in_use_hint="wait for it to end, or stop it"):
    """Holds `folder/<lock_name>` for the block: a second process on the folder is refused.

    The lock is an advisory `flock` on a local file, released by the kernel when the holder
    exits, killed or not (its forked children do not keep it): a lock file left by a dead
    process is taken over, with a line on stderr saying so, and the temporary files it left
    are removed. Folders on remote file systems (`gs://...`) are not locked.

    Raises:
        RunFailure: another live process holds the lock (its pid, host and start are named).
    """
    folder = os.fspath(folder)
    if is_remote(folder):
        yield
        return
    import fcntl

    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise RunFailure(f"cannot create {folder}: {failure_reason(error)}") from None
    path = os.path.join(folder, lock_name)
    try:
        handle = open(path, "a+")  # noqa: SIM115 (held until the block ends)
    except OSError as error:
        raise RunFailure(f"cannot lock {path}: {failure_reason(error)}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        if error.errno in (errno.EAGAIN, errno.EACCES):
            raise RunFailure(f"{folder} is in use by {holder}; {in_use_hint}") from None
        raise RunFailure(f"cannot lock {path}: {failure_reason(error)}") from None
    handle.seek(0)
    previous = handle.read().strip()
    if previous:
        print(f"{folder}: took over the lock left by {previous} (no longer running)",
              file=sys.stderr, flush=True)
    remove_stale_temporaries(folder)
    handle.seek(0)
    handle.truncate()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} (since {started})\n")
    handle.flush()
    _HELD_LOCKS.add(handle.fileno())
    try:
        yield
    finally:
        # Emptied, not removed: removing it would let two later processes lock two files.
        _HELD_LOCKS.discard(handle.fileno())
        handle.seek(0)
        handle.truncate()
        handle.close()


def lock_holder(folder, *, lock_name=".lock"):
    """"pid N on HOST (since ...)" of the live process holding `folder`'s lock, or None.

    Takes the lock for an instant without writing: a free or stale lock reads as None.
    """
    path = os.path.join(os.fspath(folder), lock_name)
    if is_remote(folder) or not os.path.exists(path):
        return None
    import fcntl

    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES):
                return handle.read().strip() or "another process"
            raise
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def check_output(path, flag):
    """Refuses an output path before the work: a folder, a missing parent, an unwritable
    parent or file. `flag` names where the path came from ("--timeline").

    Raises:
        BadInput: one line naming the flag, the path and what to change.
    """
    from lgd_io.errors import BadInput

    path = os.fspath(path)
    if is_remote(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise BadInput(f"{flag}={path} is a folder; give a file path")
    if not os.path.isdir(parent):
        raise BadInput(f"{flag}={path}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"{flag}={path}: folder {parent} is not writable; give another path")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise BadInput(f"{flag}={path} is not writable; give another path")


class Outputs:
    """A command's output files, staged under temporary names and replaced together.

    `path(final)` returns the temporary path to write `final` at. Leaving the `with` block
    normally renames every staged file over its target; an exception removes the staged
    files and leaves every target as it was.

        with Outputs() as outputs:
            frame.to_csv(outputs.path("P.csv"))
            figure.savefig(outputs.path("P.png"))
    """

    def __init__(self):
        self._staged = []

    def path(self, final, what=None):
        tmp = temporary_name(final)
        self._staged.append((tmp, os.fspath(final), what))
        return tmp

    def write(self, final, write_fn, what=None):
        """Stages `final`: `write_fn(tmp)` writes its whole content at a temporary path.
        Returns `final`.

        Raises:
            RunFailure: the write failed ("cannot write WHAT: why", WHAT default the path).
        """
        tmp = self.path(final, what)
        try:
            write_fn(tmp)
        except _write_errors() as error:
            raise RunFailure(f"cannot write {what or final}: {failure_reason(error)}") from None
        return final

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if kind is not None:
            self.discard()
            return False
        try:
            for tmp, final, what in self._staged:
                try:
                    replace(tmp, final)
                except _write_errors() as error:
                    raise RunFailure(
                        f"cannot write {what or final}: {failure_reason(error)}") from None
        finally:
            self.discard()
        return False

    def discard(self):
        for tmp, _, _ in self._staged:
            remove_quietly(tmp)
        self._staged = []


def check_outputs(paths, flag):
    """`check_output` of each path, before the work (BadInput naming `flag`)."""
    for path in paths:
        check_output(path, flag)


@contextlib.contextmanager
def staged(flag):
    """A command's output files, written whole and together, with errors that name the flag
    and the file the user gave, never a temporary name.

    Yields `write(final, write_fn)`: `write_fn(tmp)` writes `final`'s content at a temporary
    path. On leaving the block every staged file replaces its target; a failure anywhere
    replaces none (RunFailure "cannot write --flag FINAL: why")."""
    with Outputs() as outputs:
        yield lambda final, write_fn: outputs.write(final, write_fn, f"{flag} {final}")
