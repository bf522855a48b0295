"""Two-stage training (Sec. 4.3) under a tf.distribute strategy, and video-level evaluation."""

from lgd_io.backend import require_tensorflow_backend

require_tensorflow_backend("lgd_tf.training (training under tf.distribute)")

from lgd_tf.training.errors import TrainingError  # noqa: E402,F401
