r"""Export formats of LGD-3D R50 (400 classes, random init): file size, load time and
single-clip latency on this CPU for SavedModel, LiteRT (float32 / float16 / dynamic int8) and
ONNX (onnxruntime, CPU provider).

    python benchmarks/export_formats.py [--head=stage2] [--num_frames=16] [--crop_size=112] \
        [--runs=10] [--threads=2] [--out_dir=/tmp/lgd_export_formats]

Every format gets the same uint8 clip (1, T, crop, crop, 3); the SavedModel is timed through
its serving_default signature (uint8 clips -> top-k and probabilities, TF Serving's entry
point); LiteRT and ONNX compute the probabilities only. Latency is the median of --runs calls
after one warm-up call. The table also gives the largest probability difference to Keras.
"""

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lgd_tf  # noqa: E402
from lgd_tf.serving import export as export_lib  # noqa: E402
from lgd_tf.serving import litert, onnx  # noqa: E402


def size_of(path):
    path = pathlib.Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(fn, runs):
    fn()  # warm-up (and one-time initialisation)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--num_classes", type=int, default=400)
    parser.add_argument("--head", default="stage2", choices=["stage1", "stage2"])
    parser.add_argument("--num_frames", type=int, default=16)
    parser.add_argument("--crop_size", type=int, default=112)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2,
                        help="threads of LiteRT / onnxruntime / TensorFlow intra-op")
    parser.add_argument("--out_dir", default="/tmp/lgd_export_formats")
    parser.add_argument("--formats", default="saved_model,litert,litert_fp16,litert_int8,onnx")
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    out_dir = pathlib.Path(args.out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    keras.utils.set_random_seed(0)
    model = lgd_tf.models.lgd3d(args.depth, args.num_classes, head=args.head,
                                num_frames=args.num_frames)
    shape = (1, args.num_frames, args.crop_size, args.crop_size, 3)
    clip = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    reference = keras.ops.convert_to_numpy(
        lgd_tf.models.class_probabilities(model(clip.astype("float32"), training=False)))
    print(f"LGD-3D R{args.depth}, {args.head} head, {args.num_classes} classes, "
          f"{model.count_params() / 1e6:.1f} M parameters; clip {shape} uint8; "
          f"{args.threads} threads; median of {args.runs} runs; {os.cpu_count()} CPUs "
          f"({os.getloadavg()[0]:.1f} load average at start)", flush=True)
    rows = []
    for name in args.formats.split(","):
        start = time.perf_counter()
        if name == "saved_model":
            result = export_lib.export_model(model, out_dir / name)
            path, convert_s = result.saved_model_dir, time.perf_counter() - start
            start = time.perf_counter()
            signature = tf.saved_model.load(str(path)).signatures["serving_default"]
            load_s = time.perf_counter() - start
            clips = tf.constant(clip)
            latency, out = timed(lambda s=signature, c=clips: s(clips=c)["probabilities"].numpy(),
                                 args.runs)
        else:
            quantize = {"litert": None, "litert_fp16": "float16",
                        "litert_int8": "dynamic_int8", "onnx": None}[name]
            fmt = "onnx" if name == "onnx" else "litert"
            result = export_lib.export_model(model, out_dir / name, format=fmt,
                                             quantize=quantize, input_height=args.crop_size,
                                             input_width=args.crop_size)
            path, convert_s = result.model_path, time.perf_counter() - start
            start = time.perf_counter()
            runner = (onnx.ONNXRunner(path, num_threads=args.threads) if fmt == "onnx" else
                      litert.LiteRTRunner(path, num_threads=args.threads))
            load_s = time.perf_counter() - start
            latency, out = timed(lambda r=runner: r(clip), args.runs)
        rows.append((name, size_of(path), convert_s, load_s, latency,
                     float(np.abs(np.asarray(out) - reference).max())))
        print(f"  {name}: done ({convert_s:.0f} s to export)", flush=True)
    base = rows[0]
    print(f"\n| format | size (MiB) | x {base[0]} | load (s) | x | latency (ms) | x | "
          "max |p - Keras| | export (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, size, convert_s, load_s, latency, diff in rows:
        print(f"| {name} | {size / 2**20:.1f} | {size / base[1]:.2f} | {load_s:.2f} | "
              f"{load_s / base[3]:.2f} | {1000 * latency:.0f} | {latency / base[4]:.2f} | "
              f"{diff:.1e} | {convert_s:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
