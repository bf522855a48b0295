"""LGD-3D R50 on the GPUs of this machine: train step, forward, input pipeline, MirroredStrategy.

One run prints a device line and one table. For LGD-3D R50 (16x112x112, stage-1 and stage-2
heads, 400 classes), in fp32 / mixed_float16 / mixed_bfloat16, without and with XLA
(`jit_compile`), each row gives train-step and forward clips/s (steady state after warm-up,
every step synced with `.numpy()`), the model's GFLOP/s and its fraction of the matmul rate of
the same dtype measured in the same run (an 8192^3 `tf.matmul` timed the same way; the
"matmul" rows). Then the input pipeline (`lgd_tf.data.train_dataset` on synthetic TFRecords
this script writes: 200 videos x 32 frames of 128x171 JPEG) beside the train step, and the
train step under MirroredStrategy over every GPU present, with its scaling vs one GPU.

    bash benchmarks/gpu.sh                               # <= 10 min on one H200-class GPU
    python benchmarks/gpu_benchmark.py --cpu_smoke       # tiny model on CPU, ~1-2 min

FLOPs per clip: benchmarks/model_throughput.py's count (tf.profiler float_operation of the
batch-1 inference graph, a multiply-add is 2 FLOPs); a train step counts 3x the forward.
fp32 runs with TensorFloat-32 as TensorFlow enables it by default on Ampere and later, for
the model and the matmul alike. Each configuration's steady-state timing stops after
`--steps` steps or `--seconds` seconds; a configuration that would start after the time
budget (`--budget_s`) is printed as skipped, so the whole run stays within the budget.
"""

import argparse
import gc
import math
import os
import subprocess
import sys
import tempfile
import time

START = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lgd_tf  # noqa: E402
from lgd_tf import data as lgd_data  # noqa: E402
from lgd_tf.data import builder as lgd_builder  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_throughput import forward_flops  # noqa: E402

DTYPES = ("float32", "mixed_float16", "mixed_bfloat16")
MATMUL_DTYPE = {"float32": tf.float32, "mixed_float16": tf.float16,
                "mixed_bfloat16": tf.bfloat16}
HEADS = ("stage1", "stage2")
COLUMNS = (("row", 44), ("batch", 6), ("steps", 6), ("train clips/s", 14), ("GFLOP/s", 10),
           ("of matmul", 10), ("fwd clips/s", 12), ("GFLOP/s", 10), ("of matmul", 10))

# Full size (GPU) and smoke (CPU) settings.
FULL = dict(model_kwargs=dict(depth=50, num_classes=400), clip=(16, 112, 112, 3), matmul_n=8192,
            videos=200, frames=32, frame_size=(128, 171), resize=None, steps=30, seconds=5.0,
            warmup=3, budget_s=540.0, pipeline_seconds=10.0, pipeline_reserve_s=60.0)
SMOKE = dict(model_kwargs=dict(depth=50, num_classes=10, stage_blocks=(1, 1, 1, 1),
                               base_filters=8, num_frames=8, sketch_dim=64),
             clip=(8, 32, 32, 3), matmul_n=256, videos=4, frames=12, frame_size=(40, 54),
             resize=(36, 48), steps=2, seconds=1.0, warmup=1, budget_s=600.0,
             pipeline_seconds=1.0, pipeline_reserve_s=0.0)


def config_name(head, dtype, jit):
    return f"{head} {dtype} xla-{'on' if jit else 'off'}"


def all_configs():
    """Order of the rows: without XLA first (cheaper to compile; the MirroredStrategy row
    runs between the two halves), fp32 first; with XLA, bfloat16 first (what a GPU run would
    train in), as the last rows are the ones the time budget may skip."""
    return ([(head, dtype, False) for head in HEADS for dtype in DTYPES]
            + [(head, dtype, True) for dtype in DTYPES[::-1] for head in HEADS])


class Table:
    """Prints the header once and each row as soon as it is measured (flushed), so a run cut
    short still shows what it measured; `rows` keeps every row for callers (the test)."""

    def __init__(self):
        self.rows = []
        print(" ".join(f"{name:>{width}}" if i else f"{name:<{width}}"
                       for i, (name, width) in enumerate(COLUMNS)), flush=True)

    def add(self, name, values, note=""):
        cells = [f"{name:<{COLUMNS[0][1]}}"]
        for (_, width), value in zip(COLUMNS[1:], values, strict=True):
            if value is None:
                text = "-"
            elif isinstance(value, int):
                text = str(value)
            elif value >= 100:
                text = f"{value:.1f}"
            else:
                text = f"{value:.3g}"
            cells.append(f"{text:>{width}}")
        self.rows.append((name, values, note))
        print(" ".join(cells) + (f"  {note}" if note else ""), flush=True)


def timed_steps(fn, warmup, steps, seconds):
    """(steps, seconds per step): `warmup` calls (compile included) excluded, then calls until
    `steps` calls or `seconds` seconds, whichever comes first (at least one)."""
    for _ in range(warmup):
        fn()
    count, start = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if count >= steps or elapsed >= seconds:
            return count, elapsed / count


def matmul_rate(dtype, n, settings):
    """GFLOP/s of an n^3 tf.matmul in `dtype`, synced with `.numpy()` every call."""
    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    # The whole product is reduced (as model_throughput.py does) so none of it can be pruned;
    # the sum may overflow in float16: only the time counts.
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    steps, per_step = timed_steps(lambda: matmul().numpy(), settings["warmup"] + 2,
                                  10 * settings["steps"], settings["seconds"])
    return steps, 2 * n**3 / per_step / 1e9


def make_batch(clip, batch, num_classes):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (batch, *clip)), tf.float32)
    y = tf.constant(np.arange(batch) % num_classes, tf.int32)
    return x, y


def build(head, dtype, settings):
    """(model, optimizer) under the `dtype` policy (float16 adds loss scaling)."""
    keras.mixed_precision.set_global_policy(dtype)
    keras.utils.set_random_seed(0)
    model = lgd_tf.models.lgd3d(head=head, **settings["model_kwargs"])
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    if dtype == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return model, optimizer


def replica_loss(outputs, labels, global_batch):
    """The training loss (Eq. 6 / Eq. 7): each head's softmax cross-entropy, summed."""
    return tf.add_n([tf.nn.compute_average_loss(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(logits, tf.float32)),
        global_batch_size=global_batch) for logits in outputs.values()])


def step_functions(model, optimizer, jit, global_batch):
    def forward(x):
        return tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32))
                         for v in model(x, training=False).values()])

    def train(x, y):
        with tf.GradientTape() as tape:
            loss = replica_loss(model(x, training=True), y, global_batch)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return tf.function(forward, jit_compile=jit), tf.function(train, jit_compile=jit)


def measure_config(head, dtype, jit, batch, settings, models):
    """{"train": (steps, s/step), "forward": (steps, s/step)} of one configuration; the model
    of (head, dtype) is built once and shared by xla-off and xla-on."""
    if (head, dtype) not in models:
        models[(head, dtype)] = build(head, dtype, settings)
    model, optimizer = models[(head, dtype)]
    keras.mixed_precision.set_global_policy(dtype)
    x, y = make_batch(settings["clip"], batch, settings["model_kwargs"]["num_classes"])
    forward, train = step_functions(model, optimizer, jit, batch)
    args = (settings["warmup"], settings["steps"], settings["seconds"])
    result = {"train": timed_steps(lambda: train(x, y).numpy(), *args),
              "forward": timed_steps(lambda: forward(x).numpy(), *args)}
    if not all(math.isfinite(float(v)) for v in (train(x, y), forward(x))):
        raise FloatingPointError("non-finite loss or logits")
    return result


def flops_per_clip(head, settings, cache, models):
    """Forward FLOPs per clip of LGD-3D (`head`), counted once on an fp32 model."""
    if head not in cache:
        keras.mixed_precision.set_global_policy("float32")
        model = models.get((head, "float32"), (None,))[0]
        if model is None:
            keras.utils.set_random_seed(0)
            model = lgd_tf.models.lgd3d(head=head, **settings["model_kwargs"])
        cache[head] = forward_flops(model, settings["clip"])
        del model
        gc.collect()
    return cache[head]


def synthetic_video(rng, frames, height, width):
    """A smooth moving texture plus noise (JPEG sizes like real video)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    freq = rng.uniform(0.03, 0.15, size=(3, 2))
    speed = rng.uniform(-2, 2, size=2)
    video = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        chans = [128 + 90 * np.sin(freq[c, 0] * (xx + speed[0] * t) + freq[c, 1] *
                                   (yy + speed[1] * t) + c) for c in range(3)]
        image = np.stack(chans, -1) + rng.normal(0, 8, size=(height, width, 3))
        video[t] = np.clip(image, 0, 255)
    return video


def pipeline_rate(folder, batch, settings):
    """(batches, clips/s) of lgd_tf.data.train_dataset on shards written into `folder`."""
    rng = np.random.default_rng(0)
    num_classes = settings["model_kwargs"]["num_classes"]
    items = [(synthetic_video(rng, settings["frames"], *settings["frame_size"]),
              k % num_classes, f"class{k % num_classes}", f"video{k:05d}")
             for k in range(settings["videos"])]
    lgd_builder.build_from_frames(
        items, folder, prefix="bench", num_shards=min(8, len(items)),
        num_workers=1)  # no fork of a process that holds a GPU context
    del items
    ds = lgd_data.train_dataset(
        os.path.join(folder, "bench-*"), batch, num_frames=settings["clip"][0],
        resize=settings["resize"], crop_size=settings["clip"][1], num_classes=num_classes,
        seed=0)
    iterator = iter(ds.prefetch(2))
    steps, per_batch = timed_steps(lambda: next(iterator)[0].numpy(), 2 * settings["warmup"] + 2,
                                   10**6, settings["pipeline_seconds"])
    return steps, batch / per_batch


def mirrored_train(head, dtype, per_replica_batch, settings, devices):
    """(replicas, steps, s/step) of the train step under MirroredStrategy (XLA off)."""
    strategy = tf.distribute.MirroredStrategy(devices)
    replicas = strategy.num_replicas_in_sync
    global_batch = per_replica_batch * replicas
    with strategy.scope():
        model, optimizer = build(head, dtype, settings)
    x, y = make_batch(settings["clip"], per_replica_batch, settings["model_kwargs"]["num_classes"])
    xs = strategy.experimental_distribute_values_from_function(lambda _: tf.identity(x))
    ys = strategy.experimental_distribute_values_from_function(lambda _: tf.identity(y))
    _, replica_train = step_functions(model, optimizer, False, global_batch)

    @tf.function
    def train(xs, ys):
        losses = strategy.run(replica_train.python_function, args=(xs, ys))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    steps, per_step = timed_steps(lambda: train(xs, ys).numpy(), settings["warmup"],
                                  settings["steps"], settings["seconds"])
    return replicas, steps, per_step


def mirrored_row(table, train_rate, flops, peaks, batch, settings, gpus, deadline, guess):
    """The MirroredStrategy row: the first row's configuration (XLA off) on every GPU."""
    reference = next(iter(train_rate), None)
    if reference is None:
        return
    head, dtype, _ = reference
    devices = [g.name.replace("physical_device:", "") for g in gpus] if gpus else ["/cpu:0"]
    name = f"MirroredStrategy x{len(devices)} {head} {dtype} xla-off"
    if time.perf_counter() + guess > deadline:
        table.add(name, (batch, None, None, None, None, None, None, None), "skipped: time budget")
        return
    try:
        replicas, steps, per_step = mirrored_train(head, dtype, batch, settings, devices)
    except Exception as error:
        table.add(name, (batch, None, None, None, None, None, None, None), error_text(error))
        return
    finally:
        keras.mixed_precision.set_global_policy("float32")
        gc.collect()
    clips = replicas * batch / per_step
    gflops = 3 * clips * flops[head] / 1e9
    scaling = clips / train_rate[reference]
    table.add(name, (replicas * batch, steps, clips, gflops, gflops / peaks[dtype] / replicas,
                     None, None, None),
              f"scaling {scaling:.2f} x one GPU ({scaling / replicas:.2f} per replica)")


def gpu_memory_gib():
    """Total memory of GPU 0 from nvidia-smi, or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        return float(out.split()[0]) / 1024
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def default_batch(memory_gib):
    """Per-GPU batch for LGD-3D R50 16x112x112 training."""
    if memory_gib is None:
        return 8
    return 32 if memory_gib >= 70 else 16 if memory_gib >= 30 else 8


def device_line(gpus, batch, smoke):
    if smoke:
        return (f"device: CPU smoke run ({os.cpu_count()} cores), tiny LGD-3D "
                f"{'x'.join(map(str, SMOKE['clip'][:3]))}, batch {batch}; TensorFlow "
                f"{tf.__version__}, keras {keras.__version__}")
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        cc = details.get("compute_capability")
        names.append(f"{details.get('device_name', gpu.name)}"
                     + (f" (compute capability {cc[0]}.{cc[1]})" if cc else ""))
    memory = gpu_memory_gib()
    return (f"device: {len(gpus)} x {names[0]}" + (f", {memory:.0f} GiB" if memory else "")
            + (f" [{'; '.join(sorted(set(names)))}]" if len(set(names)) > 1 else "")
            + f"; batch {batch} per GPU; TensorFloat-32 "
            f"{'on' if tf.config.experimental.tensor_float_32_execution_enabled() else 'off'}; "
            f"TensorFlow {tf.__version__}, keras {keras.__version__}")


def error_text(error):
    return f"failed: {type(error).__name__}: {(str(error).splitlines() or [''])[0][:100]}"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu_smoke", action="store_true",
                        help="tiny model on CPU, 1-2 steps per configuration")
    parser.add_argument("--batch", type=int, default=None,
                        help="per-GPU batch (default: from the GPU's memory, 8-32; smoke: 2)")
    parser.add_argument("--configs", nargs="*", default=None,
                        help='only these rows, e.g. "stage1 float32 xla-off"')
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    parser.add_argument("--seconds", type=float, default=None,
                        help="time cap of each timed measurement")
    parser.add_argument("--budget_s", type=float, default=None,
                        help="configurations that would start later are skipped (default 540)")
    parser.add_argument("--smoke_xla", action="store_true",
                        help="--cpu_smoke with the xla-on rows too (XLA's CPU compile of each "
                        "train step takes minutes)")
    parser.add_argument("--no_pipeline", action="store_true")
    parser.add_argument("--no_mirrored", action="store_true")
    return parser.parse_args(argv)


def main(argv=None):
    """Prints the device line and the table; returns the table's rows (or None: no GPU)."""
    start = START if argv is None else time.perf_counter()
    args = parse_args(argv)
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.cpu_smoke:
        print("no GPU visible to TensorFlow: nothing to measure (use --cpu_smoke to try the "
              "script on CPU)")
        return None
    settings = dict(SMOKE if args.cpu_smoke else FULL)
    for name in ("steps", "seconds", "budget_s"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    # The input pipeline row comes last: keep its time out of the configurations' budget.
    deadline = start + settings["budget_s"] - (0 if args.no_pipeline else
                                               settings["pipeline_reserve_s"])
    batch = args.batch or (2 if args.cpu_smoke else default_batch(gpu_memory_gib()))
    configs = all_configs()
    if args.configs is not None:
        wanted = {" ".join(c.split()) for c in args.configs}
        unknown = wanted - {config_name(*c) for c in configs}
        if unknown:
            raise SystemExit(f"unknown --configs {sorted(unknown)}; known: "
                             f"{[config_name(*c) for c in configs]}")
        configs = [c for c in configs if config_name(*c) in wanted]
    if args.cpu_smoke and not args.smoke_xla:
        # XLA compiles the tiny train step on CPU, but in minutes: smoke rows run without it.
        configs = [c for c in configs if not c[2]]

    print(device_line(gpus, batch, args.cpu_smoke), flush=True)
    table = Table()
    n = settings["matmul_n"]
    peaks = {}
    for dtype in sorted({c[1] for c in configs}, key=DTYPES.index):
        steps, peaks[dtype] = matmul_rate(MATMUL_DTYPE[dtype], n, settings)
        table.add(f"matmul {n}^3 {MATMUL_DTYPE[dtype].name}", (None, steps, None, peaks[dtype],
                                                               1.0, None, None, None))
    flops, models, train_rate, noted = {}, {}, {}, set()
    longest = {False: 0.0, True: 0.0}  # seconds of the longest configuration, per XLA mode
    for i, (head, dtype, jit) in enumerate(configs):
        if jit and not any(c[2] for c in configs[:i]) and not args.no_mirrored:
            mirrored_row(table, train_rate, flops, peaks, batch, settings, gpus, deadline,
                         longest[False])
        name = config_name(head, dtype, jit)
        # Not measured yet: an XLA compile is guessed at twice the longest plain one.
        guess = longest[jit] or (2 * longest[False] if jit else 0.0)
        if time.perf_counter() + guess > deadline:
            table.add(name, (batch, None, None, None, None, None, None, None),
                      "skipped: time budget")
            continue
        began = time.perf_counter()
        try:
            result = measure_config(head, dtype, jit, batch, settings, models)
            f = flops_per_clip(head, settings, flops, models)
        except Exception as error:  # an op XLA or a dtype rejects: say so and go on
            table.add(name, (batch, None, None, None, None, None, None, None), error_text(error))
            continue
        finally:
            longest[jit] = max(longest[jit], time.perf_counter() - began)
        (steps, train_s), (_, fwd_s) = result["train"], result["forward"]
        train_gflops = 3 * batch * f / train_s / 1e9
        fwd_gflops = batch * f / fwd_s / 1e9
        train_rate[(head, dtype, jit)] = batch / train_s
        table.add(name, (batch, steps, batch / train_s, train_gflops, train_gflops / peaks[dtype],
                         batch / fwd_s, fwd_gflops, fwd_gflops / peaks[dtype]),
                  f"{f / 1e9:.4g} GFLOP/clip forward" if head not in noted else "")
        noted.add(head)
    if not any(c[2] for c in configs) and not args.no_mirrored:
        mirrored_row(table, train_rate, flops, peaks, batch, settings, gpus, deadline,
                     longest[False])
    models.clear()
    keras.mixed_precision.set_global_policy("float32")
    gc.collect()

    if not args.no_pipeline:
        name = f"input pipeline (train_dataset, {settings['videos']} videos)"
        fastest = max(train_rate, key=train_rate.get, default=None)
        try:
            with tempfile.TemporaryDirectory() as folder:
                steps, clips = pipeline_rate(folder, batch, settings)
            note = (f"= {clips / train_rate[fastest]:.2f} x the fastest train step "
                    f"({config_name(*fastest)})" if fastest else "")
            table.add(name, (batch, steps, clips, None, None, None, None, None), note)
        except Exception as error:
            table.add(name, (batch, None, None, None, None, None, None, None), error_text(error))
    print(f"wall time {time.perf_counter() - start:.0f} s", flush=True)
    return table.rows


if __name__ == "__main__":
    main()
