"""benchmarks/gpu_benchmark.py's smoke mode: its smallest configuration, run in-process (about
7 CPU-seconds), prints the device line and a table whose rows all hold finite positive figures."""

import importlib.util
import math

import keras

from tests.conftest import REPO_ROOT

CONFIG = "stage1 float32 xla-off"
NAME_WIDTH = 44  # the first column of gpu_benchmark.COLUMNS


def _load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "gpu_benchmark", REPO_ROOT / "benchmarks" / "gpu_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table(lines):
    """{row name: the 8 figure cells (None for "-")} of the printed table."""
    header = next(i for i, line in enumerate(lines) if line.startswith("row "))
    rows = {}
    for line in lines[header + 1:]:
        if line.startswith("wall time"):
            break
        cells = line[NAME_WIDTH:].split()[:8]
        rows[line[:NAME_WIDTH].strip()] = [None if c == "-" else float(c) for c in cells]
    return rows


def test_smoke_table_has_every_row_with_finite_positive_figures(capsys):
    benchmark = _load_benchmark()
    try:
        returned = benchmark.main(["--cpu_smoke", "--configs", CONFIG, "--no_pipeline",
                                   "--no_mirrored"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("device: CPU smoke run")
    rows = _table(lines)
    assert list(rows) == ["matmul 256^3 float32", CONFIG]
    assert [name for name, _, _ in returned] == list(rows)
    batch, steps, *figures = rows[CONFIG]
    assert batch == 2 and steps >= 1
    assert all(math.isfinite(v) and v > 0 for v in figures), rows[CONFIG]
    matmul = rows["matmul 256^3 float32"]
    assert math.isfinite(matmul[3]) and matmul[3] > 0 and matmul[4] == 1
    # The fraction of the matmul rate is the model's GFLOP/s over the matmul row's.
    assert math.isclose(figures[2], figures[1] / matmul[3], rel_tol=0.05)
