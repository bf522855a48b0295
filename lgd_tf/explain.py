"""`python -m lgd_tf.explain`: Grad-CAM on a video.
The command is `lgd_tf.cli.explain`; `--help` describes it."""

import sys

from lgd_tf.cli.explain import COMMAND, PROGRAM, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(run())
