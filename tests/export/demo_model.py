"""The small Grad-CAM demo model: a stage-1 LGD-3D trained on the demo videos of moving digits
(the model `test_explain.py` explains and `docs/make_figures.py` plots)."""

import keras
import numpy as np

import lgd_tf
from lgd_tf.data import demo

NUM_FRAMES = 8  # the model's clip length; the demo videos have 16 frames of 64 x 64


def recalibrate_batch_norm(model, clips):
    """Sets every BatchNormalization's moving statistics to those of `clips` (one batch with
    momentum 0), so inference after a few dozen training steps uses the right statistics."""
    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(clips.astype("float32"), training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum


def train_demo_model(steps, base_filters, batch_size=16, learning_rate=3e-3, seed=0):
    """A stage-1 LGD-3D (one unit per stage, `base_filters`, 8 frames of 64 x 64) trained with
    Adam for `steps` steps on 8-frame clips of 192 demo videos, then BN statistics
    recalibrated on one batch."""
    keras.utils.set_random_seed(seed)
    videos = demo.labelled_videos("train", 16, seed=1)
    frames = np.stack([v[0] for v in videos])
    labels = np.array([v[1] for v in videos], np.int32)
    model = lgd_tf.models.lgd3d(num_classes=len(demo.CLASS_NAMES), head="stage1",
                                num_frames=NUM_FRAMES, stage_blocks=(1, 1, 1, 1),
                                base_filters=base_filters, sketch_dim=64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss={"local": loss, "global": loss})
    rng = np.random.default_rng(seed)

    def batches():
        while True:
            index = rng.integers(0, len(frames), batch_size)
            starts = rng.integers(0, demo.NUM_FRAMES - NUM_FRAMES + 1, batch_size)
            clips = frames[index[:, None], starts[:, None] + np.arange(NUM_FRAMES)]
            yield clips.astype("float32"), {"local": labels[index], "global": labels[index]}

    model.fit(batches(), steps_per_epoch=steps, epochs=1, verbose=0)
    recalibrate_batch_norm(model, next(batches())[0])
    return model
