"""Where the train step of LGD spends its time against its baseline (use_lgd=False).

Traces a few train steps of each model with `tf.profiler.experimental` (host CPU events of
the TensorFlow executor), parses the trace's XSpace and prints the top ops by total time,
grouped by op type and by layer (the op name up to its last `/`), LGD and baseline side by
side, and the difference.

    python benchmarks/profile_lgd.py --only 3d --steps 2
"""

import argparse
import collections
import glob
import os
import re
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from model_throughput import step_functions  # noqa: E402  (same folder)
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

import lgd_tf  # noqa: E402

CONFIGS = {
    "3d": (lgd_tf.models.lgd3d, {}, (16, 112, 112, 3)),
    "2d": (lgd_tf.models.lgd2d, {"num_segments": 3}, (3, 224, 224, 3)),
}


def trace_events(fn, steps):
    """{op name: (op type, total seconds over `steps`)} of the executor's events."""
    logdir = tempfile.mkdtemp(prefix="lgd_profile_")
    tf.profiler.experimental.start(logdir, tf.profiler.experimental.ProfilerOptions(
        host_tracer_level=2, python_tracer_level=0, device_tracer_level=0))
    for _ in range(steps):
        fn()
    tf.profiler.experimental.stop()
    path = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.defaultdict(float)
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # TF ops are traced as "op_name:OpType".
                if ":" not in name or name.startswith(("tf_", "$", "__inference")):
                    continue
                if op_type(name) in ("Process", "Run") or "/" not in name:
                    continue
                totals[name] += event.duration_ps * 1e-12
    return {name: seconds / steps for name, seconds in totals.items()}


def group(events, key):
    out = collections.defaultdict(float)
    for name, seconds in events.items():
        out[key(name)] += seconds
    return out


def op_type(name):
    return name.rsplit(":", 1)[-1]


def clean(name):
    """The op name without model prefixes and Keras' `_1` uniquifying suffixes."""
    op = name.rsplit(":", 1)[0]
    grad = op.startswith("gradient_tape/")
    parts = [re.sub(r"_\d+$", "", p) for p in op.split("/")]
    parts = [p for p in parts if p not in ("gradient_tape", "lgd3d", "lgd2d", "backbone")]
    return ("grad " if grad else "fwd ") + "/".join(parts)


def part(name):
    """Where an op belongs: the LGD-only ops of a block (outside its unit), the unit, ..."""
    op = clean(name)
    direction, path = op.split(" ", 1)
    top = path.split("/")[0]
    if re.match(r"res\d_block\d+$", top):
        if "_unit" in path:
            return "unit " + direction
        return "LGD-only " + direction
    if re.match(r"res\d_block\d+_unit$", top):
        return "unit " + direction
    if re.match(r"res\d_block\d+_relu$", top):
        return "baseline relu " + direction
    return top + " " + direction


def print_table(title, lgd, base, top):
    print(f"\n{title}: seconds per train step (LGD, baseline, difference), top {top} by |diff|")
    keys = set(lgd) | set(base)
    rows = sorted(keys, key=lambda k: -abs(lgd.get(k, 0) - base.get(k, 0)))[:top]
    for k in rows:
        a, b = lgd.get(k, 0.0), base.get(k, 0.0)
        print(f"  {a:8.4f} {b:8.4f} {a - b:+8.4f}  {k}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=tuple(CONFIGS), default="3d")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--policy", default="float32")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    builder, kwargs, clip = CONFIGS[args.only]
    events = {}
    for use_lgd in (True, False):
        _, _, fn = step_functions(builder, kwargs, clip, use_lgd, args.batch, jit=False,
                                  policy=args.policy)
        fn()
        fn()
        events[use_lgd] = trace_events(fn, args.steps)
    total = {k: sum(v.values()) for k, v in events.items()}
    print(f"{args.only} {args.policy}: summed op time per step LGD {total[True]:.3f} s, "
          f"baseline {total[False]:.3f} s, ratio {total[True] / total[False]:.3f}")
    by_type = {k: group(v, op_type) for k, v in events.items()}
    print_table("by op type", by_type[True], by_type[False], args.top)
    top_lgd = sorted(by_type[True].items(), key=lambda kv: -kv[1])[:args.top]
    print("\nLGD top op types by time: " + ", ".join(f"{k} {v:.3f}" for k, v in top_lgd))
    by_part = {k: group(v, part) for k, v in events.items()}
    print_table("by part of the network", by_part[True], by_part[False], args.top)
    by_part_type = {k: group(v, lambda n: part(n) + " : " + op_type(n))
                    for k, v in events.items()}
    print_table("by part and op type", by_part_type[True], by_part_type[False], args.top)
    lgd_only = {k: v for k, v in events[True].items() if part(k).startswith("LGD-only")}
    print("\nLGD-only ops (outside the units), summed over blocks by op name:")
    names = group(lgd_only, lambda n: re.sub(r"^(fwd|grad) res\d_block\d+/", r"\1 ", clean(n))
                  + " : " + op_type(n))
    for k, v in sorted(names.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {v:8.4f}  {k}")


if __name__ == "__main__":
    main()
