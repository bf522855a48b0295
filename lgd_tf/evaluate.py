"""`python -m lgd_tf.evaluate`: video-level accuracy (Sec. 5.2).
The command is `lgd_tf.cli.evaluate`; `--help` describes it."""

import sys

from lgd_tf.cli.evaluate import COMMAND, PROGRAM, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(run())
