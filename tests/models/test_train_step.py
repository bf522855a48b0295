"""One optimisation step of each stage (Eq. 6 and Eq. 7 losses) moves the right weights."""

import keras
import numpy as np
import tensorflow as tf

import lgd_tf

RNG = np.random.default_rng(7)
TINY = {"stage_blocks": (1, 1, 1, 1), "base_filters": 8, "num_frames": 4, "num_classes": 3}


def data():
    x = RNG.integers(0, 256, (4, 4, 32, 32, 3)).astype("uint8")
    return x, np.array([0, 1, 2, 1], "int32")


def snapshot(layer):
    return [w.numpy().copy() for w in layer.weights]


def test_stage1_fit_step_trains_zero_initialised_w_xg():
    model = lgd_tf.models.lgd3d(head="stage1", zero_init_global_residual=True, **TINY)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss={"global": loss, "local": loss})
    block = model.get_layer("backbone").get_layer("res5_block1")
    bn = model.get_layer("backbone").get_layer("conv1_spatial_bn")
    before_up, before_bn = block.global_to_local.up.numpy().copy(), snapshot(bn)
    x, y = data()
    history = model.fit(x, {"global": y, "local": y}, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.any(before_up) and np.any(block.global_to_local.up.numpy())
    assert not np.allclose(before_bn[2], bn.moving_mean.numpy())  # moving statistics moved


def test_stage2_gradients_reach_the_backbone_through_the_sketch():
    model = lgd_tf.models.lgd3d(head="stage2", sketch_dim=32, **TINY)
    x, y = data()
    with tf.GradientTape() as tape:
        logits = model(x, training=True)["combined"]
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    grads = dict(zip([v.path for v in model.trainable_variables],
                     tape.gradient(loss, model.trainable_variables), strict=True))
    conv = model.get_layer("backbone").get_layer("res5_block1").local_unit.conv_c
    assert np.abs(grads[conv.kernel.path].numpy()).max() > 0
    assert all(g is not None for g in grads.values())
    sketch = model.get_layer("local_global_sketch").sketch
    assert not any(w.trainable for w in (sketch.hash1, sketch.sign1, sketch.hash2, sketch.sign2))
