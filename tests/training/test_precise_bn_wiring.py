"""Precise BatchNorm statistics in `train` (end of each stage), `evaluate` and `export`.

One tiny stage-1 run (deterministic input pipeline, 2 steps, 3 precise-BN batches). The
stage's .keras must hold the population statistics of the first 3 batches of the run's
training pipeline, recomputed independently here from the checkpoint's weights, and not the
checkpoint's moving statistics. evaluate --precise_bn_batches must leave every file of the run
folder byte-identical; bad flag combinations exit 2 with one line naming the flag.
"""

import hashlib

import keras
import numpy as np
import tensorflow as tf

from lgd_tf import evaluate, export
from lgd_tf.cli import configs, training
from lgd_tf.training import precise_bn

STRATEGY = tf.distribute.get_strategy()
BATCHES = 3


def _statistics(model):
    return {layer.path: (np.asarray(layer.moving_mean), np.asarray(layer.moving_variance))
            for layer in precise_bn.batch_norm_layers(model)}


def _largest_difference(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(x - y).max()) for key in a for x, y in zip(a[key], b[key], strict=True))


def _digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _reference(run, sources):
    """The checkpoint's model, and the same model with statistics recomputed here."""
    saved = keras.saving.load_model(run / "stage1.keras", compile=False)
    restored = keras.models.clone_model(saved)
    restored.set_weights(saved.get_weights())
    latest = tf.train.latest_checkpoint(run / "stage1")
    tf.train.Checkpoint(model=restored).restore(latest).expect_partial()
    moving = _statistics(restored)
    with configs.STAGE_SCOPE("stage1"):
        dataset = configs.train_dataset(sources.train_pattern, 4, seed=0,
                                        num_classes=sources.num_classes)
    assert precise_bn.recompute_batch_norm_statistics(restored, dataset, BATCHES) == BATCHES
    return saved, moving, _statistics(restored)


def test_train_saves_precise_statistics_and_evaluate_keeps_the_run(
        tiny_config, tmp_path, capsys):
    tiny_config("lgd_tf.data.train_dataset.deterministic = True",
                "stage1/lgd_tf.training.fit_stage.train_steps = 2",
                "stage1/keras.optimizers.schedules.CosineDecay.decay_steps = 2",
                f"lgd_tf.training.fit_stage.precise_bn_batches = {BATCHES}")
    run = tmp_path / "run"
    outcome = training.train_configured(str(run), STRATEGY, evaluate=False,
                                        stages=("stage1",))
    assert outcome.results["stage1"].precise_bn_batches == BATCHES
    assert f"stage1: precise BatchNorm statistics from {BATCHES} training batches" in (
        capsys.readouterr().out)
    saved, moving, recomputed = _reference(run, outcome.sources)
    assert len(moving) >= 10
    # The checkpoint keeps the moving statistics, far from the population ones ...
    assert _largest_difference(moving, _statistics(saved)) > 1e-2
    # ... and the .keras holds the statistics of the pipeline's first 3 batches.
    assert _largest_difference(recomputed, _statistics(saved)) < 1e-5
    assert _largest_difference(_statistics(outcome.model), _statistics(saved)) == 0.0

    before = _digests(run)
    out = tmp_path / "eval"
    assert evaluate.run(["evaluate", f"--model_dir={run}", f"--output_dir={out}",
                         "--precise_bn_batches=2", "--precise_bn_batch_size=4"]) == 0
    assert "precise BatchNorm statistics from 2 batches of 4 clips" in capsys.readouterr().out
    assert _digests(run) == before
    assert (out / "results.json").is_file() or any(out.iterdir())

    cases = [
        (export, ["export", f"--model_dir={run / 'stage1.keras'}",
                  f"--export_dir={tmp_path / 'exp'}", "--precise_bn_batches=2"],
         "--precise_bn_data"),
        (evaluate, ["evaluate", f"--model_dir={run}", f"--output_dir={out}",
                    "--precise_bn_batches=2", f"--precise_bn_data={tmp_path}/none-*"],
         "--precise_bn_data"),
        (evaluate, ["evaluate", f"--model_dir={run}", f"--output_dir={out}",
                    f"--precise_bn_data={outcome.sources.train_pattern}"],
         "--precise_bn_data"),
        (evaluate, ["evaluate", f"--model_dir={run}", "--precise_bn_batches=-1"],
         "--precise_bn_batches"),
    ]
    for command, argv, flag in cases:
        assert command.run(argv) == 2, argv
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and flag in lines[0], lines
    assert not (tmp_path / "exp").exists()
    assert _digests(run) == before
