"""Throughput of LGD-3D R50 (16x112x112) and LGD-2D R50 (3x224x224) on this machine.

Prints, for each model and its baseline (use_lgd=False: P3D / TSN), without and with XLA
(`jit_compile=True`): forward and train-step clips/s, FLOPs per clip, achieved GFLOP/s and its
ratio to the fp32 matmul peak, and the ratio LGD / baseline of wall time and of process CPU
time. Everything comes from one run: in each timing round the matmul peak, the LGD model and
the baseline are timed one after the other and every figure is the best of its rounds, so a
figure and the peak it is divided by were measured under the same load. On a shared machine
wall times stay noisy, so the same figures are also given per CPU-second of the process
(FLOPs / process CPU time, against the matmul's FLOPs per CPU-second): that ratio and the
CPU-time ratio LGD / baseline do not count the time other processes hold the cores.

    python benchmarks/model_throughput.py            # ~15 min on 2 cores
    python benchmarks/model_throughput.py --quick    # ~4 min: 3 rounds, no XLA

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
MATMUL_N = 4096


def clock(fn):
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def matmul_fn():
    a = tf.random.normal((MATMUL_N, MATMUL_N))
    b = tf.random.normal((MATMUL_N, MATMUL_N))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    return lambda: matmul().numpy()


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


def measure(builder, kwargs, clip_shape, batch, rounds, jit, matmul):
    """Best wall / CPU seconds of matmul, forward and train step of LGD and baseline."""
    fns = {use_lgd: step_functions(builder, kwargs, clip_shape, use_lgd, batch, jit)
           for use_lgd in (True, False)}
    timers = {"matmul": matmul}
    for use_lgd, (_, forward, train) in fns.items():
        timers[(use_lgd, "forward")] = forward
        timers[(use_lgd, "train")] = train
    for fn in timers.values():  # compile and warm up
        fn()
    best = {key: (float("inf"), float("inf")) for key in timers}
    for _ in range(rounds):
        for key, fn in timers.items():
            wall, cpu = clock(fn)
            best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
    models = {use_lgd: fns[use_lgd][0] for use_lgd in fns}
    return models, best


def report(title, clip_shape, batch, models, best, jit):
    peak = 2 * MATMUL_N**3 / best["matmul"][0] / 1e9
    cpu_peak = 2 * MATMUL_N**3 / best["matmul"][1] / 1e9
    flops = {k: forward_flops(m, clip_shape) for k, m in models.items()}
    print(f"\n{title}, jit_compile={jit}: fp32 matmul peak {peak:.1f} GFLOP/s wall, "
          f"{cpu_peak:.1f} GFLOP per CPU-second (best {MATMUL_N}^3 tf.matmul of the same rounds)")
    for use_lgd in (True, False):
        name = "LGD     " if use_lgd else "baseline"
        f = flops[use_lgd]
        fwd = best[(use_lgd, "forward")][0]
        train = best[(use_lgd, "train")][0]
        fwd_gflops = batch * f / fwd / 1e9
        train_gflops = 3 * batch * f / train / 1e9
        print(f"  {name} {f / 1e9:6.2f} GFLOP/clip, {models[use_lgd].count_params():>11,} "
              f"params | forward {batch / fwd:5.2f} clips/s {fwd_gflops:6.1f} GFLOP/s "
              f"({fwd_gflops / peak:.2f} of peak) | train step {batch / train:5.2f} clips/s "
              f"{train_gflops:6.1f} GFLOP/s ({train_gflops / peak:.2f} of peak)")
        fwd_cpu = batch * f / best[(use_lgd, "forward")][1] / 1e9
        train_cpu = 3 * batch * f / best[(use_lgd, "train")][1] / 1e9
        print(f"           per CPU-second: forward {fwd_cpu:6.1f} GFLOP ({fwd_cpu / cpu_peak:.2f} "
              f"of matmul's), train step {train_cpu:6.1f} GFLOP ({train_cpu / cpu_peak:.2f} "
              "of matmul's)")
    for kind in ("forward", "train"):
        (lw, lc), (bw, bc) = best[(True, kind)], best[(False, kind)]
        print(f"  LGD / baseline {kind:7}: wall time {lw / bw:.3f}, CPU time {lc / bc:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, no XLA")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    jit_modes = (False,) if args.quick else (False, True)
    print(f"TensorFlow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPU "
          f"cores, batch {args.batch}, best of {rounds} rounds; stage-2 head, 400 classes")
    matmul = matmul_fn()
    seconds = {}
    for title, (builder, kwargs, clip_shape) in CONFIGS.items():
        for jit in jit_modes:
            try:
                models, best = measure(builder, kwargs, clip_shape, args.batch, rounds, jit,
                                       matmul)
            except Exception as error:  # XLA may reject an op: report it and go on
                print(f"\n{title}, jit_compile={jit}: failed "
                      f"({type(error).__name__}: {str(error).splitlines()[0][:160]})")
                continue
            report(title, clip_shape, args.batch, models, best, jit)
            seconds[(title, jit)] = best
            del models
    for title in CONFIGS:
        if (title, False) in seconds and (title, True) in seconds:
            plain, xla = seconds[(title, False)], seconds[(title, True)]
            print(f"\n{title}: XLA speed-up (wall, >1 = faster) " + ", ".join(
                f"{'LGD' if use_lgd else 'baseline'} {kind} "
                f"{plain[(use_lgd, kind)][0] / xla[(use_lgd, kind)][0]:.2f}x"
                for use_lgd in (True, False) for kind in ("forward", "train")))


if __name__ == "__main__":
    main()
