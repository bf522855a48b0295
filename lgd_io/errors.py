"""The errors a user acts on, with their exit codes, and how to shorten one to a line.

One hierarchy for every command (README, "exit codes"):

- `BadInput` (exit 2): the input is wrong: a flag, a gin file, data, a run folder that belongs
  to another configuration. The user fixes the input.
- `RunFailure` (exit 1): the run failed while running: the loss diverged, the disk filled,
  a worker was lost, a stop signal, a folder in use by another process.
- Any other exception is a bug and keeps its traceback.

`TrainingError` is the historical name of `BadInput`, kept for code that catches it.
"""

import sys

__all__ = ["BadInput", "Interrupted", "LgdError", "RunFailure", "TrainingError", "one_line",
           "warn"]


class LgdError(Exception):
    """Base of the errors the commands print as one line; `exit_code` is the command's."""

    exit_code = 1


class BadInput(LgdError, ValueError):
    """A problem the user can fix in the input (flags, config, data, model_dir); exit 2.

    Also a `ValueError`, Keras's convention for a bad argument, so library users who catch
    `ValueError` around a model or pipeline constructor keep catching it."""

    exit_code = 2


TrainingError = BadInput


class RunFailure(LgdError):
    """The run failed while running (divergence, disk, lost worker, lock held); exit 1."""

    exit_code = 1


class Interrupted(RunFailure):
    """SIGTERM / SIGINT: a checkpoint was saved at the current step; the same command
    resumes."""


def warn(line):
    """Prints `warning: <line>` to stderr. Not absl logging: the commands show absl's
    warnings only at --verbosity, and a user must see these without it."""
    print(f"warning: {line}", file=sys.stderr, flush=True)


_NOISE = ("Traceback", "File ", "[[", "Node:", "Graph execution error", "Detected at node",
          "<stack traces", "In call to configurable", "Detected unsupported operations")


def one_line(error):
    """The meaningful line of an exception message (TensorFlow and gin add long context).

    A failed `tf.debugging.Assert` (e.g. the input pipeline's check of a record) becomes its
    message: "assertion failed: [lgd_tf.data: bad record ...]" -> "lgd_tf.data: bad record ...".
    """
    text = str(getattr(error, "message", None) or error).strip() or type(error).__name__
    marker = "assertion failed: ["
    for line in text.splitlines():
        line = line.strip()
        if marker in line and line.endswith("]"):
            # tf.data prefixes "Error in user-defined function passed to MapDataset:13 ...: ".
            return line[line.index(marker) + len(marker):-1].replace("\\'", "'")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(_NOISE):
            return line
    return text.splitlines()[0]
