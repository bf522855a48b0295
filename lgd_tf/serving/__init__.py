"""Serving, the library behind `lgd_tf.export` and `lgd_tf.predict` (no gin, no flags here).

`export.export_model` writes the SavedModel for TF Serving (`module.VideoClassifierModule` and
its signatures) and a `.keras` file; `predict.predict_video` scores a video file with an export
or a `.keras` file (`classifier.load_classifier`), alone or late-fused with a second model
(`fusion`, Sec. 5.5).
"""

from lgd_io.backend import require_tensorflow_backend

require_tensorflow_backend("lgd_tf.serving (SavedModel / LiteRT / ONNX export and inference)")

from lgd_tf.serving.fusion import (  # noqa: E402,F401
    fuse_scores,
    fuse_scores_by_media_id,
    fuse_two_models,
)
