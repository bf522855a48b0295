"""Export: what `lgd_tf.export` writes and how each format is loaded back (no gin, no flags).

`export.export_model` writes an export folder: the SavedModel for TF Serving
(`module.VideoClassifierModule` and its signatures) and a `.keras` file, or a LiteRT
(`litert`) or ONNX (`onnx`) file; `spec` resolves what a user points at (run folder, `.keras`,
export folder, `.tflite`, `.onnx`) to a model source and its sampling; `loading` loads it.
"""

from lgd_io.backend import require_tensorflow_backend

require_tensorflow_backend("lgd_tf.serving (SavedModel / LiteRT / ONNX export)")
