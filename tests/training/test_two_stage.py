"""The two-stage fit (Sec. 4.3) in-process on the tiny config, real LGD-3D and real pipelines."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import gin
from lgd_tf.cli import configs, training
from lgd_tf.models import load_lgd_weights
from lgd_tf.training import loop

STRATEGY = tf.distribute.get_strategy()


def _bindings(tiny_data_dir, stage1_steps, stage2_steps):
    return [
        f"lgd_tf.training.data_sources.train_pattern = '{tiny_data_dir}/train-00000-of-*'",
        f"lgd_tf.training.data_sources.eval_pattern = '{tiny_data_dir}/eval-*'",
        f"stage1/lgd_tf.training.fit_stage.train_steps = {stage1_steps}",
        f"stage1/keras.optimizers.schedules.CosineDecay.decay_steps = {max(stage1_steps, 1)}",
        f"stage2/lgd_tf.training.fit_stage.train_steps = {stage2_steps}",
        f"stage2/keras.optimizers.schedules.CosineDecay.decay_steps = {max(stage2_steps, 1)}",
    ]


def _fixed_batch(tiny_data_dir):
    clips, labels = next(iter(configs.train_dataset(
        f"{tiny_data_dir}/train-00000-of-*", 8, deterministic=True, seed=123)))
    return clips, labels


def _loss(model, batch):
    loss, _ = loop.stage_loss(model(batch[0], training=True), batch[1], 8)
    return float(loss)


def _load(path):
    return keras.saving.load_model(path, compile=False)


def _backbone_weights(model):
    return model.get_layer("backbone").get_weights()


def test_both_stages_lower_the_loss_on_a_fixed_batch(tiny_config, tiny_data_dir, tmp_path):
    tiny_config(*_bindings(tiny_data_dir, 10, 20),
                "lgd_tf.training.fit_stage.log_every_steps = 5",
                "lgd_tf.training.fit_stage.optimizer = @keras.optimizers.Adam",
                "keras.optimizers.Adam.learning_rate = 0.003",
                "stage2/keras.optimizers.Adam.learning_rate = 0.02")
    batch = _fixed_batch(tiny_data_dir)
    model_dir = str(tmp_path / "run")

    # The initial model of the run: same seed -> same weights (checked below).
    keras.utils.set_random_seed(0)
    with gin.config_scope("stage1"):
        initial = configs.lgd3d(head="stage1")
    results, final, sources, _ = training.train_configured(model_dir, STRATEGY,
                                                           evaluate=False)

    assert [r.steps for r in results.values()] == [10, 20]
    assert sources.class_names[0] == "digit0_left" and sources.num_classes == 12
    stage1, stage2 = _load(f"{model_dir}/stage1.keras"), _load(f"{model_dir}/stage2.keras")
    assert set(stage1.output) == {"global", "local"} and set(stage2.output) == {"combined"}
    assert _loss(stage1, batch) < 0.9 * _loss(initial, batch)

    # Stage 2 before training = stage-2 head on stage 1's backbone.
    with gin.config_scope("stage2"):
        start2 = configs.lgd3d(head="stage2")
    load_lgd_weights(start2, f"{model_dir}/stage1.keras")
    assert _loss(stage2, batch) < 0.95 * _loss(start2, batch)

    for name in ("operative_config.gin", "class_names.txt", "stage1/checkpoint",
                 "stage2/checkpoint"):
        assert os.path.exists(f"{model_dir}/{name}"), name
    assert "fit_stage.train_steps = 10" in open(f"{model_dir}/operative_config.gin").read()
    assert open(f"{model_dir}/class_names.txt").read().split() == sources.class_names
    assert tf.train.latest_checkpoint(f"{model_dir}/stage1").endswith("ckpt-10")
    tags = set()
    for event_file in glob.glob(f"{model_dir}/stage1/train/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            tags.update(v.tag for v in event.summary.value)
    assert {"loss/global", "loss/local", "top1", "top5", "learning_rate",
            "clips_per_second"} <= tags


def test_stage2_starts_from_stage1_backbone(tiny_config, tiny_data_dir, tmp_path):
    tiny_config(*_bindings(tiny_data_dir, 2, 0))
    keras.utils.set_random_seed(0)
    with gin.config_scope("stage1"):
        initial = configs.lgd3d(head="stage1")
    run = str(tmp_path / "run")
    training.train_configured(run, STRATEGY, evaluate=False)
    stage1, stage2 = _load(f"{run}/stage1.keras"), _load(f"{run}/stage2.keras")
    trained = _backbone_weights(stage1)
    # Stage 1 moved the backbone away from its initial weights ...
    assert any(not np.array_equal(a, b) for a, b in zip(
        _backbone_weights(initial), trained, strict=True))
    # ... and stage 2 (0 steps) holds exactly stage 1's backbone.
    for a, b in zip(trained, _backbone_weights(stage2), strict=True):
        np.testing.assert_array_equal(a, b)

    # Stage 2 alone in another model_dir starts from that model_dir's stage1.keras.
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "stage1.keras").write_bytes((tmp_path / "run" / "stage1.keras").read_bytes())
    results = training.train_configured(str(alone), STRATEGY, evaluate=False,
                                        stages=("stage2",)).results
    assert list(results) == ["stage2"]
    for a, b in zip(trained, _backbone_weights(_load(f"{alone}/stage2.keras")), strict=True):
        np.testing.assert_array_equal(a, b)


def test_stages_must_be_an_ordered_subset(tiny_config, tmp_path):
    tiny_config()
    with pytest.raises(ValueError, match="ordered subset"):
        training.train_configured(str(tmp_path), STRATEGY, stages=("stage2", "stage1"))
