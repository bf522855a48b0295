"""The LGD global path at initialisation and after 100 steps of the miniature task.

For each block variant, per seed, on 256 fresh relation-task clips (`paper_tables.Evaluator`'s
eval set) with precise BatchNorm statistics (`lgd_tf.training.precise_bn`, 8 batches of the
training distribution, so the maps are normalised as in training):

  dead_fraction   fraction of the units of g_l (all LGD blocks together) that are 0 for every
                  clip (a ReLU whose sign does not depend on the clip);
  dead_g_L        the same for g_L alone (the last block);
  spread_g_L      clip-to-clip spread of g_L: ||g_L - mean over clips||_F / ||g_L||_F over the
                  clips (0: every clip has the same g_L; 1: g_L has mean 0 over clips).

"After 100 steps" is after the first 100 training steps of `benchmarks/paper_tables.py`
(its pretext phase: pair label, same clips, schedule and shared initial weights per seed).

Rows: lgd (Eq. 2-3), v1 (Eq. 8: g_l = P(x_l), no ReLU of its own), v2 (Eq. 9) and
lgd_authors (biases in the projections, g_l from P(x_{l-1}), W^{x,g} = 0: the authors'
public PyTorch code). Usage: python benchmarks/global_path.py --json results.json
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paper_tables as pt  # noqa: E402

from lgd_tf.layers import LGDBlock  # noqa: E402
from lgd_tf.training import precise_bn  # noqa: E402

ROWS = ("lgd", "v1", "v2", "lgd_authors")


def global_features(backbone, clips):
    """[g_l of every LGD block] as NumPy arrays (inference mode)."""
    blocks = [layer for layer in backbone.layers if isinstance(layer, LGDBlock)]
    probe = keras.Model(backbone.inputs, [block.output[1] for block in blocks])
    outputs = []
    for start in range(0, len(clips), 64):
        batch = probe(clips[start:start + 64], training=False)
        outputs.append([np.asarray(g) for g in batch])
    return [np.concatenate(parts) for parts in zip(*outputs, strict=True)]


def measure(backbone, evaluator):
    precise_bn.recompute_batch_norm_statistics(backbone, evaluator.dataset,
                                               len(evaluator.bn_batches))
    gs = global_features(backbone, evaluator.clips)
    dead = [(g <= 0).all(axis=0) for g in gs]
    last = gs[-1]
    spread = np.linalg.norm(last - last.mean(axis=0)) / max(np.linalg.norm(last), 1e-30)
    return {"dead_fraction": float(np.concatenate(dead).mean()),
            "dead_g_L": float(dead[-1].mean()), "spread_g_L": float(spread),
            "dead_per_block": [float(d.mean()) for d in dead]}


def run(row, seed, args, reference, evaluator):
    backbone = pt.build_backbone(row, seed)
    pretext = pt.classifier(backbone, 4, "stage1", 1000 + seed)
    pt.copy_shared_weights(reference, pretext)
    init = measure(backbone, evaluator)
    pt.train_phase(pretext, pt._step_fn(pretext, args), pt.Stream(seed, 1, args.batch_size, True),
                   0, args.steps, args)
    return {"init": init, "after": measure(backbone, evaluator)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--json")
    cli = parser.parse_args(argv)
    args = pt.parse_args([])
    args.steps = cli.steps
    tf.config.experimental.enable_op_determinism()
    started = time.perf_counter()
    results = {row: [] for row in ROWS}
    for seed in range(cli.seeds):
        evaluator = pt.Evaluator(seed, args)
        reference = pt.shared_weights(pt.classifier(pt.build_backbone("baseline", seed), 4,
                                                    "stage1", 1000 + seed))
        for row in ROWS:
            results[row].append(run(row, seed, args, reference, evaluator))
            r = results[row][-1]
            print(f"seed {seed} {row:<12} " + "  ".join(
                f"{when}: dead {r[when]['dead_fraction']:.2f} (g_L {r[when]['dead_g_L']:.2f}) "
                f"spread {r[when]['spread_g_L']:.3f}" for when in ("init", "after")), flush=True)
    table = {row: {when: {key: [float(np.mean([r[when][key] for r in rs])),
                                float(np.min([r[when][key] for r in rs])),
                                float(np.max([r[when][key] for r in rs]))]
                          for key in ("dead_fraction", "dead_g_L", "spread_g_L")}
                   for when in ("init", "after")} for row, rs in results.items()}
    minutes = (time.perf_counter() - started) / 60.0
    print(f"total {minutes:.1f} min")
    if cli.json:
        with open(cli.json, "w") as f:
            json.dump({"summary_mean_min_max": table, "per_seed": results,
                       "settings": {"seeds": cli.seeds, "steps": cli.steps,
                                    "eval_clips": args.eval_size,
                                    "precise_bn_batches": args.precise_bn_batches,
                                    "batch_size": args.batch_size, "lr": args.lr,
                                    "model": pt.MODEL_KWARGS, "minutes": round(minutes, 1),
                                    "machine": f"{os.cpu_count()} CPU cores"}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
