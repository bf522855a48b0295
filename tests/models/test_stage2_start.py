"""Stage 2 (Eq. 7) starts sanely: the Eq. 5 features signed-square-rooted and L2-normalised.

Why: phi = [mean_i TS(x_L^i), TS(g_L)] is quadratic in the features (|TS(x)| ~ |x|^2, Eq. 4
is the bilinear kernel), so with Glorot logits its scale grows with the width C of x_L. On one
batch of the tiny demo data at init (8 x 28 x 28 clips, one unit per stage) the bare features
give combined logits up to 2.5 at base_filters 4 (C = 128), 13 at 16 and 45 at the paper's
base_filters 64 (C = 2048), a first cross-entropy of 2.4, 4.5 and 16.8 (ln 12 = 2.48), and at
the paper LR 0.01 the width-64 run reaches NaN within 5 steps. Normalised (the Tensor Sketch
reference, Gao et al. 2016, after Lin et al. 2015) the features have norm 1, the logits are
below 0.04 at every width and the first cross-entropy is ln K; it falls at LR 0.01, slowly
(0.02 in 8 steps here: unit-norm features make small classifier gradients).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import lgd_tf
from lgd_tf import data

NUM_CLASSES = 12  # the demo set's classes
TINY = {"num_classes": NUM_CLASSES, "head": "stage2", "num_frames": 8,
        "stage_blocks": (1, 1, 1, 1)}  # sketch_dim: the paper configs' 8192 (builder default)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """12 training clips (8 x 28 x 28), one per class, from a tiny demo data set."""
    demo = data.build_demo_dataset(tmp_path_factory.mktemp("demo"), train_per_class=1,
                                   eval_per_class=1, num_shards=2)
    dataset = data.train_dataset(demo.train_pattern, 12, model="3d", num_frames=8,
                                 resize=(32, 32), crop_size=28, flip=False,
                                 num_classes=NUM_CLASSES, seed=0, deterministic=True)
    clips, labels = next(iter(dataset))
    return clips, tf.cast(labels, tf.int32)


def cross_entropy(model, clips, labels):
    logits = model(clips, training=True)["combined"]
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    return loss, float(tf.reduce_max(tf.abs(logits)))


def test_normalised_stage2_starts_below_2_ln_k_and_learns_at_the_paper_lr(batch):
    clips, labels = batch
    keras.utils.set_random_seed(0)
    model = lgd_tf.models.lgd3d(base_filters=4, **TINY)
    assert model.sketch_signed_sqrt_l2 and model.sketch_dim == 8192
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)  # Sec. 5.2's LR
    losses = []
    for _ in range(8):
        with tf.GradientTape() as tape:
            loss, _ = cross_entropy(model, clips, labels)
        optimizer.apply(tape.gradient(loss, model.trainable_variables),
                        model.trainable_variables)
        losses.append(float(loss))
    assert losses[0] < 2 * math.log(NUM_CLASSES)
    assert abs(losses[0] - math.log(NUM_CLASSES)) < 0.05
    assert all(b < a for a, b in zip(losses[:-1], losses[1:], strict=True)), losses
    assert losses[-1] < losses[0] - 0.01, losses


def test_bare_eq5_features_grow_with_the_width(batch):
    clips, labels = batch
    results = {}
    for base_filters in (4, 64):
        for normalised in (True, False):
            keras.utils.set_random_seed(0)
            model = lgd_tf.models.lgd3d(base_filters=base_filters,
                                        sketch_signed_sqrt_l2=normalised, **TINY)
            loss, peak = cross_entropy(model, clips, labels)
            results[base_filters, normalised] = float(loss), peak
    bound = 2 * math.log(NUM_CLASSES)
    for base_filters in (4, 64):
        loss, peak = results[base_filters, True]
        assert loss < bound and peak < 0.1, (base_filters, loss, peak)
    loss, peak = results[64, False]  # the paper's width: measured 16.8, logits up to 45
    assert loss > 2 * bound and peak > 20, (loss, peak)
    assert peak > 5 * results[4, False][1], results  # quadratic features: scale ~ C
    assert np.isfinite([v for pair in results.values() for v in pair]).all()
