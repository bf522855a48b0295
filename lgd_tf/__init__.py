"""lgd_tf: Local and Global Diffusion (LGD) networks for video recognition.

Qiu, Yao, Ngo, Tian, Mei. "Learning Spatio-Temporal Representation with Local and Global
Diffusion." CVPR 2019.

Importing the package registers every Keras layer and model under the `lgd_tf` package, so
`keras.saving.load_model("m.keras")` works after `import lgd_tf`. The layers and models run
on every Keras 3 backend (TensorFlow, JAX, PyTorch; `import lgd_tf` needs no TensorFlow under
JAX or PyTorch); data pipelines, training, export and the commands are TensorFlow's
(`lgd_io.backend`).
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _import_tensorflow_quietly():
    """For the commands: TensorFlow's C++ start-up lines (absl's "All log messages before
    absl::InitializeLog()", oneDNN's notice) are dropped so that a command's output is its own
    lines; anything else TensorFlow writes to stderr while loading is passed on."""
    import tempfile

    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    noise = ("WARNING: All log messages before absl::InitializeLog()",
             "oneDNN custom operations are on")
    saved = _os.dup(2)
    with tempfile.TemporaryFile() as captured:
        _os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            _os.dup2(saved, 2)
            _os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(n in line for n in noise):
                    _sys.stderr.write(line)


# The data build (`python -m lgd_tf.build_tfrecords`, `lgd-build-tfrecords`) never loads
# TensorFlow: that process is replaced here by its TensorFlow-free driver, lgd_io.builder.
from lgd_io.builder.launch import exec_build_command as _exec_build_command  # noqa: E402

_exec_build_command()


def _start_command():
    """TensorFlow loaded quietly, or one line and exit 2 where the commands cannot run (no
    TensorFlow, or Keras on another backend: only layers and models run there)."""
    from lgd_io.backend import BackendError, require_tensorflow, require_tensorflow_backend

    try:
        require_tensorflow("the lgd_tf commands")
        _import_tensorflow_quietly()
        require_tensorflow_backend("the lgd_tf commands")
    except BackendError as error:
        _sys.stderr.write(f"lgd_tf: error: {error}\n")
        raise SystemExit(2) from None


# `python -m lgd_tf.<command>` (argv[0] is "-m" while the package loads) and the lgd-* scripts.
if _sys.argv[:1] == ["-m"] or _os.path.basename(_sys.argv[0] if _sys.argv else "").startswith(
        "lgd-"):
    _start_command()

from lgd_tf import layers, models  # noqa: E402,F401  (registers serializables)
