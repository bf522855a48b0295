"""The edge of lgd_tf: the only package that knows gin and command-line flags.

`configs` registers the configurables under their gin names, parses `--gin_file` /
`--gin_bindings`, applies the per-stage scopes and writes the operative config; `command` is
the one command layer (flags, `--help`, one-line errors, exit codes) that `lgd_tf.train`,
`evaluate`, `export`, `predict` and `build_tfrecords` run on; `signals` turns SIGTERM / SIGINT
into a stop request that training honours with a checkpoint.
"""

from lgd_io.backend import require_tensorflow_backend

require_tensorflow_backend("lgd_tf.cli (the lgd_tf commands)")
