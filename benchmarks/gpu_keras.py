"""LGD-3D R50 on a GPU with Keras 3 alone: JAX by default, no TensorFlow needed.

For LGD-3D R50 (stage-2 head, 400 classes, 16x112x112 clips) and its P3D baseline, in float32
and mixed_bfloat16, it times the compiled train step (`train_on_batch`, SGD with momentum,
sparse cross-entropy) and the forward pass (`predict_on_batch`) at batch sizes doubling until
one does not fit (or `--max_batch`, or the time budget). Each row gives clips/s and the
achieved FLOP rate as a fraction of this device's bf16 and fp32 matmul rates, measured in the
same run (an n^3 matmul, compiled, timed the same way). The last lines give LGD over the P3D
baseline (train-step time per clip at the largest batch both ran).

    python benchmarks/gpu_keras.py                       # KERAS_BACKEND=jax unless set
    python benchmarks/gpu_keras.py --cpu_smoke           # tiny model on CPU, ~1 min
    bash benchmarks/gpu_keras_prepare.sh wheels/         # offline images: see that script

FLOPs per clip: the multiply-adds (2 FLOPs each) of every Conv2D and Dense call in one
batch-1 forward pass, counted while it runs; a train step counts 3x the forward. The LGD
block's low-rank projections (under 0.1% of the convolutions') are not counted, so LGD-3D and
its baseline count the same FLOPs. Needs keras,
numpy, absl-py and a backend; `lgd_tf` is imported from this checkout (or an installed wheel).
"""

import argparse
import contextlib
import json
import math
import os
import sys
import time

START = time.perf_counter()
if __name__ == "__main__":  # imported (tests), it leaves the environment as it is
    os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from lgd_tf.models import lgd3d  # noqa: E402

PRECISIONS = ("float32", "mixed_bfloat16")
FULL = dict(model=dict(depth=50, num_classes=400), clip=(16, 112, 112, 3), matmul_n=8192,
            batches=(8, 16, 32, 64, 128), steps=20, warmup=2)
SMOKE = dict(model=dict(depth=50, num_classes=10, stage_blocks=(1, 1, 1, 1), base_filters=4,
                        sketch_dim=64), clip=(4, 32, 32, 3), matmul_n=256, batches=(2,),
             steps=2, warmup=1)
OUT_OF_MEMORY = ("RESOURCE_EXHAUSTED", "out of memory", "OutOfMemory", "Out of memory")


@contextlib.contextmanager
def counting_flops():
    """Within the block, every Conv2D / Dense call adds its multiply-adds x 2 to `counts[0]`."""
    counts = [0]
    originals = {cls: cls.call for cls in (keras.layers.Conv2D, keras.layers.Dense)}

    def conv(self, inputs, *args, **kwargs):
        out = originals[keras.layers.Conv2D](self, inputs, *args, **kwargs)
        kh, kw, cin, _ = self.kernel.shape
        counts[0] += 2 * math.prod(out.shape) * kh * kw * cin  # cin: per group
        return out

    def dense(self, inputs, *args, **kwargs):
        out = originals[keras.layers.Dense](self, inputs, *args, **kwargs)
        counts[0] += 2 * math.prod(out.shape) * self.kernel.shape[0]
        return out

    keras.layers.Conv2D.call, keras.layers.Dense.call = conv, dense
    try:
        yield counts
    finally:
        for cls, call in originals.items():
            cls.call = call


def forward_flops(model, clip):
    """FLOPs of one clip's forward pass (Conv2D and Dense multiply-adds x 2)."""
    with counting_flops() as counts:
        model(np.zeros((1,) + tuple(clip), "uint8"), training=False)
    return counts[0]


def synced(value):
    """Waits for `value` (a backend tensor) and returns it as NumPy."""
    return keras.ops.convert_to_numpy(value)


def compiled(fn):
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    return fn


def matmul_rate(dtype, n, reps=10):
    """FLOP/s of an n^3 matmul in `dtype`, compiled, `reps` back to back, then synced."""
    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(rng.normal(size=(n, n)).astype("float32"), dtype=dtype)
    b = keras.ops.convert_to_tensor(rng.normal(size=(n, n)).astype("float32"), dtype=dtype)
    matmul = compiled(lambda x, y: keras.ops.matmul(x, y))
    synced(matmul(a, b)[0, 0])
    start = time.perf_counter()
    outs = [matmul(a, b) for _ in range(reps)]
    synced(keras.ops.stack([o[0, 0] for o in outs]))
    return 2.0 * n ** 3 * reps / (time.perf_counter() - start)


def build(settings, precision, use_lgd):
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    model = lgd3d(**settings["model"], head="stage2", num_frames=settings["clip"][0],
                  use_lgd=use_lgd, name="lgd3d" if use_lgd else "p3d")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss={"combined": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
                  jit_compile=True)
    return model


def clips_per_second(fn, batch, settings):
    for _ in range(settings["warmup"]):
        fn()
    start = time.perf_counter()
    for _ in range(settings["steps"]):
        fn()
    return batch * settings["steps"] / (time.perf_counter() - start)


def measure(model, batch, settings):
    """(train clips/s, forward clips/s) at `batch`; None where it does not fit."""
    rng = np.random.default_rng(batch)
    x = rng.integers(0, 256, (batch,) + tuple(settings["clip"])).astype("uint8")
    y = {"combined": rng.integers(0, model.output["combined"].shape[-1], batch)}
    try:
        train = clips_per_second(lambda: synced(model.train_on_batch(x, y)), batch, settings)
        forward = clips_per_second(
            lambda: model.predict_on_batch(x)["combined"], batch, settings)
    except Exception as error:  # the backends' out-of-memory errors have no common class
        if any(text in str(error) for text in OUT_OF_MEMORY):
            return None
        raise
    return train, forward


def run(settings, precisions, max_batch, budget_s):
    """Rows of the table: one per (model, precision, batch) that ran."""
    rows = []
    for precision in precisions:
        fitted = []
        for use_lgd in (True, False):
            model = build(settings, precision, use_lgd)
            flops = forward_flops(model, settings["clip"])
            batches = [b for b in settings["batches"] if b <= max_batch]
            if not use_lgd:  # the baseline at the largest batch LGD ran
                batches = fitted[-1:] if fitted else []
            for batch in batches:
                if time.perf_counter() - START > budget_s:
                    print(f"# budget of {budget_s:.0f} s spent: stopped before "
                          f"{model.name} {precision} batch {batch}", flush=True)
                    break
                result = measure(model, batch, settings)
                if result is None:
                    print(f"# {model.name} {precision} batch {batch}: out of memory", flush=True)
                    break
                if use_lgd:
                    fitted.append(batch)
                rows.append(dict(model=model.name, precision=precision, batch=batch,
                                 train=result[0], forward=result[1], forward_flops=flops))
                print_row(rows[-1], settings["rates"])
            del model
            keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    return rows


def print_row(row, rates):
    achieved = 3 * row["forward_flops"] * row["train"]
    print(f"{row['model']:6s} {row['precision']:15s} batch {row['batch']:4d}  "
          f"train {row['train']:9.2f} clips/s  forward {row['forward']:9.2f} clips/s  "
          f"train {achieved / 1e12:8.3f} TFLOP/s = {achieved / rates['bfloat16']:.3f} of bf16, "
          f"{achieved / rates['float32']:.3f} of fp32 matmul", flush=True)


def lgd_over_baseline(rows):
    """{precision: LGD train-step time / P3D train-step time} at the batch both ran."""
    ratios = {}
    for row in rows:
        lgd = [r for r in rows if r["model"] == "lgd3d" and r["precision"] == row["precision"]
               and r["batch"] == row["batch"]]
        if row["model"] == "p3d" and lgd:
            ratios[row["precision"]] = row["train"] / lgd[0]["train"]
    return ratios


def device_line():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        devices = jax.devices()
        return f"jax {jax.__version__}, {devices[0].platform}: {devices[0].device_kind}"
    if backend == "torch":
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        return f"torch {torch.__version__}: {gpu}"
    return f"{backend}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu_smoke", action="store_true", help="tiny model on CPU")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--max_batch", type=int, default=128)
    parser.add_argument("--budget_s", type=float, default=None,
                        help="no new configuration starts after this many seconds "
                             "(480; 900 with --cpu_smoke)")
    parser.add_argument("--json", help="also write the rows and rates to this file")
    args = parser.parse_args(argv)
    settings = dict(SMOKE if args.cpu_smoke else FULL)
    print(f"# keras {keras.__version__}, backend {device_line()}", flush=True)
    n = settings["matmul_n"]
    settings["rates"] = {d: matmul_rate(d, n) for d in ("bfloat16", "float32")}
    print(f"# matmul {n}^3: bf16 {settings['rates']['bfloat16'] / 1e12:.3f} TFLOP/s, "
          f"fp32 {settings['rates']['float32'] / 1e12:.3f} TFLOP/s", flush=True)
    budget_s = args.budget_s or (900.0 if args.cpu_smoke else 480.0)
    rows = run(settings, args.precisions.split(","), args.max_batch, budget_s)
    ratios = lgd_over_baseline(rows)
    for precision, ratio in ratios.items():
        print(f"LGD over baseline (P3D), {precision}: {ratio:.3f} (train-step time per clip)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_line(), "keras": keras.__version__,
                       "backend": keras.backend.backend(), "matmul_rates": settings["rates"],
                       "rows": rows, "lgd_over_baseline": ratios,
                       "tensorflow_imported": "tensorflow" in sys.modules}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
