"""Two-stage training (Sec. 4.3) under a tf.distribute strategy, and video-level evaluation."""

from lgd_tf.training.errors import TrainingError  # noqa: F401
