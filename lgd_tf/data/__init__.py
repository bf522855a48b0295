"""Video data: TFRecord schema, decoding, optical flow and tf.data pipelines."""
