r"""Builds sharded TFRecords from a folder of videos: `python -m lgd_tf.build_tfrecords`.

    python tfrecords/build_tfrecords.py --videos_dir=videos --labels_csv=train.csv \
        --output_dir=data/kinetics --num_shards=256 [--flow] [--split=train]

A thin wrapper kept for checkouts; the command, its flags and exit codes are in
`lgd_tf/build_tfrecords.py` (`--help`). Run from a checkout it uses that checkout's lgd_tf,
otherwise the installed one.
"""

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_REPO, "lgd_tf", "__init__.py")):
    sys.path.insert(0, _REPO)  # python puts tfrecords/ on sys.path, not the checkout's root

from lgd_tf.build_tfrecords import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run())
