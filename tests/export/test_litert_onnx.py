"""LiteRT and ONNX export: the Tensor Sketch FFT as MatMuls, and `.tflite` / `.onnx` files run
in a Python without TensorFlow (ai-edge-litert, onnxruntime) giving the Keras probabilities."""

import errno
import os
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import lgd_tf
import lgd_tf.data
from lgd_tf import export
from lgd_tf.layers import TensorSketch, tensor_sketch
from lgd_tf.serving import export as export_lib
from lgd_tf.serving import litert
from tests.export import tf_free_runtime
from tests.export.conftest import record_run
from tests.test_case import run_layer_test

TINY = {"stage_blocks": (1, 1, 1, 1), "base_filters": 4, "sketch_dim": 64}
HEIGHT, WIDTH = 32, 28  # not square: height and width must not be swapped anywhere
# Converted graphs (TFLite / ONNX kernels) vs eager Keras on the same uint8 clip.
PROBABILITY_TOL = 1e-4
RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def runtime_python(tmp_path_factory):
    return tf_free_runtime.runtime_python(tmp_path_factory.mktemp("runtime"))


def tiny_model(kind, head, channels, num_classes=5, seed=0):
    keras.utils.set_random_seed(seed)
    if kind == "3d":
        return lgd_tf.models.lgd3d(num_classes=num_classes, head=head, num_frames=8,
                                   input_channels=channels, **TINY)
    return lgd_tf.models.lgd2d(num_classes=num_classes, head=head, input_channels=channels,
                               **TINY)


def keras_probabilities(model, clip):
    return keras.ops.convert_to_numpy(
        lgd_tf.models.class_probabilities(model(clip.astype("float32"), training=False)))


# --- Tensor Sketch: the four-step DFT path -------------------------------------------------


def numpy_tensor_sketch(x, layer):
    """Count sketches in NumPy (float64), circular convolution with np.fft."""
    h1, s1, h2, s2 = (w.numpy() for w in (layer.hash1, layer.sign1, layer.hash2, layer.sign2))
    d = layer.output_dim
    rows = x.reshape(-1, x.shape[-1]).astype("float64")
    a, b = np.zeros((len(rows), d)), np.zeros((len(rows), d))
    np.add.at(a.T, h1, (rows * s1).T)
    np.add.at(b.T, h2, (rows * s2).T)
    out = np.fft.irfft(np.fft.rfft(a) * np.fft.rfft(b), n=d)
    return out.reshape(x.shape[:-1] + (d,))


def _relative(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("d", [64, 8192])
def test_matmul_fft_equals_tf_signal_and_numpy(d):
    x = RNG.normal(size=(3, 4, 48)).astype("float32")
    signal = TensorSketch(d, seed=5)
    matmul = TensorSketch(d, seed=5, fft="matmul")
    expected = signal(x).numpy()
    actual = matmul(x).numpy()
    np.testing.assert_array_equal(matmul.hash1.numpy(), signal.hash1.numpy())
    assert _relative(actual, expected) < 1e-4
    reference = numpy_tensor_sketch(x, matmul)
    assert _relative(actual, reference) < 1e-4
    assert _relative(expected, reference) < 1e-4
    # Graph mode (what the converters see) as well.
    graph = tf.function(matmul.call, input_signature=[tf.TensorSpec((None, 4, 48))])
    assert _relative(graph(x).numpy(), reference) < 1e-4


def test_dft_factors():
    assert tensor_sketch.dft_factors(8192) == (64, 128)
    assert tensor_sketch.dft_factors(64) == (8, 8)
    assert tensor_sketch.dft_factors(7) == (1, 7)
    x = RNG.normal(size=(2, 12)).astype("float32")
    for d in (7, 12, 30):  # odd, prime and non-square lengths are exact too
        layer = TensorSketch(d, seed=1, fft="matmul")
        assert _relative(layer(x).numpy(), numpy_tensor_sketch(x, layer)) < 1e-4


def test_tensor_sketch_matmul_layer():
    layer = run_layer_test(
        TensorSketch, {"output_dim": 16, "seed": 3, "fft": "matmul"},
        RNG.normal(size=(2, 3, 5)).astype("float32"),
        expected_output_shape=(2, 3, 16),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=4,
        expected_mixed_precision_output_dtype="bfloat16")
    assert layer.get_config()["fft"] == "matmul"
    with pytest.raises(ValueError, match="`fft` must be one of"):
        TensorSketch(16, fft="fftw")


def test_fft_implementation_block_and_edge_clone():
    assert TensorSketch(8).fft == "signal"
    with tensor_sketch.fft_implementation("matmul"):
        assert TensorSketch(8).fft == "matmul"
        assert TensorSketch(8, fft="signal").fft == "signal"
    assert TensorSketch(8).fft == "signal"
    model = tiny_model("3d", "stage2", 3)
    clone = litert.edge_model(model)
    sketches = [lay for lay in clone._flatten_layers() if isinstance(lay, TensorSketch)]
    assert clone is not model and [s.fft for s in sketches] == ["matmul"]
    assert all(lay.fft == "signal" for lay in model._flatten_layers()
               if isinstance(lay, TensorSketch))
    for a, b in zip(model.weights, clone.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    clip = RNG.integers(0, 256, (2, 8, HEIGHT, WIDTH, 3)).astype(np.uint8)
    np.testing.assert_allclose(keras_probabilities(clone, clip),
                               keras_probabilities(model, clip), rtol=1e-5, atol=1e-6)
    stage1 = tiny_model("3d", "stage1", 3)
    assert litert.edge_model(stage1) is stage1


# --- .tflite and .onnx in a Python without TensorFlow ----------------------------------------

CASES = [  # with the command test's LGD-3D stage-2 RGB: every head, model type and modality
    ("3d", "stage1", 2),
    ("2d", "stage2", 2),
]


@pytest.mark.parametrize("kind, head, channels", CASES,
                         ids=[f"lgd{k}-{h}-{'flow' if c == 2 else 'rgb'}" for k, h, c in CASES])
def test_litert_and_onnx_match_keras_without_tensorflow(kind, head, channels, runtime_python,
                                                        tmp_path):
    model = tiny_model(kind, head, channels)
    jobs, clips = {}, {}
    for fmt in ("litert", "onnx"):
        result = export_lib.export_model(model, tmp_path / "export", format=fmt,
                                         input_height=HEIGHT, input_width=WIDTH)
        steps = 8 if kind == "3d" else 3
        assert result.input_shape == (1, steps, HEIGHT, WIDTH, channels)
        assert result.saved_model_dir is None and result.model_path.is_file()
        clip = RNG.integers(0, 256, result.input_shape).astype(np.uint8)
        np.save(tmp_path / f"{fmt}.npy", clip)
        jobs[fmt] = (fmt, result.model_path, tmp_path / f"{fmt}.npy")
        clips[fmt] = clip
    assert sorted(os.listdir(tmp_path / "export")) == [
        ".lock", "class_names.txt", "export.json", "model.keras", "model.onnx", "model.tflite"]
    outputs = tf_free_runtime.run_without_tensorflow(runtime_python, jobs, tmp_path)
    for fmt in ("litert", "onnx"):
        expected = keras_probabilities(model, clips[fmt])
        assert outputs[fmt].shape == (1, 5) and outputs[fmt].dtype == np.float32
        np.testing.assert_allclose(outputs[fmt], expected, rtol=0, atol=PROBABILITY_TOL)
        np.testing.assert_allclose(outputs[fmt].sum(), 1.0, atol=1e-5)
    assert list(outputs["onnx/io"]) == ["clip", "tensor(uint8)", "probabilities"]
    assert "uint8" in outputs["litert/io"][1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A run folder of a tiny 12-class LGD-3D stage-2 RGB model, training crop size 32 in its
    run record (the export takes its input size from there)."""
    names = lgd_tf.data.demo.CLASS_NAMES  # the 12 classes of the demo set (its evaluation)
    model = tiny_model("3d", "stage2", 3, num_classes=len(names))
    return record_run(model, tmp_path_factory.mktemp("model_dir") / "run", names,
                      crop_size=32)


def test_export_command_writes_files_that_run_without_tensorflow(model_dir, runtime_python,
                                                                tmp_path, capsys):
    """`lgd_tf.export --format=litert` and `--format=onnx` (in process) on the LGD-3D stage-2
    RGB case; the input size comes from the run's training crop size."""
    export_dir = tmp_path / "export"
    clip = RNG.integers(0, 256, (1, 8, 32, 32, 3)).astype(np.uint8)
    np.save(tmp_path / "clip.npy", clip)
    demo = lgd_tf.data.build_demo_dataset(tmp_path / "demo", train_per_class=1,
                                          eval_per_class=1, num_shards=1)
    jobs = {}
    for fmt, name in (("litert", "model.tflite"), ("onnx", "model.onnx")):
        evaluation = ([f"--eval_pattern={demo.eval_pattern}", "--eval_max_videos=2",
                       "--num_clips=1", "--short_side=40"] if fmt == "litert" else [])
        code = export.run(["export", f"--model_dir={model_dir}", f"--export_dir={export_dir}",
                           f"--format={fmt}", *evaluation])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert f"{export_dir / name} (input clip (1, 8, 32, 32, 3) uint8" in out
        if evaluation:  # an untrained model: only the line counts
            assert "top-1 on 2 videos: Keras" in out and "LiteRT" in out, out
        jobs[fmt] = (fmt, export_dir / name, tmp_path / "clip.npy")
    assert sorted(os.listdir(export_dir)) == [".lock", "class_names.txt", "export.json",
                                              "model.keras", "model.onnx", "model.tflite"]
    assert (export_dir / "class_names.txt").read_text() == (
        model_dir / "class_names.txt").read_text()
    outputs = tf_free_runtime.run_without_tensorflow(runtime_python, jobs, tmp_path)
    model = keras.saving.load_model(export_dir / "model.keras", safe_mode=True)
    for fmt in jobs:
        np.testing.assert_allclose(outputs[fmt], keras_probabilities(model, clip), rtol=0,
                                   atol=PROBABILITY_TOL)


@pytest.mark.parametrize("argv, message", [
    (["--quantize=float16"], "apply to --format=litert / onnx only"),
    (["--format=onnx", "--quantize=float16"], "--quantize applies to --format=litert only"),
    (["--format=litert", "--quantize=int4"], "--quantize"),
    (["--format=litert", "--crop_size=0"], "--crop_size must be >= 1"),
])
def test_bad_flags_are_one_line_and_exit_2(argv, message, model_dir, tmp_path, capsys):
    code = export.run(["export", f"--model_dir={model_dir}", f"--export_dir={tmp_path}/x",
                       *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_quantized_litert_top1_change_on_the_demo_set(tmp_path):
    """float16 and dynamic-range int8 against float32 Keras: probabilities and top-1 on the
    tiny demo set, 12 videos (an untrained model: this measures the conversion, not the
    accuracy)."""
    demo = lgd_tf.data.build_demo_dataset(tmp_path / "demo", train_per_class=1,
                                          eval_per_class=1, num_shards=1)
    model = tiny_model("3d", "stage2", 3, num_classes=demo.num_classes)
    dataset = lgd_tf.data.eval_dataset(demo.eval_pattern, model="3d", num_frames=8,
                                       num_clips=1, short_side=32,
                                       num_classes=demo.num_classes)
    clip = RNG.integers(0, 256, (1, 8, 32, 32, 3)).astype(np.uint8)
    expected = keras_probabilities(model, clip)
    tolerance = {"float16": 2e-3, "dynamic_int8": 5e-2}
    runners = {}
    for quantize in ("float16", "dynamic_int8"):
        runners[quantize] = litert.LiteRTRunner(
            litert.convert_litert(model, height=32, width=32, quantize=quantize))
        np.testing.assert_allclose(runners[quantize](clip), expected, rtol=0,
                                   atol=tolerance[quantize])
    comparisons = litert.compare_top1(runners, model, dataset)
    for quantize, comparison in comparisons.items():
        print(f"{quantize}: {comparison.describe()}")
        assert comparison.num_videos == demo.num_classes
        assert abs(comparison.change) <= 0.25


def test_a_failed_write_keeps_the_previous_export(tmp_path, monkeypatch):
    """Disk full while writing model.tflite: ExportWriteError, the previous export's files
    unchanged, no temporary file left."""
    export_dir = tmp_path / "export"
    model = tiny_model("3d", "stage1", 3)
    export_lib.export_model(model, export_dir, format="litert", input_height=HEIGHT,
                            input_width=WIDTH)
    before = {name: (export_dir / name).read_bytes() for name in os.listdir(export_dir)}
    real_write_bytes = pathlib.Path.write_bytes

    def disk_full(path, data):
        if path.name.startswith(".model.tmp-") and path.name.endswith(".tflite"):
            real_write_bytes(path, data[:10])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write_bytes(path, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", disk_full)
    with pytest.raises(export_lib.ExportWriteError, match="No space left on device"):
        export_lib.export_model(model, export_dir, format="litert", input_height=HEIGHT,
                                input_width=WIDTH)
    assert sorted(os.listdir(export_dir)) == [".lock", "class_names.txt", "export.json",
                                              "model.keras", "model.tflite"]
    for name in os.listdir(export_dir):
        assert (export_dir / name).read_bytes() == before[name], name
