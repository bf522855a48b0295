"""Table 2 and Table 3 of the paper in miniature, on a generated relation task, over paired seeds.

The task (`benchmarks/relation_task.py`): two small objects in opposite corners of a 96x96 clip
of 4 frames, each moving left or right; the label is "same" or "opposite" direction (an XOR).
No unit of the small backbone's final map sees both corners (receptive field measured here by
gradients), so global average pooling + a linear classifier over local features (the
baseline's heads) cannot express the label; the LGD global path can.

Design (fixed before the final run; every row and seed the same schedule):
  * Pretext phase (`--pretext_steps`): the 4-class pair label (d_a, d_b), which is additive
    over the two objects, so every row, the baseline included, learns direction features.
    This removes the symmetric plateau at chance that made single runs a coin flip.
  * Relation phase (`--steps`): new stage-1 heads (Eq. 6) on the same backbone, the relation
    label. Fresh clips every step from a per-seed stream, identical across rows.
  * SGD momentum 0.9, clip-norm 5, linear warm-up over `--warmup` steps then a constant
    learning rate, in every phase; no weight decay (the paper states none).
  * Paired seeds: for seed s every row sees the same clips and starts from the same weights
    wherever the architectures agree (stem, residual units and heads copied from the
    baseline's initialisation); the LGD projections are drawn from the seed.
  * Deterministic: `tf.config.experimental.enable_op_determinism()` and seeded generators, so
    a row and seed rerun gives the same figures.
  * Evaluation on a per-seed eval set of fresh clips, video-level top-1, every `--eval_every`
    relation steps, with the moving BatchNorm statistics AND with precise statistics
    (`lgd_tf.training.precise_bn`, `--precise_bn_batches` training-distribution batches); the
    figures reported are the precise ones, so a late learner is not under-reported.

Rows (all `lgd3d(stage_blocks=(1, 1, 1, 1), base_filters=8, num_frames=4)`):
  baseline         use_lgd=False (P3D), stage-1 heads                       (Table 2)
  v1, v2           LGD block variants (Eq. 8, Eq. 9)                        (Table 2)
  lgd              LGD block (Eq. 2-3)                                      (Table 2)
  lgd_authors      the block as the authors' public PyTorch code builds it: biases in the
                   projections, g_l from P(x_{l-1}) broadcast as the new g_l, W^{x,g} = 0
  lgd_stage2       lgd's weights after half the relation steps, then the other half with the
                   combination classifier (Eq. 4-5, 7): the same total steps as lgd (Table 3)
  baseline_stage2  the same for the baseline (control: what the Tensor Sketch head alone does)

Per row: mean +- std of the final top-1, the area under the eval curve (mean top-1 over the
eval points) and the steps to 90% top-1 (the budget when never reached). Per ordering: the
paired per-seed difference of final top-1, mean with a 95% t interval, and the sign count;
"holds" only when the interval excludes 0 on the right side, else "not shown". The same for
the area under the curve (from half the relation steps on for the stage-2 orderings), which
still separates rows that all end at 100%.

Usage:
  python benchmarks/paper_tables.py --quick --json q.json  # 2 seeds, shorter phases
  python benchmarks/paper_tables.py --json results.json    # 5 seeds

Budget: one step of batch 24 takes about 0.06 s on 2 idle cores; a stage-1 row of a seed
(90 steps, 4 eval points, three traced functions) took 105 s on the shared machine at load
16, so full mode (5 seeds x (5 rows + 2 half-length stage-2 rows)) is designed for well under
30 minutes and --quick (2 seeds, the first two of a full run) for under 10 on 2 idle cores;
the time of a run is printed and written to the JSON.
"""

import argparse
import contextlib
import json
import os
import sys
import time
from concurrent import futures
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import relation_task  # noqa: E402  (benchmarks/relation_task.py, beside this script)
import tensorflow as tf  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from lgd_tf import models  # noqa: E402
from lgd_tf.layers import LGDBlock  # noqa: E402
from lgd_tf.models import backbone as backbone_module  # noqa: E402
from lgd_tf.models import classifier as classifier_module  # noqa: E402
from lgd_tf.training import loop, precise_bn  # noqa: E402

ROWS = ("baseline", "v1", "v2", "lgd", "lgd_authors", "lgd_stage2", "baseline_stage2")
STAGE1_ROWS = ROWS[:5]
MODEL_KWARGS = {"stage_blocks": (1, 1, 1, 1), "base_filters": 8,
                "num_frames": relation_task.NUM_FRAMES}
SKETCH = {"sketch_dim": 1024, "sketch_signed_sqrt_l2": True}
ARCHS = {"baseline": {"use_lgd": False}, "v1": {"variant": "v1"}, "v2": {"variant": "v2"},
         "lgd": {"variant": "lgd"},
         "lgd_authors": {"variant": "lgd", "zero_init_global_residual": True}}
# LGDBlock options of a row (passed to every block the backbone builds).
BLOCK_OPTIONS = {"lgd_authors": {"projection_bias": True, "pool_block_input": True}}
# Paper, Kinetics-600 top-1, ResNet-50 from scratch (Table 2 (b)) and Table 3 (R50 + ImageNet).
PAPER = {"baseline": 71.2, "v1": 72.7, "v2": 73.6, "lgd": 74.2, "lgd_stage2": 76.3}
# (name, a, b): "a > b" holds when the 95% interval of a - b is above 0.
ORDERINGS = (
    ("Table 2: v1 > baseline", "v1", "baseline"),
    ("Table 2: v2 > baseline", "v2", "baseline"),
    ("Table 2: lgd > baseline", "lgd", "baseline"),
    ("Table 2: lgd > v2", "lgd", "v2"),
    ("Table 2: v2 > v1", "v2", "v1"),
    ("authors' block > baseline", "lgd_authors", "baseline"),
    ("authors' block > lgd", "lgd_authors", "lgd"),
    ("Table 3: lgd_stage2 > lgd (same total steps)", "lgd_stage2", "lgd"),
    ("control: lgd_stage2 > baseline_stage2", "lgd_stage2", "baseline_stage2"),
)
GOAL = ("goal: lgd > baseline by more than 5 points", "lgd", "baseline", 5.0)


def receptive_field():
    """Spatial extent (pixels) of the input that one central unit of x_L depends on."""
    size = relation_task.FRAME_SIZE + 64
    backbone = models.lgd3d(num_classes=2, head=None, use_lgd=False, **MODEL_KWARGS)
    clip = tf.Variable(tf.random.uniform((1, relation_task.NUM_FRAMES, size, size, 3), 0, 255))
    with tf.GradientTape() as tape:
        local = backbone(clip, training=False)["local"]
        centre = local.shape[2] // 2
        target = tf.reduce_sum(local[0, :, centre, centre, :])
    grad = tf.reduce_sum(tf.abs(tape.gradient(target, clip)), axis=(0, 1, 4)).numpy()
    rows = np.flatnonzero(grad.sum(axis=1) > 0)
    cols = np.flatnonzero(grad.sum(axis=0) > 0)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def build_backbone(row, seed):
    """The row's backbone, initialised from `seed` (LGD blocks with the row's options)."""
    keras.utils.set_random_seed(seed)
    options = BLOCK_OPTIONS.get(row)
    patch = (mock.patch.object(backbone_module, "LGDBlock",
                               lambda *a, **k: LGDBlock(*a, **k, **options))
             if options else contextlib.nullcontext())
    with patch:
        return models.lgd3d(num_classes=2, head=None, name="backbone", **MODEL_KWARGS,
                            **ARCHS[row])


def _shared_layers(model):
    """Layers whose weights every row has: the stem, the residual units, the heads."""
    return {layer.name: layer for layer in model._flatten_layers(recursive=True)
            if layer.weights and (layer.name.endswith("_unit") or layer.name.startswith("conv1")
                                  or layer.name.endswith("_logits"))}


def shared_weights(model):
    return {name: layer.get_weights() for name, layer in _shared_layers(model).items()}


def copy_shared_weights(weights, target):
    """Sets same-named shared layers of matching shapes from `weights`; returns how many."""
    copied = 0
    for name, layer in _shared_layers(target).items():
        source = weights.get(name)
        if source is not None and [w.shape for w in source] == [
                w.shape for w in layer.get_weights()]:
            layer.set_weights(source)
            copied += 1
    return copied


def classifier(backbone, num_classes, head, seed):
    """New heads on `backbone`, drawn from `seed` (the same for every row)."""
    keras.utils.set_random_seed(seed)
    return classifier_module.LGDClassifier(backbone, num_classes, head=head, **SKETCH)


class Stream:
    """The per-seed clip stream: batch k of a phase is the same for every row; the next
    batch is generated in a background thread while the current one trains."""

    def __init__(self, seed, phase, batch_size, pretext):
        self.seed, self.phase, self.batch_size, self.pretext = seed, phase, batch_size, pretext
        self.pool = futures.ThreadPoolExecutor(1)

    def _make(self, step):
        rng = np.random.default_rng([self.seed, self.phase, step])
        return relation_task.sample_batch(rng, self.batch_size, pretext=self.pretext)

    def batches(self, start, stop):
        pending = self.pool.submit(self._make, start)
        for step in range(start, stop):
            batch = pending.result()
            if step + 1 < stop:
                pending = self.pool.submit(self._make, step + 1)
            yield batch


def _optimizer(lr, warmup):
    class Warmup(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return lr * keras.ops.minimum(1.0, (keras.ops.cast(step, "float32") + 1.0) / warmup)

    return keras.optimizers.SGD(learning_rate=Warmup(), momentum=0.9, global_clipnorm=5.0)


def make_train_step(model, optimizer, batch_size):
    @tf.function
    def step(clips, labels):
        grads, _, head_losses, _ = loop.loss_and_gradients(model, optimizer, clips, labels,
                                                           batch_size, 0.0)
        optimizer.apply(grads, model.trainable_variables)
        return tf.add_n([tf.reduce_mean(v) for v in head_losses.values()])
    return step


class Evaluator:
    """Video-level top-1 on the seed's eval set, with moving and with precise BN statistics."""

    def __init__(self, seed, args):
        eval_rng = np.random.default_rng([seed, 90])
        self.clips, self.labels = relation_task.sample_batch(eval_rng, args.eval_size)
        bn_rng = np.random.default_rng([seed, 91])
        self.bn_batches = [relation_task.sample_batch(bn_rng, args.batch_size)
                           for _ in range(args.precise_bn_batches)]
        self.dataset = tf.data.Dataset.from_tensor_slices(
            tuple(np.concatenate(parts) for parts in zip(*self.bn_batches, strict=True))
        ).batch(args.batch_size)
        self.forwards = {}

    def _top1(self, model):
        if self.forwards.get("model") is not model:
            self.forwards = {"model": model, "fn": tf.function(
                lambda x: classifier_module.class_probabilities(model(x, training=False)))}
        forward = self.forwards["fn"]
        hits = 0
        for start in range(0, len(self.labels), 128):
            probs = forward(self.clips[start:start + 128]).numpy()
            hits += int((probs.argmax(-1) == self.labels[start:start + 128]).sum())
        return 100.0 * hits / len(self.labels)

    def __call__(self, model):
        """(top-1 moving statistics, top-1 precise statistics); the model's moving
        statistics are restored afterwards so that training goes on unchanged."""
        moving = self._top1(model)
        layers = precise_bn.batch_norm_layers(model)
        saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
        precise_bn.recompute_batch_norm_statistics(model, self.dataset, len(self.bn_batches))
        precise = self._top1(model)
        for layer, (mean, variance) in zip(layers, saved, strict=True):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        return moving, precise


def train_phase(model, step_fn, stream, start, stop, args, curve=None, evaluator=None,
                offset=0):
    """Trains `model` on the stream's batches [start, stop); appends eval points to curve."""
    losses = []
    for step, (clips, labels) in enumerate(stream.batches(start, stop), start=start):
        losses.append(float(step_fn(clips, labels)))
        done = step + 1
        if curve is not None and (done % args.eval_every == 0 or done == stop):
            moving, precise = evaluator(model)
            curve.append({"step": offset + done, "top1": precise, "top1_moving_bn": moving,
                          "train_loss": float(np.mean(losses[-args.eval_every:]))})
    return losses


def run_row(row, seed, args, reference, evaluator, snapshots):
    """One stage-1 row for one seed: pretext then relation; returns its curve."""
    backbone = build_backbone(row, seed)
    pretext = classifier(backbone, 4, "stage1", 1000 + seed)
    if not reference:
        reference.update(shared_weights(pretext))
    else:
        copy_shared_weights(reference, pretext)
    train_phase(pretext, _step_fn(pretext, args), Stream(seed, 1, args.batch_size, True), 0,
                args.pretext_steps, args)
    relation = classifier(backbone, 2, "stage1", 2000 + seed)
    step_fn = _step_fn(relation, args)
    half = args.steps // 2
    curve = []
    moving, precise = evaluator(relation)
    curve.append({"step": 0, "top1": precise, "top1_moving_bn": moving, "train_loss": None})
    stream = Stream(seed, 2, args.batch_size, False)
    train_phase(relation, step_fn, stream, 0, half, args, curve, evaluator)
    snapshots[row] = backbone.get_weights()
    train_phase(relation, step_fn, stream, half, args.steps, args, curve, evaluator)
    return curve


def _step_fn(model, args):
    return make_train_step(model, _optimizer(args.lr, args.warmup), args.batch_size)


def run_stage2(row, seed, args, weights, evaluator):
    """Stage 2 from stage 1's weights after half the relation steps, for the other half."""
    backbone = build_backbone(row, seed)
    backbone.set_weights(weights)
    model = classifier(backbone, 2, "stage2", 3000 + seed)
    half = args.steps // 2
    moving, precise = evaluator(model)
    curve = [{"step": half, "top1": precise, "top1_moving_bn": moving, "train_loss": None}]
    train_phase(model, _step_fn(model, args), Stream(seed, 2, args.batch_size, False), half,
                args.steps, args, curve, evaluator)
    return curve


def _area(steps, top1):
    """Area under the eval curve divided by its length: the mean top-1 over the steps."""
    if len(steps) < 2:
        return float(top1[-1]) if len(steps) else float("nan")
    return float(np.trapezoid(top1, steps) / (steps[-1] - steps[0]))


def summarise_curve(curve, budget, threshold=90.0):
    """Final top-1, area (whole curve, and from half the relation steps on: the stage-2
    rows' span), steps to `threshold` (the budget when never reached)."""
    steps = np.array([p["step"] for p in curve], np.float64)
    top1 = np.array([p["top1"] for p in curve], np.float64)
    reached = [int(s) for s, t in zip(steps, top1, strict=True) if t >= threshold]
    late = steps >= budget // 2
    return {"final": float(top1[-1]), "final_moving_bn": float(curve[-1]["top1_moving_bn"]),
            "area": _area(steps, top1), "area_second_half": _area(steps[late], top1[late]),
            "steps_to_90": reached[0] if reached else budget}


def paired_interval(a, b, margin=0.0):
    """Mean of a - b - margin with its 95% t interval, and the sign count."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(diff)
    mean = float(diff.mean())
    half = (float(scipy_stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n))
            if n > 1 else float("inf"))
    verdict = "holds" if mean - half > margin else "not shown"
    return {"mean_difference": mean, "ci95": [mean - half, mean + half],
            "positive": int((diff > 0).sum()), "negative": int((diff < 0).sum()),
            "ties": int((diff == 0).sum()), "seeds": n, "verdict": verdict}


def orderings(summaries):
    """Per ordering: paired intervals of the final top-1 and of the area under the curve
    (the area from half the relation steps on when a stage-2 row is involved)."""
    def values(row, key):
        return [s[key] for s in summaries[row]]

    out = {}
    for text, a, b in ORDERINGS + (GOAL[:3],):
        if a not in summaries or b not in summaries:
            continue
        margin = GOAL[3] if text == GOAL[0] else 0.0
        area = "area_second_half" if "stage2" in a + b else "area"
        out[text] = {"a": a, "b": b, "margin": margin,
                     "final_top1": paired_interval(values(a, "final"), values(b, "final"),
                                                   margin),
                     area: paired_interval(values(a, area), values(b, area), margin)}
    return out


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 seeds (the first 2 of a full run: the same figures)")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--seeds", type=int, help="default 5 (2 with --quick)")
    parser.add_argument("--pretext_steps", type=int, default=30)
    parser.add_argument("--steps", type=int, default=60, help="relation steps")
    parser.add_argument("--eval_every", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=24)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--eval_size", type=int, default=192)
    parser.add_argument("--precise_bn_batches", type=int, default=4)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = 2 if args.quick else 5
    args.rows = [r for r in ROWS if r in args.rows.split(",")]
    return args


def run_seed(seed, args, curves):
    evaluator = Evaluator(seed, args)
    reference, snapshots = {}, {}
    for row in [r for r in STAGE1_ROWS if r in args.rows or f"{r}_stage2" in args.rows]:
        started = time.perf_counter()
        curve = run_row(row, seed, args, reference, evaluator, snapshots)
        curves[row].append(curve)
        print(f"  seed {seed} {row:<16} top-1 {curve[-1]['top1']:5.1f}% (moving BN "
              f"{curve[-1]['top1_moving_bn']:5.1f}%)  {time.perf_counter() - started:.0f} s",
              flush=True)
    for row in ("lgd", "baseline"):
        name = f"{row}_stage2"
        if name in args.rows:
            started = time.perf_counter()
            curves[name].append(run_stage2(row, seed, args, snapshots[row], evaluator))
            print(f"  seed {seed} {name:<16} top-1 {curves[name][-1][-1]['top1']:5.1f}% "
                  f"{time.perf_counter() - started:.0f} s", flush=True)


def main(argv=None):
    args = parse_args(argv)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    rf = receptive_field()
    gap = relation_task.FRAME_SIZE - 2 * relation_task.REGION + 2
    print(f"receptive field of one x_L unit: {rf[0]}x{rf[1]} px; seeing both corners needs "
          f">= {gap} px: {'no unit sees both' if max(rf) < gap else 'SOME UNIT SEES BOTH'}")
    print(f"{args.seeds} seeds; per row {args.pretext_steps} pretext + {args.steps} relation "
          f"steps, batch {args.batch_size}, lr {args.lr} (warm-up {args.warmup}), eval every "
          f"{args.eval_every} on {args.eval_size} clips", flush=True)
    curves = {row: [] for row in args.rows}
    if "baseline" not in args.rows:
        curves["baseline"] = []
    for seed in range(args.seeds):
        run_seed(seed, args, curves)
    summaries = {row: [summarise_curve(c, args.steps) for c in cs]
                 for row, cs in curves.items() if cs}
    per_seed = {row: [s["final"] for s in ss] for row, ss in summaries.items()}
    rows = []
    for row, ss in summaries.items():
        final = np.array([s["final"] for s in ss])
        rows.append({"model": row, "seeds": len(ss), "top1_mean": float(final.mean()),
                     "top1_std": float(final.std(ddof=1)) if len(ss) > 1 else 0.0,
                     "top1_moving_bn_mean": float(np.mean([s["final_moving_bn"] for s in ss])),
                     "area_mean": float(np.mean([s["area"] for s in ss])),
                     "steps_to_90_mean": float(np.mean([s["steps_to_90"] for s in ss])),
                     "paper_k600": PAPER.get(row)})
    order = orderings(summaries)
    minutes = (time.perf_counter() - started) / 60.0
    print(f"\n{'row':<16} {'top-1 (precise BN)':>19} {'moving BN':>9} {'area':>6} "
          f"{'to 90%':>7}  per seed")
    for r in rows:
        print(f"{r['model']:<16} {r['top1_mean']:7.1f} +- {r['top1_std']:5.1f}    "
              f"{r['top1_moving_bn_mean']:9.1f} {r['area_mean']:6.1f} "
              f"{r['steps_to_90_mean']:7.0f}  "
              + " ".join(f"{v:.1f}" for v in per_seed[r['model']]))
    print()
    for text, o in order.items():
        for metric in [k for k in o if k.startswith(("final", "area"))]:
            f = o[metric]
            print(f"{f['verdict']:>9}: {text} [{metric}]: {f['mean_difference']:+.1f} points, "
                  f"95% [{f['ci95'][0]:+.1f}, {f['ci95'][1]:+.1f}], {f['positive']}+ / "
                  f"{f['negative']}- / {f['ties']}=")
    print(f"total time {minutes:.1f} min", flush=True)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        settings.update({"receptive_field_px": list(rf), "min_extent_to_see_both_px": gap,
                         "minutes": round(minutes, 1), "model": MODEL_KWARGS, **SKETCH,
                         "machine": f"{os.cpu_count()} CPU cores"})
        out = {"rows": rows, "per_seed": per_seed, "orderings": order,
               "per_seed_summary": summaries, "curves": curves, "settings": settings}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=list)
    return 0


if __name__ == "__main__":
    sys.exit(main())
