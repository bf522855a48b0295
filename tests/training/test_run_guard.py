"""A model_dir cannot be corrupted: `python -m lgd_tf.train` as a user reruns it.

One chain of commands on one model_dir (gin/tiny.gin on the tiny demo data):
  1. a long run starts;
  2. a second `train` on the same model_dir is refused within a minute, the first goes on;
  3. SIGTERM to the first: a checkpoint at the current step, exit 1, one line;
  4. the same command with fewer steps (a schedule-only change) and evaluation every 2 steps
     resumes from that step, writes eval scalars and keeps the best checkpoint, then the final
     evaluation writes the confusion figure to TensorBoard;
  4b. `python -m lgd_tf.evaluate --stage=stage1` adds its scalars and figure to stage1/eval at
     the stage's last step;
  5. a rerun with another model (base_filters=8) is refused in at most 3 lines and leaves
     class_names.txt, operative_config.gin and run.json byte-identical.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

TRAIN = [sys.executable, "-m", "lgd_tf.train", "--gin_file=gin/tiny.gin"]


def _command(model_dir, bindings, *extra):
    return (TRAIN + [f"--model_dir={model_dir}", *extra]
            + [f"--gin_bindings={b}" for b in bindings])


def _stage1_steps(steps):
    return [f"stage1/lgd_tf.training.fit_stage.train_steps = {steps}",
            f"stage1/keras.optimizers.schedules.CosineDecay.decay_steps = {steps}"]


def _iterations(checkpoint):
    return int(tf.train.load_checkpoint(checkpoint).get_tensor(
        "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


def _events(folder, skip=()):
    """{tag: {step: value or image bytes}} of the event files in `folder` (but `skip`)."""
    found = {}
    for path in tf.io.gfile.glob(f"{folder}/events.out.tfevents.*"):
        if os.path.basename(path) in skip:
            continue
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                found.setdefault(value.tag, {})[event.step] = (
                    array if array.dtype == object else float(array))
    return found


def _error_lines(text):
    return [line for line in text.splitlines() if line.startswith("lgd_tf.train: error: ")]


def _start_reading(proc):
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_a_guarded_model_dir_through_a_chain_of_reruns(repo_root, subprocess_env,
                                                       tiny_bindings, tmp_path):
    model_dir = tmp_path / "run"
    base = tiny_bindings + ["lgd_tf.training.fit_stage.checkpoint_every_steps = 1000",
                            "lgd_tf.training.fit_stage.log_every_steps = 10"]
    # No evaluation in the long run: demo.gin evaluates stage 1 every 350 steps, and on a busy
    # machine the SIGTERM below may come after step 350 (step 4 counts its own evaluations).
    long_run = _command(model_dir, base + _stage1_steps(100000) + [
        "stage1/lgd_tf.training.fit_stage.eval_every_steps = None"], "--noevaluate")
    first = subprocess.Popen(long_run, cwd=repo_root, env=subprocess_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines, deadline = _start_reading(first), time.monotonic() + 180
        while time.monotonic() < deadline:
            line = lines.get(timeout=max(1, deadline - time.monotonic()))
            assert line is not None, first.stderr.read()[-3000:]
            if line.startswith("stage1 "):
                break

        # 2. A second process on the busy model_dir: refused, the first goes on.
        started = time.monotonic()
        second = subprocess.run(long_run, cwd=repo_root, env=subprocess_env,
                                capture_output=True, text=True, timeout=120)
        assert time.monotonic() - started < 60
        assert second.returncode == 1, second.stderr[-3000:]
        errors = _error_lines(second.stderr)
        assert len(errors) == 1 and f"is in use by pid {first.pid} on " in errors[0], errors
        assert first.poll() is None

        # 3. SIGTERM: checkpoint at the current step, one line, exit 1.
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 1, err[-3000:]
    assert "Traceback" not in err
    errors = _error_lines(err)
    assert len(errors) == 1 and "stage1: stopped by SIGTERM at step " in errors[0], err[-3000:]
    step = int(errors[0].split("at step ")[1].split("/")[0])
    latest = tf.train.latest_checkpoint(str(model_dir / "stage1"))
    assert latest.endswith(f"ckpt-{step}") and _iterations(latest) == step
    assert 10 <= step < 1000  # not a checkpoint_every_steps boundary: saved for the signal

    # 4. Schedule-only change: resumes; evaluation during training and at the end.
    final_steps = step + 4
    resumed = subprocess.run(
        _command(model_dir, base + _stage1_steps(final_steps) + [
            "stage1/lgd_tf.training.fit_stage.eval_every_steps = 2"]),
        cwd=repo_root, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"stage1: resuming from step {step}" in resumed.stdout
    evals = _events(model_dir / "stage1" / "eval")
    expected_steps = {s for s in range(step + 1, final_steps + 1) if s % 2 == 0}
    assert set(evals["eval/top1"]) == expected_steps
    assert set(evals["eval/top5"]) == expected_steps
    assert all(0.0 <= v <= 1.0 for v in evals["eval/top1"].values())
    best = json.loads((model_dir / "stage1" / "best" / "best.json").read_text())
    best_top1 = max(evals["eval/top1"].values())
    assert best["top1"] == pytest.approx(best_top1)
    assert best["step"] == min(s for s, v in evals["eval/top1"].items()
                               if v == pytest.approx(best_top1))
    assert tf.train.latest_checkpoint(str(model_dir / "stage1" / "best")).endswith(
        f"ckpt-{best['step']}")
    final = _events(model_dir / "stage2" / "eval")
    results = json.loads((model_dir / "eval_results.json").read_text())
    assert final["eval/top1"] == {3: pytest.approx(results["top1"])}
    image = final["eval/confusion_matrix"][3]
    width, height = (int(v) for v in image[:2])  # TensorBoard: [width, height, png...]
    png = tf.io.decode_png(image[2]).numpy()
    assert png.shape[:2] == (height, width) and width > 400 and height > 400
    assert np.array_equal(png, tf.io.decode_png(
        (model_dir / "confusion_matrix.png").read_bytes()).numpy())

    # 4b. The evaluate command on stage 1: its scalars at the stage's last step, a new file.
    before = set(os.listdir(model_dir / "stage1" / "eval"))
    evaluated = subprocess.run(
        [sys.executable, "-m", "lgd_tf.evaluate", "--gin_file=gin/tiny.gin",
         f"--model_dir={model_dir}", "--stage=stage1"]
        + [f"--gin_bindings={b}" for b in tiny_bindings],
        cwd=repo_root, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert f"eval scalars at step {final_steps} in " in evaluated.stdout
    stage1_results = json.loads((model_dir / "eval_results.json").read_text())
    assert stage1_results["stage"] == "stage1" and stage1_results["step"] == final_steps
    added = _events(model_dir / "stage1" / "eval", skip=before)
    assert set(added) == {"eval/top1", "eval/top5", "eval/mean_class_accuracy",
                          "eval/confusion_matrix"}
    assert added["eval/top1"] == {final_steps: pytest.approx(stage1_results["top1"])}
    assert added["eval/top5"] == {final_steps: pytest.approx(stage1_results["top5"])}

    # 5. Another model on the finished run: refused in at most 3 lines, nothing rewritten.
    kept = {name: (model_dir / name).read_bytes()
            for name in ("class_names.txt", "operative_config.gin", "run.json")}
    other = subprocess.run(_command(model_dir, tiny_bindings + [
        "lgd_tf.models.lgd3d.base_filters = 8"]), cwd=repo_root, env=subprocess_env,
        capture_output=True, text=True, timeout=300)
    assert other.returncode == 2
    output = [line for line in (other.stdout + other.stderr).splitlines() if line.strip()]
    assert len(output) <= 3, output
    assert _error_lines(other.stderr) == [
        f"lgd_tf.train: error: {model_dir} holds a stage1 model with base_filters=4, this run "
        "has base_filters=8; train into a new --model_dir, or set it back"]
    assert {name: (model_dir / name).read_bytes() for name in kept} == kept
