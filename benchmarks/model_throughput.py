"""Throughput of LGD-3D R50 (16x112x112) and LGD-2D R50 (3x224x224) on this machine.

Prints, for each model and its baseline (use_lgd=False: P3D / TSN) with and without XLA
(`jit_compile=True`): forward and train-step clips/s, FLOPs per clip, achieved GFLOP/s, its
ratio to the fp32 matmul peak measured in the same run, and the wall-time ratio LGD /
baseline. All figures come from one run; on a shared machine they are noisy, ratios less so.

    python benchmarks/model_throughput.py            # ~10-15 min on 2 cores
    python benchmarks/model_throughput.py --quick    # ~3 min: 3 steps, no XLA

FLOPs: tf.profiler's float_operation count of the inference graph (a multiply-add is 2
FLOPs); a train step is counted as 3x the forward FLOPs (forward + two backward products).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.profiler import model_analyzer, option_builder  # noqa: E402

import lgd_tf  # noqa: E402

CONFIGS = {
    "LGD-3D R50 16x112x112": (lgd_tf.models.lgd3d, {}, (16, 112, 112, 3)),
    "LGD-2D R50 3x224x224": (lgd_tf.models.lgd2d, {"num_segments": 3}, (3, 224, 224, 3)),
}


def timed(fn, steps, warmup):
    """Best of `steps` wall times (the least disturbed by other processes), after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(n=4096, steps=5):
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    seconds = timed(lambda: matmul().numpy(), steps, 2)
    return 2 * n**3 / seconds / 1e9


def forward_flops(model, clip_shape):
    spec = tf.TensorSpec((1, *clip_shape), tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return model_analyzer.profile(graph, options=options).total_float_ops


def step_functions(builder, kwargs, clip_shape, use_lgd, batch, jit):
    """(model, forward, train_step) closures of one model on one fixed batch."""
    keras.utils.set_random_seed(0)
    model = builder(depth=50, num_classes=400, head="stage2", use_lgd=use_lgd, **kwargs)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, *clip_shape)), tf.float32)
    y = tf.constant(np.arange(batch) % 400, tf.int32)

    @tf.function(jit_compile=jit)
    def forward(x):
        return model(x, training=False)["combined"]

    @tf.function(jit_compile=jit)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True)["combined"])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return model, lambda: forward(x).numpy(), lambda: train_step(x, y).numpy()


def measure_pair(builder, kwargs, clip_shape, batch, steps, jit):
    """Forward and train-step seconds of LGD and baseline, timed in alternation."""
    fns = {use_lgd: step_functions(builder, kwargs, clip_shape, use_lgd, batch, jit)
           for use_lgd in (True, False)}
    for _, forward, train in fns.values():  # compile + warm up
        forward()
        train()
    best = {key: [float("inf"), float("inf")] for key in fns}
    for _ in range(steps):
        for use_lgd, (_, forward, train) in fns.items():
            best[use_lgd][0] = min(best[use_lgd][0], timed(forward, 1, 0))
            best[use_lgd][1] = min(best[use_lgd][1], timed(train, 1, 0))
    return {use_lgd: (fns[use_lgd][0], *best[use_lgd]) for use_lgd in fns}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 timed steps, no XLA")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    steps = args.steps or (3 if args.quick else 5)
    jit_modes = (False,) if args.quick else (False, True)

    print(f"TensorFlow {tf.__version__}, keras {keras.__version__}, "
          f"{os.cpu_count()} CPU cores, batch {args.batch}, best of {steps} steps "
          "(LGD and baseline timed in alternation)")
    peak = matmul_peak()
    print(f"fp32 matmul peak (4096^3 tf.matmul): {peak:.1f} GFLOP/s")
    for title, (builder, kwargs, clip_shape) in CONFIGS.items():
        results = {}
        flops, params = {}, {}
        for jit in jit_modes:
            try:
                pair = measure_pair(builder, kwargs, clip_shape, args.batch, steps, jit)
            except Exception as error:  # XLA may reject an op: report it, go on
                print(f"  {title} jit={jit}: failed "
                      f"({type(error).__name__}: {str(error).splitlines()[0][:120]})")
                continue
            for use_lgd, (model, fwd, train) in pair.items():
                if use_lgd not in flops:
                    flops[use_lgd] = forward_flops(model, clip_shape)
                    params[use_lgd] = model.count_params()
                results[(use_lgd, jit)] = (fwd, train)
            del pair
        if not results:
            continue
        print(f"\n{title}: forward {flops[True] / 1e9:.2f} GFLOP/clip with LGD, "
              f"{flops[False] / 1e9:.2f} baseline; params {params[True]:,} with LGD, "
              f"{params[False]:,} baseline (stage-2 head, 400 classes)")
        for (use_lgd, jit), (fwd, train) in results.items():
            name = "LGD     " if use_lgd else "baseline"
            f = flops[use_lgd]
            fwd_gflops = args.batch * f / fwd / 1e9
            train_gflops = 3 * args.batch * f / train / 1e9
            print(f"  {name} jit={str(jit):5} forward {args.batch / fwd:6.2f} clips/s "
                  f"{fwd_gflops:6.1f} GFLOP/s ({fwd_gflops / peak:.2f} of peak) | train step "
                  f"{args.batch / train:6.2f} clips/s {train_gflops:6.1f} GFLOP/s "
                  f"({train_gflops / peak:.2f} of peak)")
        for jit in jit_modes:
            if (True, jit) in results and (False, jit) in results:
                (lf, lt), (bf, bt) = results[(True, jit)], results[(False, jit)]
                print(f"  wall time LGD / baseline (jit={jit}): forward {lf / bf:.3f}, "
                      f"train step {lt / bt:.3f}")
        for use_lgd in (True, False):
            if (use_lgd, False) in results and (use_lgd, True) in results:
                (nf, nt), (jf, jt) = results[(use_lgd, False)], results[(use_lgd, True)]
                print(f"  XLA speed-up ({'LGD' if use_lgd else 'baseline'}): forward "
                      f"{nf / jf:.2f}x, train step {nt / jt:.2f}x")


if __name__ == "__main__":
    main()
