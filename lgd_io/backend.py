"""Which parts of lgd_tf run on which Keras backend, and the one-line refusal of the others.

`lgd_tf.layers` and `lgd_tf.models` run on TensorFlow, JAX and PyTorch. The tf.data
pipelines (`lgd_tf.data`) need TensorFlow installed but feed `model.fit` under any backend;
training under tf.distribute, export and inference (`lgd_tf.training`, `lgd_tf.serving`)
and the commands (`lgd_tf.cli`) run on the TensorFlow backend only. Nothing here imports
TensorFlow; keras is imported only by the checks, which lgd_tf calls after importing it.
"""


class BackendError(ImportError):
    """A part of lgd_tf imported where it cannot run; the message is one line."""


def keras_backend():
    """The name of Keras' backend: "tensorflow", "jax", "torch" (KERAS_BACKEND or
    ~/.keras/keras.json)."""
    try:
        import keras
    except ImportError:  # keras on TensorFlow without TensorFlow: name what was asked for
        import os

        return os.environ.get("KERAS_BACKEND", "tensorflow")
    return keras.backend.backend()


def require_tensorflow(part):
    """Raises `BackendError` naming `part` and the backend if TensorFlow is not installed.
    Looks it up without importing it: the commands then import it quietly."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        raise BackendError(
            f"{part}: needs TensorFlow, which is not installed here (Keras backend "
            f"{keras_backend()!r}); only lgd_tf.layers and lgd_tf.models run without it: "
            "pip install tensorflow-cpu, or use those two")


def require_tensorflow_backend(part):
    """Raises `BackendError` naming `part` unless Keras runs on TensorFlow."""
    backend = keras_backend()
    if backend != "tensorflow":
        raise BackendError(
            f"{part}: needs Keras' TensorFlow backend, and the backend here is "
            f"{backend!r}: set KERAS_BACKEND=tensorflow (lgd_tf.layers and lgd_tf.models run "
            "on every backend)")
