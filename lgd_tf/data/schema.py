"""TFRecord schema: MediaSequence keys of `tf.train.SequenceExample` (`tfrecords/README.md`).

The same keys TF Model Garden's video reader uses, so its records read here and ours there.

The keys and the TensorFlow-free encoder are in `lgd_io.records`; this module parses.
"""

import tensorflow as tf

from lgd_io.records import (  # noqa: F401
    FLOW_KEY,
    FRAME_RATE_KEY,
    IMAGE_KEY,
    LABEL_INDEX_KEY,
    LABEL_STRING_KEY,
    MEDIA_ID_KEY,
)

MODALITIES = ("rgb", "flow")
MISSING_LABEL = -1


def frames_key(modality):
    """Feature-list key holding the encoded frames of `modality` ("rgb" or "flow")."""
    if modality not in MODALITIES:
        raise ValueError(f"`modality` must be one of {MODALITIES}. Received: modality={modality!r}")
    return IMAGE_KEY if modality == "rgb" else FLOW_KEY


def parse_record(serialized, modality="rgb"):
    """Parses one serialised SequenceExample into a dict of tensors.

    Only `clip/label/index` and the frames of `modality` are needed (Model Garden form); a
    missing label parses as `MISSING_LABEL` so the caller can name the file in the error.

    Returns:
        {"frames": string (N,) encoded JPEGs, "label": int64 scalar, "media_id": string scalar}
    """
    context = {
        LABEL_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=MISSING_LABEL),
        MEDIA_ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    sequence = {
        frames_key(modality): tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
    }
    ctx, seq = tf.io.parse_single_sequence_example(
        serialized, context_features=context, sequence_features=sequence
    )
    return {
        "frames": seq[frames_key(modality)],
        "label": ctx[LABEL_INDEX_KEY],
        "media_id": ctx[MEDIA_ID_KEY],
    }
