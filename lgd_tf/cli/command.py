"""The one command layer: flags, `--help`, one-line errors and exit codes for every command.

Exit codes (the same for train, evaluate, export, predict and build_tfrecords):
    0  success
    1  failure at run time: the loss diverged, a disk is full or not writable, the model_dir
       is in use by another run, a worker of the cluster was lost, the run was stopped by
       SIGTERM / SIGINT (a checkpoint was saved first; the same command resumes)
    2  bad usage or bad input: an unknown or missing flag, a bad gin file or binding, data
       that is missing or malformed, a model_dir that belongs to another configuration
Errors are one line on stderr, `<program>: error: <what was wrong and what to change>`. The
command layer maps the project's own errors (`lgd_io.errors`: `BadInput` exit 2, `RunFailure`
exit 1), flag errors (exit 2) and running out of memory or disk (exit 1); a `ValueError` or a
TensorFlow error from the user's configuration or data is converted to `BadInput` where the
command builds the model or reads the data. Any other exception is a bug and keeps its
traceback.
"""

import contextlib
import errno
import os
import sys
import threading

import tensorflow as tf
from absl import flags, logging

from lgd_tf.training.errors import LgdError, one_line

OK, FAILURE, USAGE = 0, 1, 2

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

# Lines TensorFlow's C++ runtime writes to stderr while a command runs that say nothing to
# its user. Grappler's remapper gives up on one rewrite of the train step's gradient graph
# (the stem's padding; the step runs unrewritten, at the speed measured in the README):
#   E0000 ... meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT: Mutation::Apply
#   error: fanout '.../conv1_spatial_1/convolution/ShapeN' exist for missing node '...'
NOISE = ((b"meta_optimizer.cc", b"remapper failed: INVALID_ARGUMENT"),)


@contextlib.contextmanager
def filtered_stderr(noise=NOISE):
    """Passes the process's stderr (file descriptor 2: Python's and TensorFlow's C++ logs)
    through a thread that drops the lines holding every part of one of `noise`."""
    try:
        original = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    out = os.fdopen(os.dup(original), "wb", 0)  # the thread's own: closed when it ends

    def forward():
        with os.fdopen(read_end, "rb") as pipe, out:
            for line in pipe:
                if not any(all(part in line for part in parts) for parts in noise):
                    out.write(line)

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last write end closes: the thread ends
        os.close(original)
        thread.join(timeout=10)


def _exit_code_and_line(error):
    """(exit code, message) of a user-facing error, or None for a bug."""
    if isinstance(error, LgdError):
        return error.exit_code, one_line(error)
    if isinstance(error, flags.Error):
        return USAGE, one_line(error)
    if isinstance(error, OSError) and error.errno in _NO_SPACE:
        where = f"{error.filename}: " if error.filename else ""
        return FAILURE, f"{where}{error.strerror or one_line(error)}"
    if isinstance(error, tf.errors.ResourceExhaustedError):
        return FAILURE, f"out of memory or disk: {one_line(error)}"
    if isinstance(error, MemoryError):
        return FAILURE, "out of memory; lower the batch size or the clip size"
    return None


def define_gin_flags(fv, *, bindings_example="lgd_tf.training.fit_stage.batch_size=8",
                     file_help="gin config file(s), later ones override; a bare name "
                     "(demo.gin) is a shipped config."):
    """--gin_file, --gin_bindings and --gin_search_paths (repeatable) on `fv`."""
    flags.DEFINE_multi_string("gin_file", None, file_help, flag_values=fv)
    flags.DEFINE_multi_string("gin_bindings", [], f"gin bindings, e.g. \"{bindings_example}\".",
                              flag_values=fv)
    flags.DEFINE_multi_string("gin_search_paths", [], "folders searched for included gin "
                              "files.", flag_values=fv)


class Command:
    """A command-line program: its flags, its `--help`, and `run(argv)` -> exit code.

    Args:
        program: the name printed in errors ("lgd_tf.train").
        doc: the usage text shown by `--help` (the command module's docstring).
        define_flags: `define_flags(flag_values)` defines the command's flags on it.
        main: `main(flag_values)` does the work; its errors are mapped to exit codes.
        required: names of flags that must be given (absl's required flags).
    """

    def __init__(self, program, doc, define_flags, main, required=()):
        self.program, self.doc, self.main = program, doc, main
        self.flags = flags.FlagValues()
        define_flags(self.flags)
        flags.DEFINE_integer("verbosity", None, "absl log level (e.g. 0 for INFO); default: "
                             "errors only.", flag_values=self.flags)
        for name in required:
            flags.mark_flag_as_required(name, flag_values=self.flags)

    def usage(self):
        return f"{self.doc.strip()}\n\nFlags:\n{self.flags.get_help()}"

    def error(self, message):
        print(f"{self.program}: error: {message}", file=sys.stderr, flush=True)

    def parse(self, argv):
        """Parses argv into the flags; returns None or the exit code to leave with."""
        if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv[1:]):
            print(self.usage())
            return OK
        self.flags.unparse_flags()  # run() may be called more than once in a process
        try:
            rest = self.flags(argv)
        except flags.Error as error:
            self.error(f"{one_line(error)} (see --help)")
            return USAGE
        if len(rest) > 1:
            self.error(f"unexpected arguments {rest[1:]} (flags are --name=value; see --help)")
            return USAGE
        return None

    def run(self, argv=None):
        """Parses `argv` (default sys.argv) and runs the command; returns the exit code."""
        argv = list(sys.argv if argv is None else argv)
        code = self.parse(argv)
        if code is not None:
            return code
        verbosity = self.flags["verbosity"].value
        logging.set_verbosity(logging.ERROR if verbosity is None else verbosity)
        try:
            with filtered_stderr():
                code = self.main(self.flags)
        except KeyboardInterrupt:
            self.error("interrupted")
            return FAILURE
        except Exception as error:  # noqa: BLE001 (mapped below, or re-raised)
            mapped = _exit_code_and_line(error)
            if mapped is None:
                raise
            self.error(mapped[1])
            return mapped[0]
        return OK if code is None else int(code)
