"""`python -m lgd_tf.build_tfrecords` (and `lgd-build-tfrecords`): the data-build command,
`lgd_io.builder.command`, under its historical name; `--help` for its flags.

Started that way, the process is replaced before TensorFlow loads by the TensorFlow-free
driver (`lgd_io.builder.launch`); `run(argv)` called from Python runs the same command here,
its workers started without TensorFlow.
"""

import sys

from lgd_io.builder.command import PROGRAM, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(run())
