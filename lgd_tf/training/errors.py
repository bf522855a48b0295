"""Errors a user can act on, and how to shorten an exception to its meaningful line.

`TrainingError` is a problem with the input (configuration, data, a run folder that belongs
to another configuration): the commands print it as one line and exit with code 2.
`RunFailure` is a failure while running (the loss diverged, the disk filled, a worker was
lost, a stop signal): one line, exit code 1. The commands' exit codes are in the README.
`warn` prints a problem that does not stop the run as one line.
"""

import sys


class TrainingError(ValueError):
    """A problem the user can fix in the input (config, data, model_dir); exit code 2."""

    exit_code = 2


class RunFailure(TrainingError):
    """The run failed while running (divergence, disk, lost worker); exit code 1."""

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
