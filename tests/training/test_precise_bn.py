"""Precise BatchNorm statistics against a float64 NumPy reference, with and without a strategy.

The model is Dense -> BatchNorm -> ReLU -> Dense -> BatchNorm on 5-D clips (the lgd_tf fused
BatchNorm) plus a Keras BatchNorm on the pooled features, so that the second and third layers'
statistics depend on the first one normalising by batch statistics. The reference computes
the same forward pass in NumPy float64 batch by batch and averages the batch moments.
"""

import json
import subprocess
import sys

import numpy as np

from lgd_tf.training import precise_bn

_SCRIPT = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, os.getcwd())
from tests.training.test_precise_bn import check
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
print(json.dumps(check(strategy)))
"""


def _model():
    import keras

    from lgd_tf.layers.batch_norm import BatchNormalization
    keras.utils.set_random_seed(3)
    inputs = keras.Input((2, 3, 3, 4))
    x = keras.layers.Dense(6, name="d1")(inputs)
    x = BatchNormalization(momentum=0.9, name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dense(5, name="d2")(x)
    x = BatchNormalization(momentum=0.9, name="bn2")(x)
    pooled = keras.layers.GlobalAveragePooling3D()(x)
    out = keras.layers.BatchNormalization(name="bn3")(pooled)
    return keras.Model(inputs, {"logits": keras.layers.Dense(2, name="head")(out)})


def _reference(model, batches):
    """Float64 forward pass normalising by batch statistics; mean of the batch moments."""
    w = {name: [np.asarray(v, np.float64) for v in model.get_layer(name).get_weights()]
         for name in ("d1", "d2", "bn1", "bn2", "bn3")}
    moments = {name: [] for name in ("bn1", "bn2", "bn3")}

    def bn(name, x):
        axes = tuple(range(x.ndim - 1))
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        moments[name].append((mean, var))
        gamma, beta = w[name][:2]
        return (x - mean) / np.sqrt(var + model.get_layer(name).epsilon) * gamma + beta

    for clips in batches:
        x = np.asarray(clips, np.float64) @ w["d1"][0] + w["d1"][1]
        x = np.maximum(bn("bn1", x), 0.0) @ w["d2"][0] + w["d2"][1]
        bn("bn3", bn("bn2", x).mean(axis=(1, 2, 3)))
    return {name: (np.mean([m for m, _ in values], axis=0), np.mean([v for _, v in values],
                                                                      axis=0))
            for name, values in moments.items()}


def check(strategy=None):
    """Returns the largest |moving statistic - reference| and the number of batches used."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    batches = [rng.normal(1.5, 2.0, (8, 2, 3, 3, 4)).astype(np.float32) for _ in range(3)]
    labels = np.zeros((24,), np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((np.concatenate(batches), labels)).batch(8)
    if strategy is None:
        model = _model()
    else:
        with strategy.scope():
            model = _model()
    # A first call on other data: the second one (which reuses the traced pass) must not
    # depend on it.
    other = tf.data.Dataset.from_tensor_slices(
        rng.normal(-3.0, 0.5, (16, 2, 3, 3, 4)).astype(np.float32)).batch(8)
    precise_bn.recompute_batch_norm_statistics(model, other, strategy=strategy)
    used = precise_bn.recompute_batch_norm_statistics(model, dataset, num_batches=5,
                                                      strategy=strategy)
    reference = _reference(model, batches)
    error = 0.0
    for name, (mean, var) in reference.items():
        layer = model.get_layer(name)
        error = max(error, float(np.abs(np.asarray(layer.moving_mean) - mean).max()),
                    float(np.abs(np.asarray(layer.moving_variance) - var).max()))
    return {"error": error, "batches": used,
            "variance_range": [float(min(v.min() for _, v in reference.values())),
                               float(max(v.max() for _, v in reference.values()))]}


def test_moving_statistics_equal_mean_batch_moments():
    result = check()
    assert result["batches"] == 3
    # The batch variances differ from the initial moving variance (1) by far more than 1e-5.
    assert result["variance_range"][1] > 1.1
    assert result["error"] < 1e-5, result


def test_layer_calls_restored_and_outputs_use_moving_statistics():
    import tensorflow as tf
    model = _model()
    clips = np.random.default_rng(1).normal(0, 1, (4, 2, 3, 3, 4)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices(clips).batch(4)
    precise_bn.recompute_batch_norm_statistics(model, dataset)
    assert all("call" not in vars(layer) for layer in precise_bn.batch_norm_layers(model))
    # One batch: inference with the recomputed statistics equals training-mode normalisation
    # of that batch (the lgd_tf and Keras layers' own batch-statistics path).
    inference = model(clips, training=False)["logits"].numpy()
    batch_mode = model(clips, training=True)["logits"].numpy()
    np.testing.assert_allclose(inference, batch_mode, atol=1e-4)


def test_mirrored_strategy_gives_the_same_statistics(repo_root, subprocess_env):
    out = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=repo_root, env=subprocess_env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["batches"] == 3
    assert result["error"] < 1e-5, result
