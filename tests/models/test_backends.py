"""LGD on every Keras 3 backend: `.keras` files saved under TensorFlow load under JAX and
PyTorch, in a Python that cannot import TensorFlow, with the same logits (float32, 1e-4), and
round-trip TensorFlow -> JAX -> PyTorch; the commands and TensorFlow-only packages refuse
another backend in one line. The PyTorch steps skip where torch is not installed."""

import importlib.util
import json
import textwrap

import keras
import numpy as np
import pytest

from lgd_tf.models import lgd2d, lgd3d
from tests.test_case import run_under_backend, to_numpy

if keras.backend.backend() != "tensorflow":
    pytest.skip("saves under TensorFlow, then loads under the others",
                allow_module_level=True)

pytestmark = pytest.mark.subprocess
HAS_TORCH = importlib.util.find_spec("torch") is not None
TINY = {"stage_blocks": (1, 1, 1, 1), "base_filters": 4, "sketch_dim": 64}
MODELS = {  # name: (builder, clip shape)
    "lgd3d_stage1": (lambda: lgd3d(50, 5, head="stage1", num_frames=4, **TINY), (4, 32, 32)),
    "lgd3d_stage2": (lambda: lgd3d(50, 5, head="stage2", num_frames=4, **TINY), (4, 32, 32)),
    "lgd2d_stage1": (lambda: lgd2d(50, 5, head="stage1", num_segments=3, **TINY), (3, 32, 32)),
    "lgd2d_stage2": (lambda: lgd2d(50, 5, head="stage2", num_segments=3, **TINY), (3, 32, 32)),
}

# Loads every saved model, writes its logits; with `resave`, saves it again from this backend.
LOAD = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    import lgd_tf
    names, suffix, resave = {names}, "{suffix}", {resave}
    logits = {{}}
    for name in names:
        model = keras.saving.load_model(f"{{name}}{{suffix}}.keras", safe_mode=True)
        x = np.load(f"{{name}}.npy")
        out = model(x, training=False)
        logits.update({{f"{{name}}/{{k}}": keras.ops.convert_to_numpy(v) for k, v in out.items()}})
        if resave:
            model.save(f"{{name}}.{{keras.backend.backend()}}.keras")
    np.savez(f"logits.{{keras.backend.backend()}}.npz", **logits)
    print(json.dumps({{"backend": keras.backend.backend(),
                      "tensorflow_imported": "tensorflow" in sys.modules}}))
""")


def _randomise_statistics(model, rng):
    """Non-trivial BatchNorm statistics, so that inference-mode normalisation matters."""
    for w in model.non_trainable_weights:
        if w.path.endswith("moving_mean"):
            w.assign(rng.normal(0.0, 0.1, w.shape).astype("float32"))
        elif w.path.endswith("moving_variance"):
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype("float32"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each tiny model saved under TensorFlow with its clip and TensorFlow logits."""
    folder = tmp_path_factory.mktemp("backends")
    rng = np.random.default_rng(3)
    expected = {}
    for name, (build, clip) in MODELS.items():
        keras.utils.set_random_seed(0)
        model = build()
        _randomise_statistics(model, rng)
        x = rng.uniform(0, 255, (2,) + clip + (3,)).astype("float32")
        np.save(folder / f"{name}.npy", x)
        model.save(folder / f"{name}.keras")
        for key, value in model(x, training=False).items():
            expected[f"{name}/{key}"] = to_numpy(value)
    return folder, expected


def _load(folder, backend, suffix="", resave=False):
    code = LOAD.format(names=list(MODELS), suffix=suffix, resave=resave)
    report = json.loads(run_under_backend(backend, code, folder).stdout.splitlines()[-1])
    assert report == {"backend": backend, "tensorflow_imported": False}
    return dict(np.load(folder / f"logits.{backend}.npz"))


def _max_differences(actual, expected):
    assert sorted(actual) == sorted(expected)
    return {key: float(np.abs(actual[key] - expected[key]).max()) for key in expected}


def _check(actual, expected, label):
    differences = _max_differences(actual, expected)
    print(f"\n{label}: max |logit difference| " + json.dumps(differences))
    # The logits are not all alike (the check could fail), and they agree within 1e-4.
    assert max(float(np.abs(v).max()) for v in expected.values()) > 1e-2
    assert max(differences.values()) <= 1e-4, differences


def test_tensorflow_keras_files_load_under_jax_with_the_same_logits(saved):
    folder, expected = saved
    _check(_load(folder, "jax", resave=True), expected, "TensorFlow -> JAX")


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_keras_files_round_trip_tensorflow_jax_pytorch(saved):
    folder, expected = saved
    if not (folder / "lgd3d_stage1.jax.keras").exists():
        _load(folder, "jax", resave=True)
    _check(_load(folder, "torch", suffix=".jax"), expected, "TensorFlow -> JAX -> PyTorch")
    _check(_load(folder, "torch"), expected, "TensorFlow -> PyTorch")


REFUSALS = textwrap.dedent("""
    import importlib, json
    import lgd_tf, lgd_tf.layers, lgd_tf.models
    lines = {}
    for name in ("lgd_tf.data", "lgd_tf.training", "lgd_tf.serving", "lgd_tf.cli"):
        try:
            importlib.import_module(name)
            lines[name] = None
        except ImportError as error:
            lines[name] = str(error)
    print(json.dumps(lines))
""")


def test_without_tensorflow_only_layers_and_models_import(tmp_path):
    lines = json.loads(run_under_backend("jax", REFUSALS, tmp_path).stdout.splitlines()[-1])
    assert "lgd_tf.data (the tf.data pipelines): needs TensorFlow, which is not installed " \
           "here (Keras backend 'jax')" in lines["lgd_tf.data"]
    for name in ("lgd_tf.training", "lgd_tf.serving", "lgd_tf.cli"):
        assert lines[name].startswith(f"{name} (")
        assert "needs Keras' TensorFlow backend, and the backend here is 'jax'" in lines[name]
    assert all("\n" not in line for line in lines.values())


@pytest.mark.parametrize("tensorflow", [True, False], ids=["tf_installed", "no_tf"])
def test_a_command_under_jax_says_so_in_one_line_and_exits_2(tmp_path, tensorflow):
    result = run_under_backend("jax", None, tmp_path, tensorflow=tensorflow,
                               module_args=["lgd_tf.train", "--help"], check=False)
    assert result.returncode == 2 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if "lgd_tf" in line]
    assert len(lines) == 1 and lines[0].startswith("lgd_tf: error: the lgd_tf commands: needs")
    assert ("backend here is 'jax'" if tensorflow else "which is not installed") in lines[0]
