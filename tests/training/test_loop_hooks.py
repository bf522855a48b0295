"""The stage loop's hooks (lgd_tf.training.hooks), each on its own, then wired by fit_stage.

Each hook is given hand-made steps; the values it writes or prints are compared with a count by
hand. The last tests run `fit_stage` on a one-layer model for a few steps: the checkpoints, the
evaluation steps and the stop signal land where the hooks say.
"""

import json
import os
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from lgd_tf.training import hooks, loop
from lgd_tf.training.errors import Interrupted, RunFailure, TrainingError
from lgd_tf.training.stage_config import StageConfig


def _steps(numbers, loss=1.0, stats=None, votes=0.0):
    return [hooks.Step(n, dict(stats or {}), loss, votes) for n in numbers]


def _manager(directory, max_to_keep=10):
    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    return tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=max_to_keep)


def _saved_steps(directory):
    state = tf.train.get_checkpoint_state(str(directory))
    return [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths] if state else []


def test_checkpointer_saves_every_n_steps_and_at_the_last(tmp_path):
    checkpointer = hooks.Checkpointer("stage1", _manager(tmp_path), str(tmp_path), 7, 3)
    for step in _steps(range(1, 8)):
        checkpointer.after_step(step)
    assert _saved_steps(tmp_path) == [3, 6, 7]
    assert checkpointer.last_saved == 7


class _FullDisk:
    def save(self, checkpoint_number):
        raise OSError(28, "No space left on device")


def test_checkpointer_names_the_last_complete_checkpoint_when_a_save_fails(tmp_path):
    checkpointer = hooks.Checkpointer("stage2", _FullDisk(), str(tmp_path), 9, 2, last_saved=4)
    with pytest.raises(RunFailure, match=r"stage2: cannot write checkpoint 6 in .*No space left"
                                         r".*last complete checkpoint \(step 4\) is kept"):
        checkpointer.after_step(hooks.Step(6, {}, 1.0, 0.0))
    assert checkpointer.last_saved == 4
    checkpointer.after_step(hooks.Step(5, {}, 1.0, 0.0))  # not a checkpoint step: no save


def test_a_worker_checkpointer_removes_its_folder_at_the_end(tmp_path):
    write_dir = tmp_path / ".tmp_worker1"
    checkpointer = hooks.Checkpointer("stage1", _manager(write_dir), str(write_dir), 2, 1,
                                      remove_at_end=True)
    checkpointer.after_step(hooks.Step(1, {}, 1.0, 0.0))
    assert write_dir.is_dir()
    checkpointer.end(2)
    assert not write_dir.exists()


def test_stop_signal_saves_the_current_step_and_raises_interrupted(tmp_path):
    stop = threading.Event()
    stop.reason = "SIGTERM"
    checkpointer = hooks.Checkpointer("stage1", _manager(tmp_path), str(tmp_path), 10, 4)
    signal = hooks.StopSignal("stage1", stop, checkpointer, 10, str(tmp_path))
    assert signal.requested() == 0.0
    signal.after_step(hooks.Step(3, {}, 1.0, 0.0))  # no vote: nothing happens
    assert _saved_steps(tmp_path) == []
    stop.set()
    assert signal.requested() == 1.0
    with pytest.raises(Interrupted, match=r"stage1: stopped by SIGTERM at step 5/10; "
                                          r"checkpoint saved in .*rerun the same command"):
        signal.after_step(hooks.Step(5, {}, 1.0, 2.0))  # votes summed over the workers
    assert _saved_steps(tmp_path) == [5]
    assert hooks.StopSignal("stage1", None, checkpointer, 10, str(tmp_path)).requested() == 0.0


def test_finite_loss_names_the_last_good_checkpoint(tmp_path):
    checkpointer = hooks.Checkpointer("stage1", _manager(tmp_path), str(tmp_path), 10, 4,
                                      last_saved=8)
    guard = hooks.FiniteLoss("stage1", str(tmp_path), checkpointer)
    guard.after_step(hooks.Step(9, {}, 3.5, 0.0))
    with pytest.raises(RunFailure, match=r"the loss is nan at step 9; training stopped and the "
                                         r"last good checkpoint \(step 8\) is kept"):
        guard.after_step(hooks.Step(9, {}, float("nan"), 0.0))
    checkpointer.last_saved = None
    with pytest.raises(RunFailure, match="loss is inf .*no checkpoint was written yet"):
        guard.after_step(hooks.Step(1, {}, float("inf"), 0.0))


def _scalars(directory):
    """{(tag, step): value} of the event files in `directory`."""
    found = {}
    for name in tf.io.gfile.listdir(str(directory)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for value in event.summary.value:
                found[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    return found


def test_progress_line_and_summaries_are_means_over_the_window(tmp_path, capsys):
    writer = tf.summary.create_file_writer(str(tmp_path))
    progress = hooks.Progress("stage1", 4, 0, 2, 2, writer=writer,
                              optimizer=keras.optimizers.SGD(learning_rate=0.25))
    # Sums over a global batch of 2 clips, as the train step returns them.
    stats = [{"loss/global": 2.0, "loss/local": 1.0, "top1": 1.0, "top5": 2.0, "count": 2.0},
             {"loss/global": 4.0, "loss/local": 3.0, "top1": 2.0, "top5": 2.0, "count": 2.0},
             {"loss/global": 1.0, "loss/local": 1.0, "top1": 0.0, "top5": 1.0, "count": 2.0},
             {"loss/global": 1.0, "loss/local": 3.0, "top1": 2.0, "top5": 2.0, "count": 2.0}]
    losses = [1.5, 3.5, 1.0, 2.0]
    lines = []
    for number, (step_stats, loss) in enumerate(zip(stats, losses, strict=True), 1):
        progress.after_step(hooks.Step(number, step_stats, loss, 0.0))
        lines.append(capsys.readouterr().out)
    progress.end(4)
    assert lines[0] == lines[2] == ""  # every 2 steps only
    # Steps 1-2: (2 + 4) / 4 clips = 1.5 global, (1 + 3) / 4 = 1.0 local, 3 / 4 top-1.
    assert "stage1 2/4 [" in lines[1]
    assert "loss 2.5000 (global 1.500, local 1.000) top-1 0.750 top-5 1.000 lr 0.25" in lines[1]
    # Steps 3-4: (1 + 1) / 4 = 0.5 global, (1 + 3) / 4 = 1.0 local, 2 / 4 top-1.
    assert "stage1 4/4 [====================]" in lines[3]
    assert "loss 1.5000 (global 0.500, local 1.000) top-1 0.500 top-5 0.750" in lines[3]
    scalars = _scalars(tmp_path)
    assert scalars[("loss/total", 2)] == pytest.approx(2.5)
    assert scalars[("top1", 4)] == pytest.approx(0.5)
    assert scalars[("learning_rate", 4)] == pytest.approx(0.25)
    assert ("loss/total", 1) not in scalars
    assert progress.last["top5"] == pytest.approx(0.75)
    assert progress.recent_loss() == pytest.approx(np.mean(losses))


def test_progress_keeps_the_last_ten_losses():
    progress = hooks.Progress("stage2", 12, 0, 1, 100, optimizer=None, enabled=False)
    for number in range(1, 13):
        progress.after_step(hooks.Step(number, {"count": 1.0}, float(number), 0.0))
    assert progress.recent_loss() == pytest.approx(np.mean(range(3, 13)))
    assert hooks.duration(59.6) == "1m00s" and hooks.duration(7) == "7s"


def test_periodic_evaluation_runs_at_multiples_and_keeps_the_best(tmp_path, capsys):
    calls, scores = [], iter([0.5, 0.4, 0.7])
    model = object()

    def evaluate(got_model, *, summary_dir, step):
        calls.append((got_model, summary_dir, step))
        return {"top1": next(scores), "top5": 0.9}

    variable = tf.Variable(0.0)
    best = hooks.BestModel(tf.train.Checkpoint(v=variable), str(tmp_path), chief=True)
    evaluation = hooks.PeriodicEvaluation("stage2", model, evaluate, 3, str(tmp_path), best)
    for step in _steps(range(1, 10)):
        variable.assign(float(step.number))
        evaluation.after_step(step)
    eval_dir = os.path.join(tmp_path, "eval")
    assert calls == [(model, eval_dir, 3), (model, eval_dir, 6), (model, eval_dir, 9)]
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "stage2: eval at step 6: video-level top-1 40.0% (best 50.0% at step 3)"
    assert lines[2].startswith("stage2: eval at step 9: video-level top-1 70.0% (best so far")
    assert (best.top1, best.step) == (0.7, 9)
    assert _saved_steps(best.dir) == [9]
    with open(best.record) as f:
        assert json.load(f) == {"step": 9, "top1": 0.7, "top5": 0.9}
    # A resumed run reads the best back and keeps it against a worse score.
    resumed = hooks.BestModel(tf.train.Checkpoint(v=tf.Variable(0.0)), str(tmp_path), True)
    assert (resumed.top1, resumed.step) == (0.7, 9)
    assert not resumed.update(12, {"top1": 0.6, "top5": 1.0})
    restored = tf.Variable(0.0)
    tf.train.Checkpoint(v=restored).restore(tf.train.latest_checkpoint(best.dir))
    assert float(restored.numpy()) == 9.0


def _bn_model():
    inputs = keras.Input((2, 2, 2, 3))
    x = keras.layers.GlobalAveragePooling3D()(inputs)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, {"combined": keras.layers.Dense(3)(x)})


def test_precise_batch_norm_at_the_end_uses_the_batch_means(capsys):
    model = _bn_model()
    rng = np.random.default_rng(0)
    clips = rng.normal(2.0, 3.0, (6, 2, 2, 2, 3)).astype("float32")
    labels = np.zeros(6, "int32")

    def dataset_fn(input_context):
        assert input_context is None
        return tf.data.Dataset.from_tensor_slices((clips, labels)).batch(2)

    strategy = tf.distribute.get_strategy()
    precise = hooks.PreciseBatchNorm("stage1", model, strategy, dataset_fn, 2, 2, True)
    precise.end(0)  # a stage of 0 steps: nothing
    assert precise.batches == 0
    precise.end(5)
    assert precise.batches == 2
    pooled = clips[:4].mean(axis=(1, 2, 3)).reshape(2, 2, 3)  # the first 2 batches of 2
    bn = model.layers[2]
    np.testing.assert_allclose(bn.moving_mean.numpy(), pooled.mean(axis=1).mean(axis=0),
                               rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), pooled.var(axis=1).mean(axis=0),
                               rtol=1e-4)
    assert "stage1: precise BatchNorm statistics from 2 training batches of 2 clips" in (
        capsys.readouterr().out)


def _data_fn(pattern, batch_size, *, input_context=None, seed=0, num_classes=3):
    rng = np.random.default_rng(seed)
    clips = rng.normal(size=(8, 2, 2, 2, 3)).astype("float32")
    labels = rng.integers(0, num_classes, 8).astype("int32")
    return tf.data.Dataset.from_tensor_slices((clips, labels)).repeat().batch(batch_size)


def test_fit_stage_wires_checkpoints_evaluation_and_stop(tmp_path, capsys):
    stage_dir = str(tmp_path / "stage2")
    model = _bn_model()
    evaluated = []

    def evaluate(got, *, summary_dir, step):
        evaluated.append(step)
        return {"top1": step / 10, "top5": 1.0}

    settings = dict(batch_size=2, checkpoint_every_steps=2, log_every_steps=2,
                    data_fn=_data_fn, eval_every_steps=2, evaluate_fn=evaluate,
                    optimizer=lambda: keras.optimizers.SGD(0.01))
    strategy = tf.distribute.get_strategy()
    result = loop.fit_stage("stage2", model, strategy, "unused", stage_dir, 3, train_steps=5,
                            precise_bn_batches=1, **settings)
    assert evaluated == [2, 4]
    assert _saved_steps(stage_dir) == [2, 4, 5]
    assert (result.steps, result.start_step, result.precise_bn_batches) == (5, 0, 1)
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("stage2 ")] == [
        "2/5", "4/5", "5/5"]
    # Resumed with a stop request: one step, its checkpoint, Interrupted.
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted, match="stopped by a stop request at step 6/9"):
        loop.fit_stage("stage2", model, strategy, "unused", stage_dir, 3, train_steps=9,
                       stop=stop, **settings)
    assert _saved_steps(stage_dir) == [4, 5, 6]
    assert evaluated == [2, 4]


def test_stage_config_resolves_and_checks_the_steps():
    config = StageConfig("stage1", "p", "d", 3, epochs=2.5, steps_per_epoch=3)
    assert config.train_steps == 8  # round(7.5)
    with pytest.raises(TrainingError, match="set fit_stage.train_steps, or fit_stage.epochs"):
        StageConfig("stage1", "p", "d", 3)
    with pytest.raises(TrainingError, match="eval_every_steps must be >= 1 or None"):
        StageConfig("stage1", "p", "d", 3, train_steps=2, eval_every_steps=0)
    with pytest.raises(TrainingError, match="precise_bn_batches must be >= 0"):
        StageConfig("stage1", "p", "d", 3, train_steps=2, precise_bn_batches=-1)
