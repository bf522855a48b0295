"""Two-stage training (Sec. 4.3) under a tf.distribute strategy."""
