"""Encoding frames into SequenceExamples and writing them to shards atomically."""

import os
import tempfile

import cv2
import numpy as np
import tensorflow as tf

from lgd_tf.data import schema

JPEG_QUALITY = 90


def encode_jpeg(image, quality=JPEG_QUALITY):
    """RGB (or 3-channel flow) uint8 (H, W, 3) -> JPEG bytes."""
    image = np.asarray(image, np.uint8)
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed. Received image of shape {image.shape}")
    return buf.tobytes()


def make_sequence_example(frames, label, *, label_string="", media_id="", frame_rate=0.0,
                          flow=None, quality=JPEG_QUALITY):
    """Builds a SequenceExample with the MediaSequence keys of `schema`.

    Args:
        frames: RGB uint8 (N, H, W, 3), or a list of already-encoded JPEG bytes.
        label: class index.
        flow: optional quantised flow images uint8 (N - 1, H, W, 3) (see `flow.quantize_flow`),
            or a list of encoded JPEGs.
    """
    def encoded(images):
        return [x if isinstance(x, bytes) else encode_jpeg(x, quality) for x in images]

    def bytes_feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    context = {
        schema.LABEL_INDEX_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        schema.LABEL_STRING_KEY: bytes_feature(str(label_string).encode()),
        schema.MEDIA_ID_KEY: bytes_feature(str(media_id).encode()),
        schema.FRAME_RATE_KEY: tf.train.Feature(
            float_list=tf.train.FloatList(value=[float(frame_rate)])),
    }
    lists = {schema.IMAGE_KEY: tf.train.FeatureList(
        feature=[bytes_feature(x) for x in encoded(frames)])}
    if flow is not None:
        lists[schema.FLOW_KEY] = tf.train.FeatureList(
            feature=[bytes_feature(x) for x in encoded(flow)])
    return tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list=lists),
    )


def shard_path(output_dir, prefix, index, num_shards):
    """`{output_dir}/{prefix}-00003-of-00008.tfrecord` (the usual sharded-file name)."""
    return os.path.join(output_dir, f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord")


def temporary_path(path):
    """A fresh hidden name beside `path`: `.{name}.tmp-XXXXXXXX` never matches `{prefix}-*`."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.tmp-")
    os.close(fd)
    return tmp


def write_shard(path, serialized_records):
    """Writes records to a hidden temporary file, then renames: a shard is whole or absent."""
    tmp = temporary_path(path)
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for record in serialized_records:
                writer.write(record)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
