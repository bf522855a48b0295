"""The data build under its historical name: `lgd_io.builder` (TensorFlow-free, so that its
worker processes start in a second), re-exported for `lgd_tf.data` users."""

from lgd_io.builder import (  # noqa: F401
    CSV_LAYOUTS,
    MANIFEST_VERSION,
    VIDEO_EXTENSIONS,
    WORKER_DIED,
    BuildSummary,
    EncodeOptions,
    LabelsTable,
    VideoEntry,
    build_from_frames,
    build_from_videos,
    encode_frames,
    encode_video,
    manifest_path,
    read_labels_csv,
    shard_of,
    shard_path,
)
