"""Throughput of LGD-3D R50 (16x112x112) and LGD-2D R50 (3x224x224) on this machine.

Prints, for each model and its baseline (use_lgd=False: P3D / TSN), without and with XLA
(`jit_compile=True`): forward and train-step clips/s, FLOPs per clip, achieved GFLOP/s and its
ratio to the fp32 matmul peak, and the ratio LGD / baseline of wall time and of process CPU
time. Everything comes from one run: in each timing round the matmul peak, the LGD model and
the baseline are timed one after the other (LGD and baseline alternate which goes first) and
every throughput figure is the best of its rounds, so a figure and the peak it is divided by
were measured under the same load. The ratio LGD / baseline is the median over the rounds of
the ratio of each round's pair of calls (and, for comparison, best / best). `--bf16` adds
the LGD model under mixed_bfloat16 to every round and prints float32 / bf16 step time
(bf16 speed-up of clips/s) the same way. On a shared machine
wall times stay noisy, so the same figures are also given per CPU-second of the process
(FLOPs / process CPU time, against the matmul's FLOPs per CPU-second): that ratio and the
CPU-time ratio LGD / baseline do not count the time other processes hold the cores.

    python benchmarks/model_throughput.py            # ~20 min on 2 cores: 7 rounds
    python benchmarks/model_throughput.py --quick    # ~5 min: 5 rounds, no XLA
    python benchmarks/model_throughput.py --quick --only 3d --bf16
    python benchmarks/model_throughput.py --quick --only 3d --model_garden_python=VENV/bin/python

With `--model_garden_python` (or MODEL_GARDEN_PYTHON) naming the python of a venv made by
benchmarks/setup_model_garden.sh, TF Model Garden's ResNet3D-50 video classifier (tf_keras,
Keras 2) is built at the LGD-3D input (16x112x112, same batch) and timed the same way in a
subprocess of the same run (TF_USE_LEGACY_KERAS=1: Keras 2 cannot share a process with
Keras 3), against its own matmul peak of the same rounds; then ours / theirs of the train
step's (and forward's) fraction of the matmul peak is printed.

FLOPs: tf.profiler's float_operation count of the inference graph (a multiply-add is 2
FLOPs); a train step is counted as 3x the forward FLOPs (forward + two backward products).
"""

import argparse
import json
import os
import subprocess
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.profiler import model_analyzer, option_builder  # noqa: E402

import lgd_tf  # noqa: E402
from lgd_tf.training import precision  # noqa: E402

LGD3D = "LGD-3D R50 16x112x112"
CONFIGS = {
    LGD3D: (lgd_tf.models.lgd3d, {}, (16, 112, 112, 3)),
    "LGD-2D R50 3x224x224": (lgd_tf.models.lgd2d, {"num_segments": 3}, (3, 224, 224, 3)),
}
MATMUL_N = 4096
BF16 = "mixed_bfloat16"


# Runs in the Model Garden venv (tf_keras): builds ResNet3D-50 and times it like `measure`.
MODEL_GARDEN_WORKER = r"""
import json, os, sys, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
import tf_keras
from official.vision.configs import video_classification
from official.vision.modeling import factory_3d
from tensorflow.python.profiler import model_analyzer, option_builder

args = json.loads(sys.argv[1])
batch, clip, n = args["batch"], tuple(args["clip"]), args["matmul_n"]


def clock(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


tf_keras.utils.set_random_seed(0)
config = video_classification.VideoClassificationModel()  # backbone: ResNet3D50()
model = factory_3d.build_model("video_classification",
                               tf_keras.layers.InputSpec(shape=[None, *clip]), config,
                               num_classes=400)
spec = tf.TensorSpec((1, *clip), tf.float32)
graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
options = option_builder.ProfileOptionBuilder.float_operation()
options["output"] = "none"
flops = model_analyzer.profile(graph, options=options).total_float_ops
loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, *clip)), tf.float32)
y = tf.constant(np.arange(batch) % 400, tf.int32)
a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
result = {"flops": flops, "params": model.count_params(), "tf": tf.__version__,
          "tf_keras": tf_keras.__version__, "runs": {}}
for jit in args["jit_modes"]:
    optimizer = tf_keras.optimizers.SGD(0.01, momentum=0.9)

    @tf.function(jit_compile=jit)
    def forward(x):
        return model(x, training=False)

    @tf.function(jit_compile=jit)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    timers = {"matmul": lambda: matmul().numpy(), "forward": lambda: forward(x).numpy(),
              "train": lambda: train_step(x, y).numpy()}
    try:
        for fn in timers.values():
            fn()
    except Exception as error:
        result["runs"][str(jit)] = {"error": f"{type(error).__name__}: "
                                             + (str(error).splitlines() or [""])[0][:160]}
        continue
    best = {key: [float("inf"), float("inf")] for key in timers}
    for _ in range(args["rounds"]):
        for key, fn in timers.items():
            wall, cpu = clock(fn)
            best[key] = [min(best[key][0], wall), min(best[key][1], cpu)]
    result["runs"][str(jit)] = best
print("RESULT " + json.dumps(result))
"""


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


def step_functions(builder, kwargs, clip_shape, use_lgd, batch, jit, policy="float32"):
    """(model, forward, train_step) closures of one model on one fixed batch."""
    keras.utils.set_random_seed(0)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = builder(depth=50, num_classes=400, head="stage2", use_lgd=use_lgd, **kwargs)
    finally:
        keras.mixed_precision.set_global_policy(previous)
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


def measure(builder, kwargs, clip_shape, batch, rounds, jit, matmul, bf16=False):
    """Best wall / CPU seconds of matmul, forward and train step of LGD and baseline, and
    every round's seconds (`samples`). Keys: "matmul", (use_lgd, kind) in float32 and, with
    `bf16`, (BF16, True, kind) for LGD under mixed_bfloat16. A round times the matmul, then
    LGD and baseline in alternating order (LGD first in even rounds, baseline first in odd
    ones), each kind (forward, train) as a pair, so the per-round ratios LGD / baseline (and
    bf16 / float32) compare two calls made back to back."""
    fns = {use_lgd: step_functions(builder, kwargs, clip_shape, use_lgd, batch, jit)
           for use_lgd in (True, False)}
    if bf16:
        fns[BF16] = step_functions(builder, kwargs, clip_shape, True, batch, jit, BF16)
    timers = {"matmul": matmul}
    for use_lgd in (True, False):
        _, forward, train = fns[use_lgd]
        timers[(use_lgd, "forward")] = forward
        timers[(use_lgd, "train")] = train
    if bf16:
        timers[(BF16, True, "forward")] = fns[BF16][1]
        timers[(BF16, True, "train")] = fns[BF16][2]
    for fn in timers.values():  # compile and warm up
        fn()
    samples = {key: [] for key in timers}
    for i in range(rounds):
        order = ["matmul"]
        for kind in ("forward", "train"):
            pair = [(True, kind), (False, kind)] + ([(BF16, True, kind)] if bf16 else [])
            order += pair if i % 2 == 0 else pair[::-1]
        for key in order:
            samples[key].append(clock(timers[key]))
    best = {key: (min(w for w, _ in v), min(c for _, c in v)) for key, v in samples.items()}
    models = {use_lgd: fns[use_lgd][0] for use_lgd in (True, False)}
    return models, best, samples


def median_ratio(samples, a, b, clock_index=0):
    """Median over rounds of samples[a] / samples[b] (0: wall, 1: CPU time)."""
    return float(np.median([x[clock_index] / y[clock_index]
                            for x, y in zip(samples[a], samples[b], strict=True)]))


def report(title, clip_shape, batch, models, best, jit, samples):
    peak = 2 * MATMUL_N**3 / best["matmul"][0] / 1e9
    cpu_peak = 2 * MATMUL_N**3 / best["matmul"][1] / 1e9
    flops = {k: forward_flops(m, clip_shape) for k, m in models.items()}
    print(f"\n{title}, jit_compile={jit}: fp32 matmul peak {peak:.1f} GFLOP/s wall, "
          f"{cpu_peak:.1f} GFLOP per CPU-second (best {MATMUL_N}^3 tf.matmul of the same rounds)")
    fractions = {}
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
        fractions[use_lgd] = {"wall": (fwd_gflops / peak, train_gflops / peak),
                              "CPU": (fwd_cpu / cpu_peak, train_cpu / cpu_peak)}
        print(f"           per CPU-second: forward {fwd_cpu:6.1f} GFLOP ({fwd_cpu / cpu_peak:.2f} "
              f"of matmul's), train step {train_cpu:6.1f} GFLOP ({train_cpu / cpu_peak:.2f} "
              "of matmul's)")
    n = len(samples["matmul"])
    for kind in ("forward", "train"):
        (lw, lc), (bw, bc) = best[(True, kind)], best[(False, kind)]
        print(f"  LGD / baseline {kind:7}: median of {n} alternating pairs: wall time "
              f"{median_ratio(samples, (True, kind), (False, kind)):.3f}, CPU time "
              f"{median_ratio(samples, (True, kind), (False, kind), 1):.3f} | best / best: "
              f"wall {lw / bw:.3f}, CPU {lc / bc:.3f}")
    for kind in ("forward", "train"):
        key = (BF16, True, kind)
        if key in best:
            (hw, hc), (fw, fc) = best[key], best[(True, kind)]
            print(f"  LGD {BF16} / float32 {kind:7} clips/s: median of {n} alternating pairs: "
                  f"wall {median_ratio(samples, (True, kind), key):.3f}x, CPU "
                  f"{median_ratio(samples, (True, kind), key, 1):.3f}x | best / best: wall "
                  f"{fw / hw:.3f}x, CPU {fc / hc:.3f}x ({BF16} {batch / hw:5.2f} clips/s)")
    return fractions


def run_model_garden(python, batch, rounds, jit_modes):
    """Model Garden's figures from a subprocess in its venv, or an error string."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    request = {"batch": batch, "clip": list(CONFIGS[LGD3D][2]), "rounds": rounds,
               "matmul_n": MATMUL_N, "jit_modes": list(jit_modes)}
    try:
        done = subprocess.run([python, "-c", MODEL_GARDEN_WORKER, json.dumps(request)], env=env,
                              capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.SubprocessError) as error:
        return f"{type(error).__name__}: {error}"
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return f"exit status {done.returncode}: {tail}"
    return json.loads(lines[-1][len("RESULT "):])


def report_model_garden(result, ours, batch):
    """Prints Model Garden's rows and ours / theirs of the fractions of the matmul peak;
    `ours` maps jit to {"wall" | "CPU": (forward fraction, train fraction)} of LGD-3D R50.
    Returns ours / theirs as {jit: {"wall" | "CPU": (forward, train)}} ({} if it failed)."""
    title = f"TF Model Garden ResNet3D-50 {'x'.join(map(str, CONFIGS[LGD3D][2][:3]))}"
    ratios = {}
    if isinstance(result, str):
        print(f"\n{title}: failed ({result})")
        return ratios
    f = result["flops"]
    for jit, best in result["runs"].items():
        print(f"\n{title} (tf-models-official on TensorFlow {result['tf']}, tf_keras "
              f"{result['tf_keras']}, subprocess), jit_compile={jit}:", end="")
        if "error" in best:
            print(f" failed ({best['error']})")
            continue
        peak = 2 * MATMUL_N**3 / best["matmul"][0] / 1e9
        cpu_peak = 2 * MATMUL_N**3 / best["matmul"][1] / 1e9
        fwd, train = best["forward"][0], best["train"][0]
        fwd_gflops, train_gflops = batch * f / fwd / 1e9, 3 * batch * f / train / 1e9
        fwd_cpu = batch * f / best["forward"][1] / 1e9
        train_cpu = 3 * batch * f / best["train"][1] / 1e9
        print(f" fp32 matmul peak {peak:.1f} GFLOP/s wall, {cpu_peak:.1f} GFLOP per CPU-second "
              "(its own rounds)")
        print(f"  Model Garden {f / 1e9:6.2f} GFLOP/clip, {result['params']:>11,} params | "
              f"forward {batch / fwd:5.2f} clips/s {fwd_gflops:6.1f} GFLOP/s "
              f"({fwd_gflops / peak:.2f} of peak) | train step {batch / train:5.2f} clips/s "
              f"{train_gflops:6.1f} GFLOP/s ({train_gflops / peak:.2f} of peak)")
        print(f"           per CPU-second: forward {fwd_cpu:6.1f} GFLOP ({fwd_cpu / cpu_peak:.2f} "
              f"of matmul's), train step {train_cpu:6.1f} GFLOP ({train_cpu / cpu_peak:.2f} "
              "of matmul's)")
        key = jit == "True"
        theirs = {"wall": (fwd_gflops / peak, train_gflops / peak),
                  "CPU": (fwd_cpu / cpu_peak, train_cpu / cpu_peak)}
        for clock_name in ("wall", "CPU") if key in ours else ():
            (ours_fwd, ours_train), (their_fwd, their_train) = (ours[key][clock_name],
                                                                theirs[clock_name])
            ratios.setdefault(key, {})[clock_name] = (ours_fwd / their_fwd,
                                                      ours_train / their_train)
            print(f"  ours (LGD-3D R50) / theirs (ResNet3D-50), fraction of the matmul's "
                  f"{'GFLOP/s' if clock_name == 'wall' else 'GFLOP per CPU-second'}: train "
                  f"step {ours_train:.2f} / {their_train:.2f} = {ours_train / their_train:.2f}, "
                  f"forward {ours_fwd:.2f} / {their_fwd:.2f} = {ours_fwd / their_fwd:.2f}")
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds, no XLA")
    parser.add_argument("--bf16", action="store_true",
                        help="also time the LGD model under mixed_bfloat16 in the same rounds "
                        "and print bf16 / float32 clips/s")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--only", choices=("3d", "2d"), default=None,
                        help="only LGD-3D (with Model Garden) or only LGD-2D")
    parser.add_argument("--model_garden_python", default=os.environ.get("MODEL_GARDEN_PYTHON"),
                        help="python of the venv of benchmarks/setup_model_garden.sh: adds TF "
                        "Model Garden's ResNet3D-50 (default: $MODEL_GARDEN_PYTHON)")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 7)
    jit_modes = (False,) if args.quick else (False, True)
    print(f"TensorFlow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPU "
          f"cores, batch {args.batch}, {rounds} rounds; stage-2 head, 400 classes")
    if args.bf16 and precision.policy_warning(BF16):
        print(precision.policy_warning(BF16))
    matmul = matmul_fn()
    seconds, ours = {}, {}
    for title, (builder, kwargs, clip_shape) in CONFIGS.items():
        if args.only and (title == LGD3D) != (args.only == "3d"):
            continue
        for jit in jit_modes:
            try:
                models, best, samples = measure(builder, kwargs, clip_shape, args.batch,
                                                rounds, jit, matmul, bf16=args.bf16)
            except Exception as error:  # XLA may reject an op: report it and go on
                print(f"\n{title}, jit_compile={jit}: failed "
                      f"({type(error).__name__}: {str(error).splitlines()[0][:160]})")
                continue
            fractions = report(title, clip_shape, args.batch, models, best, jit, samples)
            seconds[(title, jit)] = best
            if title == LGD3D:
                ours[jit] = fractions[True]
            del models
    if args.model_garden_python and args.only != "2d":
        report_model_garden(run_model_garden(args.model_garden_python, args.batch, rounds,
                                             jit_modes), ours, args.batch)
    for title in CONFIGS:
        if (title, False) in seconds and (title, True) in seconds:
            plain, xla = seconds[(title, False)], seconds[(title, True)]
            print(f"\n{title}: XLA speed-up (wall, >1 = faster) " + ", ".join(
                f"{'LGD' if use_lgd else 'baseline'} {kind} "
                f"{plain[(use_lgd, kind)][0] / xla[(use_lgd, kind)][0]:.2f}x"
                for use_lgd in (True, False) for kind in ("forward", "train")))


if __name__ == "__main__":
    main()
