"""Shared checks for lgd_tf layers and models: config round trips and saved-model round trips,
`run_layer_test`, the battery every layer of `lgd_tf.layers` goes through, and
`run_backbone_test` / `run_task_test`, the checks of every model of `lgd_tf.models`.
Everything here runs on every Keras backend (TensorFlow, JAX, PyTorch); the SavedModel checks
of the model bases run on TensorFlow only."""

import functools
import inspect
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import keras
import numpy as np

import lgd_tf  # noqa: F401  (registers the lgd_tf layers for safe-mode loading)


def to_numpy(tensor):
    """A NumPy copy of a backend tensor (a tf.Tensor, a jax.Array, a torch.Tensor that may
    require grad)."""
    return np.asarray(keras.ops.convert_to_numpy(tensor))


# sitecustomize for a Python that cannot import TensorFlow (as on a JAX or PyTorch GPU image):
# every import finder is wrapped so that it does not find TensorFlow (`find_spec` gives None,
# `import tensorflow` raises ModuleNotFoundError), as if it were not installed.
_NO_TENSORFLOW = """import sys

class _WithoutTensorFlow:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras"):
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self._finder, attribute)

sys.meta_path[:] = [_WithoutTensorFlow(finder) for finder in sys.meta_path]
"""


def run_under_backend(backend, code, folder, *, tensorflow=False, module_args=None,
                      check=True, timeout=600):
    """Runs Python `code` (or `python -m *module_args`) with KERAS_BACKEND=`backend`, cwd
    `folder` and the repository on the path; without `tensorflow`, `import tensorflow` fails
    in it. Returns the `subprocess.CompletedProcess`; `check`: exit 0 or an AssertionError."""
    repo = pathlib.Path(__file__).resolve().parent.parent
    path = [str(repo)]
    if not tensorflow:
        blocker = pathlib.Path(folder) / "no_tensorflow"
        blocker.mkdir(exist_ok=True)
        (blocker / "sitecustomize.py").write_text(_NO_TENSORFLOW)
        path.insert(0, str(blocker))
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(path + [os.environ.get("PYTHONPATH", "")]),
           "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    args = ["-m", *module_args] if module_args else ["-c", code]
    result = subprocess.run([sys.executable, *args], cwd=folder, env=env, text=True,
                            capture_output=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{backend} subprocess failed:\n{result.stderr[-4000:]}"
    return result


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
        np.testing.assert_allclose(to_numpy(a), to_numpy(e), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# run_layer_test: one shared battery of checks for every layer of lgd_tf.layers.
# ---------------------------------------------------------------------------------------------

# Where a string given to a constructor names an object that `get_config` stores serialised.
_GETTERS = {
    "keras.initializers": keras.initializers.get,
    "keras.regularizers": keras.regularizers.get,
    "keras.constraints": keras.constraints.get,
    "keras.activations": keras.activations.get,
    "keras": keras.dtype_policies.get,
}
_KERAS_OBJECTS = (keras.layers.Layer, keras.initializers.Initializer,
                  keras.regularizers.Regularizer, keras.constraints.Constraint,
                  keras.DTypePolicy)


def run_layer_test(layer_cls, init_kwargs, input_data, *, expected_output_shape=None,
                   expected_output_dtype="float32", expected_num_trainable_weights=None,
                   expected_num_non_trainable_weights=None, run_fit=True,
                   allowed_unchanged_weights=(), run_mixed_precision=True,
                   expected_mixed_precision_output_dtype="bfloat16",
                   mixed_precision_tolerance=5e-2, run_saving=True, seed=0):
    """Shared checks of a layer, in the spirit of keras' `TestCase.run_layer_test`.

    1. Config: `get_config()` is JSON-serialisable, `from_config` rebuilds an equal config,
       every key of `init_kwargs` is stored with its value and every constructor parameter
       (of `layer_cls` and of the bases its `**kwargs` reach, up to `keras.layers.Layer`) is
       a key of the config; a rebuilt layer given the same weights computes the same outputs.
    2. Shapes: an eager call, a symbolic call on `keras.Input`s (batch None) and one on
       `keras.KerasTensor`s (the eager shapes) agree with each other, with
       `expected_output_shape` if given and with `compute_output_shape` if the layer
       defines it; outputs have `expected_output_dtype` (float32 policy).
    3. Weight counts, if given.
    4. `run_fit`: the layer inside a functional model with a Flatten + Dense(1) readout of
       every output, compiled with SGD + MSE, fits one batch with a finite loss; every
       trainable weight of the layer changes (but those whose path contains one of
       `allowed_unchanged_weights`) and a layer without trainable weights changes no weight.
    5. `run_mixed_precision`: under the global policy "mixed_bfloat16" the layer builds, its
       eager and symbolic outputs have `expected_mixed_precision_output_dtype`, its floating
       variables are float32, and with the float32 layer's weights its outputs match the
       float32 ones within `mixed_precision_tolerance` (relative to the output's scale).
    6. `run_saving`: the (fitted) layer in a functional model survives `.keras` saving and
       `keras.saving.load_model(..., safe_mode=True)` with identical outputs and config.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments, or a function returning them: a function is
            needed when an argument is a layer (e.g. the local unit of `LGDBlock`), so that
            every check gets fresh sub-layers created under the policy it tests.
        input_data: a NumPy array or a list / tuple / dict of arrays (the layer's input
            structure), batch first.
        expected_output_shape: shape, or structure of shapes, of the eager outputs.
        expected_output_dtype / expected_mixed_precision_output_dtype: a dtype name for every
            output, or a list of names in the order of `keras.tree.flatten(outputs)`.

    Returns the layer built by the eager call (float32 policy).
    """
    make = _layer_factory(layer_cls, init_kwargs)
    keras.utils.set_random_seed(seed)

    # 1. Config round trip of every argument.
    layer, kwargs = make()
    config = _check_config(layer_cls, layer, kwargs)

    # 2. Eager and symbolic calls, compute_output_shape, dtypes.
    outputs = layer(input_data)
    assert layer.built, f"{layer_cls.__name__} is not built after its first call"
    eager_shapes = [tuple(t.shape) for t in keras.tree.flatten(outputs)]
    if expected_output_shape is not None:
        assert eager_shapes == _shape_list(expected_output_shape), (
            f"Eager output shapes {eager_shapes} != expected {expected_output_shape}")
    static = layer(keras.tree.map_structure(
        lambda a: keras.KerasTensor(a.shape, dtype=_dtype(a)), input_data))
    static_shapes = [tuple(t.shape) for t in keras.tree.flatten(static)]
    assert static_shapes == eager_shapes, (
        f"Symbolic output shapes {static_shapes} != eager {eager_shapes}")
    symbolic = layer(_symbolic_inputs(input_data))
    symbolic_shapes = [tuple(t.shape) for t in keras.tree.flatten(symbolic)]
    unbatched = [(None,) + s[1:] for s in eager_shapes]
    assert symbolic_shapes == unbatched, (
        f"Symbolic output shapes (batch None) {symbolic_shapes} != eager {unbatched}")
    assert keras.tree.map_structure(lambda t: None, static) == keras.tree.map_structure(
        lambda t: None, outputs), "The symbolic call returns another structure than the eager"
    if _defines_compute_output_shape(layer_cls):
        for data_shapes, expected in ((_input_shapes(input_data, batch=True), eager_shapes),
                                      (_input_shapes(input_data, batch=False), unbatched)):
            computed = _shape_list(layer.compute_output_shape(data_shapes))
            assert computed == expected, (
                f"compute_output_shape({data_shapes}) = {computed}, the call gives {expected}")
    _check_dtypes(outputs, expected_output_dtype, "eager (float32)")
    _check_dtypes(static, expected_output_dtype, "symbolic (float32)")
    after_build = _strip_build_config(json.loads(json.dumps(layer.get_config())))
    assert after_build == _strip_build_config(config), (
        "get_config() changes when the layer is built")
    assert_same_outputs_after_rebuild(layer, input_data)

    # 3. Weight counts.
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights, (
            f"{len(layer.trainable_weights)} trainable weights, expected "
            f"{expected_num_trainable_weights}: {[w.path for w in layer.trainable_weights]}")
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights, (
            f"{len(layer.non_trainable_weights)} non-trainable weights, expected "
            f"{expected_num_non_trainable_weights}: "
            f"{[w.path for w in layer.non_trainable_weights]}")
    for w in layer.weights:
        assert not _is_half(w.dtype), f"{w.path} is {w.dtype} under the float32 policy"

    # 4. One fit step.
    saved_layer = saved_inputs = saved_outputs = None
    if run_fit:
        saved_layer, saved_inputs, saved_outputs = _check_fit_step(
            make, input_data, allowed_unchanged_weights, seed)

    # 5. mixed_bfloat16.
    if run_mixed_precision:
        _check_mixed_precision(make, layer, outputs, input_data,
                               expected_mixed_precision_output_dtype, mixed_precision_tolerance)

    # 6. .keras saving in safe mode.
    if run_saving:
        if saved_layer is None:
            saved_layer, _ = make()
            saved_inputs = _symbolic_inputs(input_data)
            saved_outputs = saved_layer(saved_inputs)
        model = keras.Model(saved_inputs, saved_outputs)
        _assert_tree_close(model(input_data, training=False),
                           saved_layer(input_data, training=False), 1e-6, 1e-6)
        with tempfile.TemporaryDirectory() as tmp:
            loaded = assert_keras_round_trip(model, input_data,
                                             os.path.join(tmp, "layer.keras"))
        restored = [lay for lay in loaded.layers if isinstance(lay, layer_cls)]
        assert len(restored) == 1, f"The loaded model holds {restored}, not one {layer_cls}"
        assert _strip_build_config(restored[0].get_config()) == _strip_build_config(
            saved_layer.get_config())
    return layer


def _layer_factory(layer_cls, init_kwargs):
    if not callable(init_kwargs):
        for key, value in init_kwargs.items():
            if isinstance(value, keras.layers.Layer):
                raise TypeError(
                    f"init_kwargs[{key!r}] is a layer: pass a function returning the kwargs, "
                    "so that each check gets a fresh one")

    def make():
        kwargs = dict(init_kwargs() if callable(init_kwargs) else init_kwargs)
        return layer_cls(**kwargs), kwargs

    return make


def _constructor_parameters(layer_cls):
    """Named parameters of `__init__` of `layer_cls` and of the bases its **kwargs reach."""
    names = []
    for cls in layer_cls.__mro__:
        if cls is keras.layers.Layer or not issubclass(cls, keras.layers.Layer):
            break
        if "__init__" not in vars(cls):
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        names += [p.name for p in params if p.name != "self"
                  and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def _check_config(layer_cls, layer, kwargs):
    config = layer.get_config()
    try:
        text = json.dumps(config)
    except TypeError as error:
        raise AssertionError(f"{layer_cls.__name__}.get_config() is not JSON: {error}") from None
    missing = [name for name in _constructor_parameters(layer_cls) if name not in config]
    assert not missing, (
        f"{layer_cls.__name__}.get_config() misses constructor argument(s) {missing}")
    stored = json.loads(text)
    for key, value in kwargs.items():
        assert key in stored, f"{layer_cls.__name__}.get_config() misses init argument {key!r}"
        assert _same_config_value(value, stored[key]), (
            f"{layer_cls.__name__}.get_config()[{key!r}] = {stored[key]!r}, given {value!r}")
    restored = layer_cls.from_config(json.loads(text))
    assert _strip_build_config(restored.get_config()) == _strip_build_config(stored), (
        f"{layer_cls.__name__}.from_config(get_config()) has another config")
    return stored


def _canonical(value):
    if isinstance(value, _KERAS_OBJECTS):
        value = keras.saving.serialize_keras_object(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (tuple, list)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return _strip_build_config({k: _canonical(v) for k, v in value.items()})
    return value


def _same_config_value(given, stored):
    expected = _canonical(given)
    if expected == _canonical(stored):
        return True
    getter = _GETTERS.get(stored.get("module")) if isinstance(stored, dict) else None
    if isinstance(given, str) and getter is not None:
        return _canonical(getter(given)) == _canonical(stored)
    return False


def _dtype(array):
    return keras.backend.standardize_dtype(array.dtype)


def _is_half(dtype):
    return keras.backend.standardize_dtype(dtype) in ("float16", "bfloat16")


def _symbolic_inputs(input_data):
    """`keras.Input`s (batch None) in the structure of `input_data`, dict inputs by key."""
    if isinstance(input_data, dict):
        return {key: keras.Input(shape=tuple(a.shape[1:]), dtype=_dtype(a), name=key)
                for key, a in input_data.items()}
    return keras.tree.map_structure(
        lambda a: keras.Input(shape=tuple(a.shape[1:]), dtype=_dtype(a)), input_data)


def _input_shapes(input_data, batch):
    return keras.tree.map_structure(
        lambda a: tuple(a.shape) if batch else (None,) + tuple(a.shape[1:]), input_data)


def _shape_list(shapes):
    """A shape or a (nested) list / tuple / dict of shapes -> flat list of tuples."""
    if isinstance(shapes, dict):
        return [s for key in sorted(shapes) for s in _shape_list(shapes[key])]
    shapes = tuple(shapes) if hasattr(shapes, "__len__") else shapes
    if all(d is None or isinstance(d, (int, np.integer)) for d in shapes):
        return [tuple(None if d is None else int(d) for d in shapes)]
    return [s for item in shapes for s in _shape_list(item)]


def _defines_compute_output_shape(layer_cls):
    return layer_cls.compute_output_shape is not keras.layers.Layer.compute_output_shape


def _check_dtypes(outputs, expected, what):
    leaves = keras.tree.flatten(outputs)
    expected = [expected] * len(leaves) if isinstance(expected, str) else list(expected)
    actual = [keras.backend.standardize_dtype(t.dtype) for t in leaves]
    assert actual == expected, f"{what} output dtypes {actual}, expected {expected}"


def _weight_values(layer):
    return [np.array(w.numpy()) for w in layer.weights]


def _check_fit_step(make, input_data, allowed_unchanged_weights, seed):
    """A functional model around the layer fits one batch; returns (layer, inputs, outputs)."""
    keras.utils.set_random_seed(seed)
    layer, _ = make()
    inputs = _symbolic_inputs(input_data)
    outputs = layer(inputs)
    readouts = [keras.layers.Dense(1, name=f"readout_{i}")(
        keras.layers.Flatten(name=f"flatten_{i}")(leaf))
        for i, leaf in enumerate(keras.tree.flatten(outputs))]
    prediction = readouts[0] if len(readouts) == 1 else keras.layers.Add()(readouts)
    model = keras.Model(inputs, prediction)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    batch = keras.tree.flatten(input_data)[0].shape[0]
    target = np.random.default_rng(seed).normal(size=(batch, 1)).astype("float32")
    trainable = {id(w) for w in layer.trainable_weights}
    before = _weight_values(layer)
    readout_before = [np.array(d.kernel.numpy()) for d in model.layers
                      if d.name.startswith("readout_")]
    history = model.fit(input_data, target, batch_size=batch, epochs=1, shuffle=False,
                        verbose=0)
    loss = history.history["loss"][-1]
    assert np.isfinite(loss), f"The fit step's loss is {loss}"
    readout_after = [d.kernel.numpy() for d in model.layers if d.name.startswith("readout_")]
    assert any(not np.array_equal(a, b) for a, b in zip(readout_before, readout_after,
                                                         strict=True)), "The readout did not train"
    changed = [not np.array_equal(a, b) for a, b in zip(before, _weight_values(layer),
                                                         strict=True)]
    if trainable:
        unchanged = [w.path for w, c in zip(layer.weights, changed, strict=True)
                     if id(w) in trainable and not c
                     and not any(part in w.path for part in allowed_unchanged_weights)]
        assert not unchanged, f"Trainable weights unchanged by the fit step: {unchanged}"
    else:
        moved = [w.path for w, c in zip(layer.weights, changed, strict=True) if c]
        assert not moved, f"A layer without trainable weights changed {moved}"
    return layer, inputs, outputs


def _check_mixed_precision(make, reference, reference_outputs, input_data, expected, tolerance):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer, _ = make()
        assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32", (
            f"Policy {layer.dtype_policy.name} under the global mixed_bfloat16 policy")
        outputs = layer(input_data)
        _check_dtypes(outputs, expected, "eager (mixed_bfloat16)")
        symbolic = layer(_symbolic_inputs(input_data))
        _check_dtypes(symbolic, expected, "symbolic (mixed_bfloat16)")
        assert [tuple(t.shape) for t in keras.tree.flatten(outputs)] == [
            tuple(t.shape) for t in keras.tree.flatten(reference_outputs)]
        assert len(layer.weights) == len(reference.weights)
        for w, ref in zip(layer.weights, reference.weights, strict=True):
            dtype = keras.backend.standardize_dtype(w.dtype)
            assert not _is_half(dtype), f"{w.path} is {dtype} under mixed_bfloat16"
            assert dtype == keras.backend.standardize_dtype(ref.dtype), (
                f"{w.path} is {dtype} under mixed_bfloat16, {ref.dtype} under float32")
        layer.set_weights(reference.get_weights())
        for got, want in zip(keras.tree.flatten(layer(input_data)),
                             keras.tree.flatten(reference(input_data)), strict=True):
            got, want = to_numpy(got).astype("float32"), to_numpy(want).astype("float32")
            assert np.isfinite(got).all(), "mixed_bfloat16 outputs are not finite"
            scale = max(float(np.abs(want).max()), 1e-6)
            np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * scale,
                                       err_msg="mixed_bfloat16 outputs != float32 outputs")
    finally:
        keras.mixed_precision.set_global_policy(previous)


# ---------------------------------------------------------------------------------------------
# run_backbone_test / run_task_test: the checks every model of lgd_tf.models goes through, in
# the spirit of keras-hub's TestCase.run_backbone_test / run_task_test.
# ---------------------------------------------------------------------------------------------

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


def run_backbone_test(cls, init_kwargs, input_data, expected_output_shape, *,
                      builder=None, run_mixed_precision=True, run_saved_model=None,
                      saved_model_routes=("export",), mixed_precision_tolerance=5e-2):
    """Shared checks of a backbone (`LGD3DBackbone`, `LGD2DBackbone`).

    1. Config: `get_config()` is JSON; `from_config` (and `deserialize_keras_object` of the
       serialised backbone) gives a `cls` with the same config, the same weight shapes and,
       given the same weights, the same outputs.
    2. Shapes: the eager outputs (a dict "local", "global", "res2".."res5") have
       `expected_output_shape` (a dict of shapes, batch first; from the paper's Table 1 or a
       count by hand in the caller); `compute_output_spec` on inputs of batch None gives the
       same shapes with batch None; every output is float32.
    3. `.keras` saving, `keras.saving.load_model(..., safe_mode=True)`: a `cls`, the same
       config, the same outputs.
    4. `run_saved_model` (default: on the TensorFlow backend only; the step is left out
       elsewhere): each of `saved_model_routes`, "export" (`model.export`) and
       "tf.saved_model.save" (of a `tf.Module` serving the model), reloaded with
       `tf.saved_model.load`, gives the same outputs. Each route costs seconds of tracing:
       cases whose layers another case already exports may pass `run_saved_model=False`.
    5. `run_mixed_precision`: under each global policy of `MIXED_POLICIES` the backbone builds
       and runs; every output has the policy's compute dtype (eager and symbolic), is finite,
       and with the float32 backbone's weights is within `mixed_precision_tolerance` (of the
       output's scale) of the float32 outputs; every floating variable is float32.

    Args:
        cls: the backbone class.
        init_kwargs: its constructor arguments, or, with `builder`, the builder's arguments.
        input_data: raw pixels `(B, T, H, W, C)`.
        builder: a function making the backbone from `init_kwargs` (e.g. `lgd_tf.models.lgd3d`
            with head=None) instead of `cls(**init_kwargs)`; it must return a `cls`.

    Returns the float32 backbone.
    """
    make = functools.partial(builder or cls, **init_kwargs)
    return _run_model_test(make, cls, input_data, expected_output_shape,
                           mixed_output_dtype=None, run_mixed_precision=run_mixed_precision,
                           run_saved_model=run_saved_model, routes=saved_model_routes,
                           tolerance=mixed_precision_tolerance)


def run_task_test(builder, init_kwargs, input_data, expected_output_shape, *,
                  backbone_cls, cls=None, run_fit=True, run_mixed_precision=True,
                  run_saved_model=None, saved_model_routes=("export",),
                  mixed_precision_tolerance=5e-2):
    """Shared checks of a task (`LGDClassifier`, stage-1 or stage-2 head) made by `builder`.

    The checks of `run_backbone_test` (config, shapes, `.keras`, SavedModel, mixed
    precision), with the task's contract on dtypes: every output is a float32 logit tensor
    `(B, num_classes)` under any policy (the heads are float32 layers). Also:
    - the task holds a `backbone_cls` named "backbone", which a config round trip rebuilds;
    - `predict` (the compiled function) gives the eager outputs;
    - `run_fit`: compiled with SGD and a sparse cross-entropy on every output, one fit step
      on labels `arange(B) % num_classes` has a finite loss and changes every head kernel.

    Args:
        builder: `lgd_tf.models.lgd3d` / `lgd2d` (or the task class), called with
            `init_kwargs` for every model the checks need.
        cls: the task class (default `lgd_tf.models.LGDClassifier`).

    Returns the float32 task.
    """
    cls = cls or lgd_tf.models.LGDClassifier
    make = functools.partial(builder, **init_kwargs)
    model = _run_model_test(make, cls, input_data, expected_output_shape,
                            mixed_output_dtype="float32",
                            run_mixed_precision=run_mixed_precision,
                            run_saved_model=run_saved_model, routes=saved_model_routes,
                            tolerance=mixed_precision_tolerance)
    backbone = model.get_layer("backbone")
    assert isinstance(backbone, backbone_cls), f"The backbone is a {type(backbone).__name__}"
    restored = cls.from_config(model.get_config()).get_layer("backbone")
    assert type(restored) is type(backbone) and (
        restored.get_config() == backbone.get_config())
    _assert_tree_close(model.predict(input_data, batch_size=len(input_data), verbose=0),
                       model(input_data, training=False), 1e-5, 1e-6)
    if run_fit:
        _check_task_fit_step(make, input_data)
    return model


def _run_model_test(make, cls, input_data, expected_output_shape, *, mixed_output_dtype,
                    run_mixed_precision, run_saved_model, routes, tolerance):
    keras.utils.set_random_seed(0)
    model = make()
    assert type(model) is cls, f"Made a {type(model).__name__}, not a {cls.__name__}"
    outputs = model(input_data, training=False)
    _check_model_shapes(model, outputs, input_data, expected_output_shape)
    _check_dtypes(outputs, "float32", f"{cls.__name__} (float32)")
    _check_model_config(model, cls, input_data, outputs)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = assert_keras_round_trip(model, input_data, os.path.join(tmp, "model.keras"))
        assert type(loaded) is cls, f"load_model gave a {type(loaded).__name__}"
        assert _strip_build_config(loaded.get_config()) == _strip_build_config(
            model.get_config())
        if run_saved_model is None:
            run_saved_model = keras.backend.backend() == "tensorflow"
        if run_saved_model:
            _check_saved_model(model, input_data, outputs, tmp, routes)
    if run_mixed_precision:
        for policy in MIXED_POLICIES:
            _check_model_mixed_precision(make, model, input_data, outputs, policy,
                                         mixed_output_dtype, tolerance)
    return model


def _check_model_shapes(model, outputs, input_data, expected_output_shape):
    shapes = keras.tree.map_structure(lambda t: tuple(t.shape), outputs)
    assert shapes == {k: tuple(v) for k, v in expected_output_shape.items()}, (
        f"Output shapes {shapes} != expected {expected_output_shape}")
    spec = model.compute_output_spec(keras.KerasTensor((None, *input_data.shape[1:])))
    symbolic = {k: tuple(v.shape) for k, v in spec.items()}
    assert symbolic == {k: (None, *v[1:]) for k, v in shapes.items()}, (
        f"Symbolic output shapes {symbolic} != eager {shapes} (batch None)")


def _check_model_config(model, cls, input_data, outputs):
    """from_config(get_config()) and (de)serialisation: same config, same outputs."""
    config = model.get_config()
    text = json.dumps(config)
    for restored in (cls.from_config(json.loads(text)),
                     keras.saving.deserialize_keras_object(json.loads(json.dumps(
                         keras.saving.serialize_keras_object(model))))):
        assert type(restored) is cls
        assert _strip_build_config(restored.get_config()) == _strip_build_config(config), (
            f"{cls.__name__}.from_config(get_config()) has another config")
        assert [tuple(w.shape) for w in restored.weights] == [
            tuple(w.shape) for w in model.weights], (
            f"{cls.__name__} rebuilt from its config has other weight shapes")
        restored.set_weights(model.get_weights())
        _assert_tree_close(restored(input_data, training=False), outputs, 1e-6, 1e-6)


def _check_saved_model(model, input_data, outputs, folder, routes):
    """`model.export` / `tf.saved_model.save` (TensorFlow backend): the same outputs."""
    import tensorflow as tf

    unknown = set(routes) - {"export", "tf.saved_model.save"}
    assert routes and not unknown, f"Unknown SavedModel routes {unknown or routes}"
    pixels = np.asarray(input_data, "float32")
    if "export" in routes:
        model.export(os.path.join(folder, "export"), verbose=False)
        exported = tf.saved_model.load(os.path.join(folder, "export"))  # holds the variables
        _assert_tree_close(exported.serve(pixels), outputs, 1e-5, 1e-5)
    if "tf.saved_model.save" not in routes:
        return
    module = tf.Module()
    module.model = model
    module.serve = tf.function(lambda x: model(x, training=False), input_signature=[
        tf.TensorSpec((None, *pixels.shape[1:-3], None, None, pixels.shape[-1]), tf.float32)])
    tf.saved_model.save(module, os.path.join(folder, "tf_saved_model"))
    restored = tf.saved_model.load(os.path.join(folder, "tf_saved_model"))
    _assert_tree_close(restored.serve(pixels), outputs, 1e-5, 1e-5)


def _check_model_mixed_precision(make, reference, input_data, reference_outputs, policy,
                                 output_dtype, tolerance):
    """Built under the global `policy`: runs, output dtypes, finite, close to float32."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = make()
        compute = keras.mixed_precision.global_policy().compute_dtype
        expected = output_dtype or compute
        outputs = model(input_data, training=False)
        _check_dtypes(outputs, expected, f"eager ({policy})")
        spec = model.compute_output_spec(keras.KerasTensor((None, *input_data.shape[1:])))
        _check_dtypes(spec, expected, f"symbolic ({policy})")
        floating = [w for w in model.weights if "float" in str(
            keras.backend.standardize_dtype(w.dtype))]
        assert floating and all(keras.backend.standardize_dtype(w.dtype) == "float32"
                                for w in floating), f"Half variables under {policy}"
        model.set_weights(reference.get_weights())
        outputs = model(input_data, training=False)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    for key, want in reference_outputs.items():
        got = to_numpy(outputs[key]).astype("float32")
        assert np.isfinite(got).all(), f"{policy}: output {key!r} is not finite"
        want = to_numpy(want)
        scale = max(float(np.abs(want).max()), 1e-6)
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * scale,
                                   err_msg=f"{policy} output {key!r} != float32 output")


def _check_task_fit_step(make, input_data):
    """One compiled fit step: finite loss, every head kernel moves."""
    keras.utils.set_random_seed(0)
    model = make()
    num_classes = model.num_classes
    labels = np.arange(len(input_data)) % num_classes
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss={key: loss for key in model.output})
    heads = [layer for layer in model.layers if layer.name.endswith("_logits")]
    before = [to_numpy(layer.kernel).copy() for layer in heads]
    history = model.fit(input_data, {key: labels for key in model.output},
                        batch_size=len(input_data), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]), f"Fit loss {history.history['loss']}"
    assert heads and all(not np.array_equal(b, to_numpy(layer.kernel))
                         for b, layer in zip(before, heads, strict=True)), (
        "A head kernel did not move in the fit step")
