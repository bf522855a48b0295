"""SequenceExample records without TensorFlow: the `tf.train` messages in a private pool.

The record schema (`tfrecords/README.md`) uses the MediaSequence keys of TF Model Garden's
video reader. A `tensorflow.SequenceExample` is plain protobuf: the messages of
`tensorflow/core/example/{feature,example}.proto` are declared here, field for field, in a
private `DescriptorPool` (so they never clash with TensorFlow's own registration when both
are loaded). Serialized with sorted map keys, a record has the same bytes as
`tf.train.SequenceExample(...).SerializeToString(deterministic=True)` of the same content,
and TensorFlow's parser reads it unchanged (tests/data/test_records.py).
"""

import cv2
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

LABEL_INDEX_KEY = "clip/label/index"
LABEL_STRING_KEY = "clip/label/string"
MEDIA_ID_KEY = "clip/media_id"
FRAME_RATE_KEY = "image/frame_rate"
IMAGE_KEY = "image/encoded"
FLOW_KEY = "FORWARD_FLOW/image/encoded"
JPEG_QUALITY = 90

_F = descriptor_pb2.FieldDescriptorProto


def _message(file, name, fields, nested=()):
    """Adds message `name` with `fields` [(name, number, type, label, type_name)]."""
    message = file.message_type.add(name=name)
    for nested_message in nested:
        message.nested_type.add().CopyFrom(nested_message)
    for field_name, number, kind, label, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
    return message


def _map_entry(name, value_type):
    """The nested `<Name>Entry {string key = 1; value_type value = 2;}` of a map field."""
    entry = descriptor_pb2.DescriptorProto(name=name)
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                    type_name=value_type)
    entry.options.map_entry = True
    return entry


def _feature_file():
    """tensorflow/core/example/feature.proto and example.proto, as one proto3 file."""
    file = descriptor_pb2.FileDescriptorProto(
        name="lgd_io/tensorflow_example.proto", package="tensorflow", syntax="proto3")
    rep, opt = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    _message(file, "BytesList", [("value", 1, _F.TYPE_BYTES, rep, None)])
    _message(file, "FloatList", [("value", 1, _F.TYPE_FLOAT, rep, None)])
    _message(file, "Int64List", [("value", 1, _F.TYPE_INT64, rep, None)])
    feature = _message(file, "Feature", [
        ("bytes_list", 1, _F.TYPE_MESSAGE, opt, ".tensorflow.BytesList"),
        ("float_list", 2, _F.TYPE_MESSAGE, opt, ".tensorflow.FloatList"),
        ("int64_list", 3, _F.TYPE_MESSAGE, opt, ".tensorflow.Int64List")])
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    _message(file, "Features", [("feature", 1, _F.TYPE_MESSAGE, rep,
                                 ".tensorflow.Features.FeatureEntry")],
             nested=[_map_entry("FeatureEntry", ".tensorflow.Feature")])
    _message(file, "FeatureList", [("feature", 1, _F.TYPE_MESSAGE, rep, ".tensorflow.Feature")])
    _message(file, "FeatureLists", [("feature_list", 1, _F.TYPE_MESSAGE, rep,
                                     ".tensorflow.FeatureLists.FeatureListEntry")],
             nested=[_map_entry("FeatureListEntry", ".tensorflow.FeatureList")])
    _message(file, "SequenceExample", [
        ("context", 1, _F.TYPE_MESSAGE, opt, ".tensorflow.Features"),
        ("feature_lists", 2, _F.TYPE_MESSAGE, opt, ".tensorflow.FeatureLists")])
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_feature_file())
SequenceExample = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.SequenceExample"))


def encode_jpeg(image, quality=JPEG_QUALITY):
    """RGB (or 3-channel flow) uint8 (H, W, 3) -> JPEG bytes."""
    image = np.asarray(image, np.uint8)
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed. Received image of shape {image.shape}")
    return buf.tobytes()


def make_sequence_example(frames, label, *, label_string="", media_id="", frame_rate=0.0,
                          flow=None, quality=JPEG_QUALITY):
    """A `tensorflow.SequenceExample` message with the MediaSequence keys above.

    Args:
        frames: RGB uint8 (N, H, W, 3), or a list of already-encoded JPEG bytes.
        label: class index.
        flow: optional quantised flow images uint8 (N - 1, H, W, 3) (see
            `lgd_io.flow.quantize_flow`), or a list of encoded JPEGs.

    Returns:
        The message; `serialize(message)` gives the record's bytes.
    """
    example = SequenceExample()
    context = example.context.feature
    context[LABEL_INDEX_KEY].int64_list.value.append(int(label))
    context[LABEL_STRING_KEY].bytes_list.value.append(str(label_string).encode())
    context[MEDIA_ID_KEY].bytes_list.value.append(str(media_id).encode())
    context[FRAME_RATE_KEY].float_list.value.append(float(frame_rate))
    lists = example.feature_lists.feature_list
    for key, images in ((IMAGE_KEY, frames), (FLOW_KEY, flow)):
        if images is None:
            continue
        feature_list = lists[key].feature
        for image in images:
            data = image if isinstance(image, bytes) else encode_jpeg(image, quality)
            feature_list.add().bytes_list.value.append(data)
    return example


def serialize(example):
    """The record's bytes: map keys sorted, so equal content gives equal bytes."""
    return example.SerializeToString(deterministic=True)
