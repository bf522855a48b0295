"""Shared checks for lgd_tf layers and models: config round trips and saved-model round trips."""

import json

import keras
import numpy as np


def assert_config_round_trip(layer):
    """`get_config` is JSON-serialisable and `from_config` rebuilds the same config."""
    config = layer.get_config()
    restored = layer.__class__.from_config(json.loads(json.dumps(config)))
    assert _strip_build_config(restored.get_config()) == _strip_build_config(config)
    return restored


def _strip_build_config(config):
    """Nested serialised layers carry their build shapes only once built: ignore those."""
    if isinstance(config, dict):
        return {k: _strip_build_config(v) for k, v in config.items() if k != "build_config"}
    if isinstance(config, list):
        return [_strip_build_config(v) for v in config]
    return config


def assert_same_outputs_after_rebuild(layer, inputs, rtol=1e-6, atol=1e-6):
    """A layer rebuilt from its config and given the same weights computes the same outputs."""
    expected = layer(inputs)
    restored = layer.__class__.from_config(layer.get_config())
    restored(inputs)
    restored.set_weights(layer.get_weights())
    _assert_tree_close(restored(inputs), expected, rtol, atol)


def assert_keras_round_trip(model, inputs, path, rtol=1e-6, atol=1e-6):
    """`.keras` save + `keras.saving.load_model` (safe mode) reproduces the outputs."""
    expected = model(inputs, training=False)
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    _assert_tree_close(loaded(inputs, training=False), expected, rtol, atol)
    return loaded


def _assert_tree_close(actual, expected, rtol, atol):
    actual = keras.tree.flatten(actual)
    expected = keras.tree.flatten(expected)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)
