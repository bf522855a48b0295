"""One-line errors for the entry points: what went wrong and what to change."""

import sys

import tensorflow as tf
from absl import logging


class TrainingError(ValueError):
    """A problem the user can fix (config, data, numbers); printed as one line, exit code 1."""


_NOISE = ("Traceback", "File ", "[[", "Node:", "Graph execution error", "Detected at node",
          "<stack traces", "In call to configurable", "Detected unsupported operations")


def one_line(error):
    """The meaningful line of an exception message (TensorFlow and gin add long context).

    A failed `tf.debugging.Assert` (e.g. the input pipeline's check of a record) becomes its
    message: "assertion failed: [lgd_tf.data: bad record ...]" -> "lgd_tf.data: bad record ...".
    """
    text = str(error).strip() or type(error).__name__
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("assertion failed: [") and line.endswith("]"):
            return line[len("assertion failed: ["):-1].replace("\\'", "'")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(_NOISE):
            return line
    return text.splitlines()[0]


def run_and_report(program, fn):
    """Runs `fn()`; on a user-fixable error prints `program: error: ...` and returns 1.

    Errors from TensorFlow's input pipeline (a bad record named by its file) and gin's
    parser are reduced to their first line; anything else is a bug and keeps its traceback.
    """
    try:
        fn()
    except KeyboardInterrupt:
        print(f"{program}: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130
    except (TrainingError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
            tf.errors.DataLossError) as error:
        print(f"{program}: error: {one_line(error)}", file=sys.stderr)
        return 1
    return 0


def command_main(program, flag_values, fn):
    """absl `main(argv)` of a command: rejects stray arguments, quiets absl's INFO logs unless
    --verbosity is given, then runs `fn(flag_values)` under `run_and_report`."""

    def main(argv):
        if len(argv) > 1:
            print(f"{program}: error: unexpected arguments {argv[1:]}", file=sys.stderr)
            return 2
        if not flag_values["verbosity"].present:
            logging.set_verbosity(logging.ERROR)
        return run_and_report(program, lambda: fn(flag_values))

    return main
