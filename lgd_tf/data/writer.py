"""Encoding frames into SequenceExamples and writing them to shards: `lgd_io.records` and
`lgd_io.tfrecord` (TensorFlow-free) under their historical names."""

from lgd_io.builder.shards import shard_path  # noqa: F401
from lgd_io.records import JPEG_QUALITY, encode_jpeg, make_sequence_example  # noqa: F401
from lgd_io.tfrecord import write_shard  # noqa: F401

