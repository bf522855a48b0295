"""The run folder: its record (`run_folder`: run.json, the class names, the stage models, the
lock) and the per-video scores that late fusion (Sec. 5.5) reads back from it (`fusion`).

Below training, which writes the folder, and above the models and the data, which it names."""

from lgd_io.backend import require_tensorflow_backend

require_tensorflow_backend("lgd_tf.runs (the run folder)")
