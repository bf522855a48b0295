"""Inference on video files: `predict` (a video's class probabilities from any exported
format, alone or late-fused, Sec. 5.5), `classifier` (one interface over a `.keras` file, a
SavedModel, LiteRT and ONNX), `timeline` (scores along a long video) and `embeddings` (the
Eq. 5 features of a video, for retrieval). No gin, no flags."""

from lgd_io.backend import require_tensorflow_backend

require_tensorflow_backend("lgd_tf.inference (predictions on video files)")
