"""The data build: sharded TFRecords of SequenceExamples from videos, without TensorFlow.

`shards` plans the shards and writes one (the unit of work), `encode` turns a video into a
record (the workers' job), `local` runs the workers on this machine, `beam_runner` as Apache
Beam tasks, `labels` reads the labels CSV and `command` is `lgd_tf.build_tfrecords`.
"""

from lgd_io.builder.encode import encode_frames, encode_video  # noqa: F401
from lgd_io.builder.labels import (  # noqa: F401
    CSV_LAYOUTS,
    VIDEO_EXTENSIONS,
    LabelsTable,
    read_labels_csv,
)
from lgd_io.builder.local import WORKER_DIED, build_from_frames, build_from_videos  # noqa: F401
from lgd_io.builder.shards import (  # noqa: F401
    MANIFEST_VERSION,
    BuildSummary,
    EncodeOptions,
    VideoEntry,
    manifest_path,
    shard_of,
    shard_path,
)
