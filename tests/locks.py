"""A folder lock held by another process, as a running `train`, export or builder holds it."""

import contextlib
import os
import subprocess
import sys

_HOLD = ("import sys\nfrom lgd_io import files\n"
         "with files.folder_lock(sys.argv[1]):\n"
         "    print('locked', flush=True)\n"
         "    sys.stdin.read()\n")


@contextlib.contextmanager
def lock_held_by_another_process(folder):
    """Yields the holder's pid while a child process holds `folder`'s lock
    (`lgd_io.files.folder_lock`); the child lets go when the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.communicate("", timeout=30)
