"""Training outside TensorFlow: a tiny LGD-3D fits with `model.fit` under JAX, fed by the
library's tf.data demo pipeline (Keras 3 takes a tf.data dataset under any backend)."""

import json
import textwrap

import pytest

from tests.test_case import run_under_backend

pytestmark = pytest.mark.subprocess

FIT = textwrap.dedent("""
    import json, sys
    import keras
    from lgd_tf import data
    from lgd_tf.models import lgd3d

    demo = data.build_demo_dataset("demo", train_per_class=1, eval_per_class=1, num_shards=1)
    kwargs = dict(demo.train_kwargs, num_frames=4, resize=(36, 36), crop_size=32)
    clips = data.train_dataset(demo.train_pattern, 6, num_classes=demo.num_classes, seed=0,
                               deterministic=True, shuffle_buffer=12, **kwargs)
    # One batch of the pipeline, repeated: its loss must fall.
    batches = clips.take(1).cache().repeat().map(
        lambda x, y: (x, {"global": y, "local": y}))
    keras.utils.set_random_seed(0)
    model = lgd3d(50, demo.num_classes, head="stage1", num_frames=4,
                  stage_blocks=(1, 1, 1, 1), base_filters=4)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss={"global": loss, "local": loss})
    history = model.fit(batches, epochs=8, steps_per_epoch=1, verbose=0)
    print(json.dumps({"backend": keras.backend.backend(), "loss": history.history["loss"],
                      "variables": type(model.trainable_variables[0].value).__module__}))
""")


def test_tiny_lgd3d_fits_under_jax_from_the_tf_data_demo_pipeline(tmp_path):
    result = run_under_backend("jax", FIT, tmp_path, tensorflow=True)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["backend"] == "jax" and report["variables"].startswith("jax")
    losses = report["loss"]
    assert len(losses) == 8 and all(v == v for v in losses)
    # From about ln(12) = 2.48 per head (4.97 for the two) to well below.
    assert losses[0] > 4.0 and losses[-1] < 0.6 * losses[0], losses
