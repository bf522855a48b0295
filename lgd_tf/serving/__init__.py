"""Serving: the exported module and its signatures, model loading for predict, late fusion."""

from lgd_tf.serving.fusion import fuse_scores, fuse_scores_by_media_id  # noqa: F401
