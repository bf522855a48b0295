"""Serving: the exported module and its signatures, model loading for predict, late fusion."""

from lgd_tf.serving.fusion import (  # noqa: F401
    fuse_scores,
    fuse_scores_by_media_id,
    fuse_two_models,
)
