"""Cost of precise BatchNorm statistics on the demo model (gin/demo.gin's LGD-3D).

    python benchmarks/precise_bn_cost.py [--batches=20]

Times `lgd_tf.training.precise_bn.recompute_batch_norm_statistics` over N batches of 16 random
16 x 56 x 56 clips twice: the first call includes tracing the forward pass, the second is the
forward passes alone (what `train` adds at the end of each stage, with the input pipeline).
"""

import argparse
import time

import numpy as np
import tensorflow as tf

from lgd_tf import models
from lgd_tf.training import precise_bn


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    model = models.lgd3d(num_classes=12, num_frames=16, stage_blocks=(1, 1, 1, 1),
                         base_filters=16, sketch_dim=1024, sketch_signed_sqrt_l2=True,
                         head="stage1")
    clips = np.random.default_rng(0).integers(0, 255, (16 * args.batches, 16, 56, 56, 3),
                                              dtype=np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices(clips).batch(16)
    for what in ("first call (with tracing)", "second call"):
        started = time.perf_counter()
        count = precise_bn.recompute_batch_norm_statistics(model, dataset, args.batches)
        print(f"{what}: {count} batches in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
