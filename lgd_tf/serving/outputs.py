"""A command's output files, written whole and together (`lgd_io.files.Outputs`), with errors
that name the flag and the file the user gave, never a temporary name."""

import contextlib

from lgd_io import files


def check_outputs(paths, flag):
    """`lgd_io.files.check_output` of each path, before the work (BadInput naming `flag`)."""
    for path in paths:
        files.check_output(path, flag)


@contextlib.contextmanager
def staged(flag):
    """Yields `write(final, write_fn)`: `write_fn(tmp)` writes `final`'s content at a
    temporary path. On leaving the block every staged file replaces its target; a failure
    anywhere replaces none (RunFailure "cannot write --flag FINAL: why")."""
    with files.Outputs() as outputs:
        yield lambda final, write_fn: outputs.write(final, write_fn, f"{flag} {final}")
