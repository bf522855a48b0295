"""The four CPU performance targets of the README, measured together in one run.

One process times, one after the other (TF Model Garden in a subprocess of the same run):

1. LGD-3D R50 (16x112x112) and LGD-2D R50 (3x224x224): `model_throughput.measure` with the
   baseline (use_lgd=False) and LGD under mixed_bfloat16 in the same rounds (batch 2, fp32
   without XLA), which gives LGD / baseline train-step time and bf16 / fp32 clips/s as medians
   of alternating pairs (mixed_bfloat16 only where /proc/cpuinfo lists bfloat16 instructions,
   unless `--bf16=on`: without them TensorFlow emulates bfloat16, 9x slower than float32);
2. TF Model Garden's ResNet3D-50 at the LGD-3D input (with `--model_garden_python`), ours /
   theirs on the fraction of the matmul rate;
3. `evaluate_throughput`: `evaluate_video_level` at Sec. 5.2's settings (15 clips of 16
   frames, shorter side 120) against the forward at the same view shape;

then prints every target with its figure and whether this run met it. Wall-clock figures
are the targets; CPU-time figures are printed beside them (they do not count the time other
processes hold the cores). A median of alternating pairs also gets the 90% bootstrap interval
of that median over the pairs; where the interval reaches both sides of the target, the
verdict says "within noise".

    python benchmarks/performance_targets.py --model_garden_python=VENV/bin/python

About 14-17 minutes with the default 15 rounds on 2 idle cores of an AMD EPYC (Zen 3, where
mixed_bfloat16 is not timed); 25 rounds narrow the intervals of the pair medians.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import evaluate_throughput  # noqa: E402  (same folder)
import keras  # noqa: E402
import model_throughput as mt  # noqa: E402  (same folder)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lgd_tf.training import precision  # noqa: E402

LGD_COST = 1.03  # LGD / baseline train-step time, at most
BF16_GAIN = 1.6  # mixed_bfloat16 / float32 clips/s, at least
EVALUATE_SHARE = 0.9  # evaluate views/s / forward clips/s, at least
MODEL_GARDEN = 1.0  # ours / Model Garden's fraction of the matmul rate, at least


def median_interval(ratios, level=0.9, resamples=4000, seed=0):
    """Bootstrap `level` interval of the median of `ratios` (one per alternating pair)."""
    ratios = np.asarray(ratios, float)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(ratios, (resamples, ratios.size)), axis=1)
    tail = (1 - level) / 2
    return tuple(float(q) for q in np.quantile(medians, (tail, 1 - tail)))


def pair_figure(samples, a, b):
    """(wall median, CPU median, 90% interval of the wall median) of samples[a] / samples[b]
    over the rounds."""
    wall = [x[0] / y[0] for x, y in zip(samples[a], samples[b], strict=True)]
    return (mt.median_ratio(samples, a, b, 0), mt.median_ratio(samples, a, b, 1),
            median_interval(wall))


def time_models(rounds, batch, matmul, base_filters, bf16):
    """Per model title: {"lgd_cost" [| "bf16_train" | "bf16_forward"]: `pair_figure`s} and
    LGD-3D's fractions of the matmul rate (for Model Garden)."""
    figures, ours = {}, None
    for title, (builder, kwargs, clip_shape) in mt.CONFIGS.items():
        kwargs = dict(kwargs, base_filters=base_filters)
        models, best, samples = mt.measure(builder, kwargs, clip_shape, batch, rounds,
                                           jit=False, matmul=matmul, bf16=bf16)
        fractions = mt.report(title, clip_shape, batch, models, best, False, samples)
        if title == mt.LGD3D:
            ours = {False: fractions[True]}
        figures[title] = {"lgd_cost": pair_figure(samples, (True, "train"), (False, "train"))}
        for kind in ("train", "forward") if bf16 else ():
            figures[title][f"bf16_{kind}"] = pair_figure(samples, (True, kind),
                                                         (mt.BF16, True, kind))
        del models
        keras.backend.clear_session()
    return figures, ours


def time_evaluation(rounds, base_filters):
    """evaluate views/s / forward clips/s at Sec. 5.2's settings: (wall, per CPU-second)."""
    args = argparse.Namespace(frames=16, clips=15, short_side=120, videos=4, batch_size=2,
                              num_classes=400, base_filters=base_filters, rounds=rounds)
    best = evaluate_throughput.throughput(args)
    return tuple(best["evaluate"][c] / best["forward"][c] for c in (0, 1))


def verdict(value, interval, meets):
    """"yes" / "NO", and "within noise" where the 90% interval holds both verdicts."""
    met = "yes" if meets(value) else "NO"
    if interval is not None and meets(interval[0]) != meets(interval[1]):
        return f"{met}, within noise"
    return met


def verdict_rows(models, evaluation, garden):
    """(target, wall figure, CPU figure, 90% interval or None, met) of every target this run
    measured."""
    rows = []
    for title, fig in models.items():
        name = title.split(" ")[0]
        wall, cpu, interval = fig["lgd_cost"]
        rows.append((f"{name} LGD / baseline train time <= {LGD_COST}", wall, cpu, interval,
                     verdict(wall, interval, lambda v: v <= LGD_COST)))
        for kind in ("train", "forward") if "bf16_train" in fig else ():
            wall, cpu, interval = fig[f"bf16_{kind}"]
            rows.append((f"{name} bf16 / fp32 {kind} clips/s >= {BF16_GAIN}", wall, cpu,
                         interval, verdict(wall, interval, lambda v: v >= BF16_GAIN)))
    rows.append((f"evaluate / forward (R50, 15 x 16x120x160) >= {EVALUATE_SHARE}",
                 *evaluation, None, verdict(evaluation[0], None,
                                            lambda v: v >= EVALUATE_SHARE)))
    if garden:
        for index, kind in ((1, "train"), (0, "forward")):
            wall, cpu = garden["wall"][index], garden["CPU"][index]
            rows.append((f"ours / Model Garden, {kind} fraction of matmul >= {MODEL_GARDEN}",
                         wall, cpu, None, verdict(wall, None, lambda v: v >= MODEL_GARDEN)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15,
                        help="alternating pairs per model (default 15)")
    parser.add_argument("--eval_rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--base_filters", type=int, default=64,
                        help="width of every R50 (64: the real one; a few: a quick check of "
                        "this script, its figures mean nothing)")
    parser.add_argument("--model_garden_python", default=os.environ.get("MODEL_GARDEN_PYTHON"),
                        help="python of the venv of benchmarks/setup_model_garden.sh "
                        "(default: $MODEL_GARDEN_PYTHON); without it that target is not run")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="time mixed_bfloat16 (auto: only where the CPU has bfloat16 "
                        "instructions; elsewhere it is emulated, about 9x slower than float32, "
                        "and its target cannot be met)")
    args = parser.parse_args()
    flags = precision.cpu_flags()
    bf16 = {"on": True, "off": False}.get(args.bf16,
                                          precision.cpu_computes_bfloat16(flags) is not False)
    started = time.perf_counter()
    print(f"TensorFlow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPU "
          f"cores, batch {args.batch}, {args.rounds} rounds; stage-2 head, 400 classes; load "
          f"average {os.getloadavg()[0]:.1f}", flush=True)
    has_bf16 = {True: "yes", False: "none", None: "unknown"}[
        precision.cpu_computes_bfloat16(flags)]
    print(f"CPU: {precision.cpu_model_name()}; bfloat16 instructions "
          f"({' / '.join(precision.BF16_CPU_FLAGS)}): {has_bf16}; mixed_bfloat16 "
          f"{'timed' if bf16 else 'not timed'}", flush=True)
    models, ours = time_models(args.rounds, args.batch, mt.matmul_fn(), args.base_filters,
                               bf16)
    garden = {}
    if args.model_garden_python:
        garden = mt.report_model_garden(
            mt.run_model_garden(args.model_garden_python, args.batch, args.rounds, (False,)),
            ours, args.batch).get(False, {})
    print(flush=True)
    evaluation = time_evaluation(args.eval_rounds, args.base_filters)
    rows = verdict_rows(models, evaluation, garden)
    width = max(len(r[0]) for r in rows)
    print(f"\nTargets, this run ({(time.perf_counter() - started) / 60:.1f} min; load average "
          f"{os.getloadavg()[0]:.1f}):")
    print(f"  {'target':<{width}}  {'wall':>6}  {'CPU':>6}  {'wall 90% interval':>17}  met")
    for target, wall, cpu, interval, met in rows:
        span = f"{interval[0]:.3f} - {interval[1]:.3f}" if interval else "-"
        print(f"  {target:<{width}}  {wall:6.3f}  {cpu:6.3f}  {span:>17}  {met}")
    if not args.model_garden_python:
        print("  ours / Model Garden: not run (no --model_garden_python)")
    if not bf16:
        why = "this CPU has no bfloat16 instructions" if args.bf16 == "auto" else "--bf16=off"
        print(f"  bf16 / fp32 >= {BF16_GAIN}: not run ({why})")
    met = sum(r[4].startswith("yes") for r in rows)
    print(f"{met} of {len(rows)} targets met in this run; {sum('noise' in r[4] for r in rows)} "
          "verdicts within noise (the 90% bootstrap interval of the pairs' median holds both)")


if __name__ == "__main__":
    main()
