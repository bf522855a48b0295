"""Loading `.keras` files in Keras's safe mode, whatever the process enabled before."""

import keras
from keras.src.saving.serialization_lib import SafeModeScope


def load_model_safely(path):
    """`keras.saving.load_model(path, compile=False)` with safe mode pinned on.

    Keras 3 lets a process-wide `keras.config.enable_unsafe_deserialization()` override the
    `safe_mode` argument; the scope pins safe mode for this load, so only classes registered
    with Keras or lgd_tf are built (no Lambda or pickled code). The one place that imports
    Keras's private `SafeModeScope`.
    """
    with SafeModeScope(True):
        return keras.saving.load_model(path, safe_mode=True, compile=False)
