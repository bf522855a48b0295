"""`python -m lgd_tf.predict`: a video's classes.
The command is `lgd_tf.cli.predict`; `--help` describes it."""

import sys

from lgd_tf.cli.predict import COMMAND, PROGRAM, run  # noqa: F401
from lgd_tf.inference.predict import (  # noqa: F401  (the library API)
    Prediction,
    format_text,
    predict_video,
    video_frames,
)

if __name__ == "__main__":
    sys.exit(run())
