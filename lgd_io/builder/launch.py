"""Starting the data-build command without TensorFlow.

`python -m lgd_tf.build_tfrecords` and the `lgd-build-tfrecords` script import the `lgd_tf`
package first, which loads Keras and TensorFlow (every layer must be registered on import).
The package calls `exec_build_command()` before that: when the process was started as the
build command it is replaced, same pid and arguments, by `python -m lgd_io.builder.command`,
which never imports TensorFlow, and so neither do its worker processes.
"""

import os
import sys

MODULE = "lgd_tf.build_tfrecords"
SCRIPT = "lgd-build-tfrecords"
DRIVER = "lgd_io.builder.command"


def build_command_argv(orig_argv, argv):
    """The command line that runs the TensorFlow-free driver, or None when this process is
    not the build command. `orig_argv`: `sys.orig_argv`; `argv`: `sys.argv`."""
    if "-m" in orig_argv[1:]:
        i = orig_argv.index("-m", 1)
        if orig_argv[i + 1:i + 2] == [MODULE]:
            return [sys.executable, *orig_argv[1:i], "-m", DRIVER, *orig_argv[i + 2:]]
        return None
    if argv and os.path.basename(argv[0]) == SCRIPT:
        return [sys.executable, "-m", DRIVER, *argv[1:]]
    return None


def exec_build_command():
    """Replaces this process by the TensorFlow-free driver when it is the build command."""
    argv = build_command_argv(list(getattr(sys, "orig_argv", [])), list(sys.argv))
    if argv is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, argv)
