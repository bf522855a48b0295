"""Mixed precision end to end: bfloat16 through train -> evaluate -> export; float16 on CPU.

mixed_float16 used to fail on CPU at the first call: TensorFlow has no float16 MaxPool3D CPU
kernel ("Could not find device for node MaxPool3D[T=DT_HALF]"). The pools are now
`TemporalMaxPooling` (reduce_max) and `FrameMaxPooling` (MaxPool2D), which have float16 CPU
kernels, so LGD-3D builds and trains under mixed_float16 on CPU (loss scaling by
`loop.fit_stage`'s LossScaleOptimizer); that is tested here on one step.
"""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import lgd_tf
from lgd_tf.models import class_probabilities
from lgd_tf.training import loop, precision

TINY = {"num_classes": 12, "num_frames": 8, "base_filters": 4, "stage_blocks": (1, 1, 1, 1),
        "sketch_dim": 64}


class _Policy:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        keras.mixed_precision.set_global_policy(self.name)

    def __exit__(self, *exc):
        keras.mixed_precision.set_global_policy("float32")


def _fft_input_dtypes(model, clip, monkeypatch):
    """dtypes reaching tf.signal.rfft inside the model's Tensor Sketch."""
    seen = []
    rfft = tf.signal.rfft

    def spy(x, *args, **kwargs):
        seen.append(x.dtype.name)
        return rfft(x, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(tf.signal, "rfft", spy)
        outputs = model(clip, training=False)
    return seen, outputs


@pytest.mark.subprocess
def test_mixed_bfloat16_trains_both_stages_evaluates_and_exports(
        repo_root, subprocess_env, tiny_bindings, tmp_path, monkeypatch):
    model_dir, export_dir = tmp_path / "M", tmp_path / "E"
    bindings = tiny_bindings + [
        "lgd_tf.training.fit_two_stage.mixed_precision = 'mixed_bfloat16'"]
    train = [sys.executable, "-m", "lgd_tf.train", "--gin_file=gin/tiny.gin",
             f"--model_dir={model_dir}"] + [f"--gin_bindings={b}" for b in bindings]
    result = subprocess.run(train, cwd=repo_root, env=subprocess_env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "stage1 4 steps" in log and "stage2 3 steps" in log, log[-3000:]
    assert (model_dir / "eval_results.json").exists()
    assert "mixed_bfloat16" in (model_dir / "operative_config.gin").read_text()
    # The slow-policy line appears exactly where this machine lacks bfloat16 hardware.
    warning = precision.policy_warning("mixed_bfloat16")
    assert (warning is not None) == ("TensorFlow emulates bfloat16" in log), log[-3000:]
    export = [sys.executable, "-m", "lgd_tf.export", f"--model_dir={model_dir}",
              f"--export_dir={export_dir}"]
    result = subprocess.run(export, cwd=repo_root, env=subprocess_env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    clip = np.random.default_rng(0).integers(0, 256, (2, 8, 28, 28, 3)).astype("uint8")
    served = tf.saved_model.load(str(export_dir / "1")).signatures["serving_default"]
    probabilities = served(clips=tf.constant(clip))["probabilities"]
    assert probabilities.dtype == tf.float32
    with _Policy("mixed_bfloat16"):
        model = keras.saving.load_model(str(model_dir / "stage2.keras"), safe_mode=True)
    backbone = model.get_layer("backbone")
    assert backbone.get_layer("conv1_spatial").compute_dtype == "bfloat16"
    assert backbone.get_layer("res5_block1").compute_dtype == "bfloat16"
    seen, outputs = _fft_input_dtypes(model, clip, monkeypatch)
    assert seen and set(seen) == {"float32"}  # the Tensor Sketch FFT stays float32
    assert outputs["combined"].dtype == "float32"
    assert backbone(clip)["local"].dtype == "bfloat16"
    bf16 = class_probabilities(outputs).numpy()
    # measured: 1.2e-4 (float32 SavedModel vs the bfloat16 model on this clip, p ~ 0.1)
    np.testing.assert_allclose(probabilities.numpy(), bf16, rtol=0, atol=1e-2)
    float32 = keras.saving.load_model(str(model_dir / "stage2.keras"), safe_mode=True)
    np.testing.assert_allclose(probabilities.numpy(), class_probabilities(float32(clip)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", ["stage1", "stage2"])
def test_mixed_float16_trains_on_cpu(head, monkeypatch):
    clip = np.random.default_rng(1).integers(0, 256, (2, 8, 28, 28, 3)).astype("uint8")
    labels = tf.constant([3, 7])
    keras.utils.set_random_seed(0)
    with _Policy("mixed_float16"):
        model = lgd_tf.models.lgd3d(head=head, **TINY)
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01))
        optimizer.build(model.trainable_variables)
        before = [v.numpy() for v in model.trainable_variables]
        # Dynamic loss scaling: steps whose float16 gradients overflow are skipped and halve
        # the scale (2^15 at the start), until one is applied.
        for _step in range(20):
            grads, outputs, _, _ = loop.loss_and_gradients(model, optimizer, clip, labels, 2,
                                                           1e-4)
            optimizer.apply(grads, model.trainable_variables)
            if any(not np.array_equal(b, v.numpy())
                   for b, v in zip(before, model.trainable_variables, strict=True)):
                break
        else:
            pytest.fail("no mixed_float16 step was applied in 20 steps")
        assert 0 < float(optimizer.dynamic_scale) <= 2.0**15  # measured: 4096 / 16384
        backbone = model.get_layer("backbone")
        assert not any(isinstance(layer, keras.layers.MaxPool3D) for layer in backbone.layers)
        assert backbone.get_layer("pool1").compute_dtype == "float16"
        assert backbone(clip)["local"].dtype == "float16"
        assert all(v.dtype == "float32" for v in outputs.values())
        assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
        if head == "stage2":
            seen, _ = _fft_input_dtypes(model, clip, monkeypatch)
            assert seen and set(seen) == {"float32"}
