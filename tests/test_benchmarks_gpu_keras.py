"""benchmarks/gpu_keras.py: its FLOP count by hand, and `--cpu_smoke` under JAX in a Python
that cannot import TensorFlow."""

import json
import pathlib
import sys

import keras
import numpy as np
import pytest

from tests.test_case import run_under_backend

BENCHMARK = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_keras.py"
sys.path.insert(0, str(BENCHMARK.parent))
import gpu_keras  # noqa: E402


def test_flop_count_of_a_conv_and_a_dense_layer_by_hand():
    inputs = keras.Input((10, 12, 3))
    x = keras.layers.Conv2D(8, (3, 5), strides=2, padding="same")(inputs)
    x = keras.layers.Conv2D(4, 1, groups=2)(x)
    outputs = keras.layers.Dense(7)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    conv1 = 2 * (5 * 6 * 8) * (3 * 5 * 3)  # 5 x 6 outputs of 8 channels, 3x5x3 window
    conv2 = 2 * (5 * 6 * 4) * (1 * 1 * 8 // 2)  # two groups of 4 input channels
    dense = 2 * 7 * (5 * 6 * 4)
    assert gpu_keras.forward_flops(model, (10, 12, 3)) == conv1 + conv2 + dense
    assert keras.layers.Conv2D.call is not None and "conv" not in keras.layers.Conv2D.call.__name__


@pytest.mark.slow  # 1-2 min of CPU: four tiny models compiled by XLA
@pytest.mark.subprocess
def test_cpu_smoke_runs_under_jax_without_tensorflow(tmp_path):
    code = (f"import runpy, sys; sys.argv = ['gpu_keras.py', '--cpu_smoke', '--json', "
            f"'smoke.json']; runpy.run_path({str(BENCHMARK)!r}, run_name='__main__')")
    result = run_under_backend("jax", code, tmp_path, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["backend"] == "jax" and not report["tensorflow_imported"]
    rows = {(r["model"], r["precision"]): r for r in report["rows"]}
    assert set(rows) == {(m, p) for m in ("lgd3d", "p3d")
                         for p in ("float32", "mixed_bfloat16")}
    # Rates only (clips/s, finite and positive): their ratios are the benchmark's to report.
    assert all(0 < r["train"] < float("inf") and 0 < r["forward"] < float("inf")
               for r in rows.values())
    # The two networks share every convolution; the LGD projections are not counted.
    assert rows["lgd3d", "float32"]["forward_flops"] == rows["p3d", "float32"]["forward_flops"]
    assert set(report["lgd_over_baseline"]) == {"float32", "mixed_bfloat16"}
    assert all(np.isfinite(v) and v > 0 for v in report["lgd_over_baseline"].values())
    for precision in ("float32", "mixed_bfloat16"):
        assert f"LGD over baseline (P3D), {precision}: " in result.stdout
    assert "of bf16" in result.stdout and "of fp32 matmul" in result.stdout
