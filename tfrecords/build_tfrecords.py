r"""Builds sharded TFRecords from a folder of videos: `python -m lgd_tf.build_tfrecords`.

    python tfrecords/build_tfrecords.py --videos_dir=videos --labels_csv=train.csv \
        --output_dir=data/kinetics --num_shards=256 [--flow] [--split=train]

A thin wrapper kept for checkouts; the command, its flags and exit codes are in
`lgd_io/builder/command.py` (`--help`), which imports no TensorFlow. Run from a checkout it uses
that checkout's code, otherwise the installed one.
"""

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_REPO, "lgd_io", "__init__.py")):
    sys.path.insert(0, _REPO)  # python puts tfrecords/ on sys.path, not the checkout's root

from lgd_io.builder.command import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run())
