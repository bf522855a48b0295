"""`python -m lgd_tf.export`: export to TF Serving, LiteRT or ONNX.
The command is `lgd_tf.cli.export`; `--help` describes it."""

import sys

from lgd_tf.cli.export import COMMAND, PROGRAM, run  # noqa: F401
from lgd_tf.serving.export import (  # noqa: F401  (the library API)
    ExportResult,
    describe_sampling,
    export_model,
)

if __name__ == "__main__":
    sys.exit(run())
