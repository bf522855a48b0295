"""Checks of constructor arguments shared by the layers and models: a ValueError of one line
naming the argument and the value received; sublayers given as their Keras config."""

import keras


def check_one_of(name, value, choices, allowed=None):
    """ValueError unless `value` is one of `choices` (the message names `allowed`, default
    the choices themselves)."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {allowed or choices}. Received: {value!r}")


def check_at_least_one(name, value, wording=">= 1"):
    """ValueError if `int(value)` is below 1 ("`name` must be <wording>. Received: ...")."""
    if int(value) < 1:
        raise ValueError(f"`{name}` must be {wording}. Received: {value}")


def deserialized(layer):
    """`layer`, built first when it is given as its Keras config (a dict, as `from_config`
    passes it)."""
    if isinstance(layer, dict):
        return keras.saving.deserialize_keras_object(layer)
    return layer
