"""`python -m lgd_tf.train`: two-stage training (Sec. 4.3).
The command is `lgd_tf.cli.train`; `--help` describes it."""

import sys

from lgd_tf.cli.train import COMMAND, PROGRAM, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(run())
