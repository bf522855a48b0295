"""lgd_io: the parts of lgd_tf that need neither TensorFlow nor Keras.

Errors and their exit codes, whole-or-absent file writes, folder locks, and (for the data
build's workers) video decoding, optical flow and TFRecord encoding. `lgd_tf` uses these
modules too; importing `lgd_io` never imports TensorFlow, so a data-build worker that only
decodes, encodes and writes starts in about a second.
"""
