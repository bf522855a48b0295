"""Time of the LGD block's diffusion path (Eq. 2 and the pooling of Eq. 3) per train step.

For the local-map shapes of every block of LGD-3D R50 (16x112x112) or LGD-2D R50 (3x224x224)
at batch 2, times forward + backward of: the baseline's ReLU(F); the plain LGD ops
(ReLU(F + US(r)), `reduce_mean`, autodiff); the library's `diffuse` (hand-written gradient,
pooling as a matrix product). Implementations alternate within each round; medians of the
rounds, wall and process CPU time.

    python benchmarks/diffusion_path.py --only 3d --rounds 7
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lgd_tf.layers import lgd_block  # noqa: E402
from lgd_tf.layers.lgd_block import diffuse  # noqa: E402

BLOCKS = {  # (T, H, W, C) of x_l, number of blocks
    "3d": [((8, 56, 56, 256), 3), ((4, 28, 28, 512), 4), ((4, 14, 14, 1024), 6),
           ((4, 7, 7, 2048), 3)],
    "2d": [((3, 56, 56, 256), 3), ((3, 28, 28, 512), 4), ((3, 14, 14, 1024), 6),
           ((3, 7, 7, 2048), 3)],
}


def baseline(f, r):
    return tf.nn.relu(f), tf.zeros_like(r)


def plain(f, r):
    x = tf.nn.relu(f + r[:, None, None, None, :])
    return x, tf.reduce_mean(x, axis=(1, 2, 3))


def reduce_sum_positions(x):
    return tf.reduce_sum(x, axis=1)


def make_step(path, inputs, sum_positions=None):
    @tf.function
    def step():
        if sum_positions is not None:  # trace `diffuse` with another sum over positions
            saved, lgd_block._sum_positions = lgd_block._sum_positions, sum_positions
        try:
            return body()
        finally:
            if sum_positions is not None:
                lgd_block._sum_positions = saved

    def body():
        total = 0.0
        for f, r, dx, dp in inputs:
            with tf.GradientTape() as tape:
                tape.watch([f, r])
                x, p = path(f, r)
                objective = tf.reduce_sum(x * dx) + tf.reduce_sum(p * dp)
            df, dr = tape.gradient(objective, [f, r])
            # Use every gradient so nothing is pruned; reading one element keeps it cheap.
            total += df[0, 0, 0, 0, 0] + (dr[0, 0] if dr is not None else 0.0)
        return total
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=tuple(BLOCKS), default="3d")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    inputs = []
    for shape, count in BLOCKS[args.only]:
        for _ in range(count):
            full = (args.batch, *shape)
            inputs.append(tuple(tf.constant(rng.normal(size=s).astype("float32"))
                                for s in (full, (args.batch, shape[-1]), full,
                                          (args.batch, shape[-1]))))
    steps = {"baseline ReLU": make_step(baseline, inputs),
             "plain LGD ops": make_step(plain, inputs),
             "diffuse": make_step(diffuse, inputs),
             "diffuse, reduce_sum": make_step(diffuse, inputs, reduce_sum_positions)}
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for i in range(args.rounds):
        for name in (list(steps) if i % 2 == 0 else list(steps)[::-1]):
            wall, cpu = time.perf_counter(), time.process_time()
            steps[name]().numpy()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    print(f"{args.only}, batch {args.batch}, forward + backward of the 16 blocks' diffusion path, "
          f"median of {args.rounds} rounds (includes the objective's own passes):")
    base = np.median(times["baseline ReLU"], axis=0)
    for name, t in times.items():
        wall, cpu = np.median(t, axis=0)
        print(f"  {name:19} wall {wall * 1e3:7.1f} ms, CPU {cpu * 1e3:7.1f} ms | "
              f"over the baseline: wall {(wall - base[0]) * 1e3:+7.1f} ms, "
              f"CPU {(cpu - base[1]) * 1e3:+7.1f} ms")


if __name__ == "__main__":
    main()
