"""The TensorFlow-free record path: the protobuf-only SequenceExample gives the bytes of
`tf.train.SequenceExample` and parses equal with TensorFlow's parser; TFRecord framing is
read by `tf.data.TFRecordDataset`, and a file TensorFlow wrote is read back here."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from lgd_io import records, tfrecord
from lgd_tf.data import schema
from tests.data import helpers


def _tf_example(jpegs, flow_jpegs, label, label_string, media_id, frame_rate):
    """The same record built with TensorFlow's own classes (the reference)."""
    def feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    context = {
        "clip/label/index": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "clip/label/string": feature(label_string.encode()),
        "clip/media_id": feature(media_id.encode()),
        "image/frame_rate": tf.train.Feature(float_list=tf.train.FloatList(value=[frame_rate])),
    }
    lists = {"image/encoded": tf.train.FeatureList(feature=[feature(j) for j in jpegs]),
             "FORWARD_FLOW/image/encoded": tf.train.FeatureList(
                 feature=[feature(j) for j in flow_jpegs])}
    return tf.train.SequenceExample(context=tf.train.Features(feature=context),
                                    feature_lists=tf.train.FeatureLists(feature_list=lists))


@pytest.fixture
def video():
    frames = helpers.indexed_frames(5, 24, 32)
    jpegs = [records.encode_jpeg(f) for f in frames]
    flow = [records.encode_jpeg(np.full((24, 32, 3), 128, np.uint8))] * 4
    return jpegs, flow


def test_bytes_equal_tensorflow_serialization_and_parse_equal(video):
    jpegs, flow = video
    ours = records.serialize(records.make_sequence_example(
        jpegs, 3, label_string="walk", media_id="a/b", frame_rate=29.97, flow=flow))
    reference = _tf_example(jpegs, flow, 3, "walk", "a/b", 29.97)
    assert ours == reference.SerializeToString(deterministic=True)
    assert tf.train.SequenceExample.FromString(ours) == reference
    parsed = schema.parse_record(tf.constant(ours))
    assert parsed["media_id"].numpy() == b"a/b" and int(parsed["label"]) == 3
    assert [bytes(j) for j in parsed["frames"].numpy()] == jpegs
    flow_parsed = schema.parse_record(tf.constant(ours), "flow")["frames"].numpy()
    assert [bytes(j) for j in flow_parsed] == flow


def _table_crc32c(data):
    """CRC-32C by the reflected table of polynomial 0x82F63B78: the reference."""
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def test_crc32c_check_value_and_a_table_reference():
    # The CRC-32C check value of "123456789" (RFC 3720, B.4), and a table-driven reference.
    assert tfrecord.crc32c(b"123456789") == 0xE3069283 == _table_crc32c(b"123456789")
    data = bytes(range(256)) * 3
    assert _table_crc32c(data) == tfrecord.crc32c(data)


def test_framing_reads_in_tensorflow_and_back(tmp_path, video):
    jpegs, _ = video
    data = [records.serialize(records.make_sequence_example(jpegs[:k], k, media_id=f"v{k}"))
            for k in range(1, 4)] + [b""]
    ours = tmp_path / "ours.tfrecord"
    tfrecord.write_shard(str(ours), data)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == data
    theirs = tmp_path / "theirs.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for record in data:
            writer.write(record)
    assert ours.read_bytes() == theirs.read_bytes()
    assert list(tfrecord.read_records(str(theirs))) == data
    damaged = tmp_path / "damaged.tfrecord"
    damaged.write_bytes(theirs.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        list(tfrecord.read_records(str(damaged)))


@pytest.mark.subprocess
def test_the_build_modules_import_neither_tensorflow_nor_keras(subprocess_env):
    code = ("import sys, lgd_io.builder, lgd_io.builder.command, lgd_io.builder.beam_runner, "
            "lgd_io.records, lgd_io.tfrecord, lgd_io.video, lgd_io.flow; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'lgd_tf')))")
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env,
                            capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
