"""Preemption: `python -m lgd_tf.train` killed with SIGKILL at 5 points and rerun.

One chain on gin/tiny.gin (LGD-3D, 4 base filters, 8 frames of 28 x 28) with tiny TFRecords
written here, checkpoints every step, deterministic input and the input pipeline in the
checkpoint. Kill points, in order:
  1. stage 1, checkpoint 2 written to `ckpt-2_temp` but not merged (inside the write);
  2. stage 1, checkpoint 3 complete but the `checkpoint` state file not updated yet;
  3. stage 1 done, `stage1.keras` written to its temporary name but not renamed;
  4. stage 2, an external SIGKILL as soon as step 1 is printed (wherever the process is);
  5. stage 2, the last checkpoint (3) written but not merged.
The sixth run finishes. Its models must equal those of an uninterrupted run of the same
command, weight for weight, and each stage must end at its planned number of steps.
"""

import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.data import helpers

STAGE1_STEPS, STAGE2_STEPS = 4, 3
TIMEOUT = 300


def _write_data(folder):
    """8 six-frame 32 x 32 videos in 2 shards: dark (label 0) or bright (label 1) + noise."""
    rng = np.random.default_rng(0)
    videos = []
    for k in range(8):
        label = k % 2
        noise = rng.integers(-20, 21, (6, 32, 32, 3))
        videos.append((np.clip(60 + 120 * label + noise, 0, 255).astype(np.uint8), label, f"v{k}"))
    for shard in range(2):
        helpers.write_records(folder / f"train-{shard:05d}-of-00002.tfrecord",
                              videos[shard * 4:(shard + 1) * 4])
    return f"{folder}/train-*"


def _command(model_dir, pattern):
    bindings = [
        f"lgd_tf.training.data_sources.train_pattern = '{pattern}'",
        "NUM_CLASSES = 2",
        "lgd_tf.data.train_dataset.deterministic = True",
        "lgd_tf.training.fit_stage.checkpoint_every_steps = 1",
        "lgd_tf.training.fit_stage.checkpoint_input_pipeline = True",
        f"stage1/lgd_tf.training.fit_stage.train_steps = {STAGE1_STEPS}",
        f"stage1/keras.optimizers.schedules.CosineDecay.decay_steps = {STAGE1_STEPS}",
        f"stage2/lgd_tf.training.fit_stage.train_steps = {STAGE2_STEPS}",
        f"stage2/keras.optimizers.schedules.CosineDecay.decay_steps = {STAGE2_STEPS}",
    ]
    return ([sys.executable, "-m", "tests.reliability.preempt", "--gin_file=gin/tiny.gin",
             f"--model_dir={model_dir}", "--noevaluate"]
            + [f"--gin_bindings={b}" for b in bindings])


def _run(command, env, repo_root, kill_at=None):
    env = dict(env, LGD_KILL_AT=kill_at or "")
    return subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def _kill_when_printed(command, env, repo_root, line_start):
    """Starts the command and SIGKILLs it as soon as a stdout line starts with `line_start`."""
    proc = subprocess.Popen(command, cwd=repo_root, env=dict(env, LGD_KILL_AT=""),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(line_start):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.stdout.close()
        proc.wait(timeout=TIMEOUT)
    return proc.returncode, "".join(seen)


def _latest(stage_dir):
    return os.path.basename(tf.train.latest_checkpoint(str(stage_dir)) or "none")


def _weights(path):
    model = keras.saving.load_model(path, compile=False)
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


@pytest.mark.slow
def test_sigkill_at_five_points_then_resume_equals_an_uninterrupted_run(
        tmp_path, repo_root, subprocess_env):
    pattern = _write_data(tmp_path)
    reference_dir, model_dir = tmp_path / "uninterrupted", tmp_path / "preempted"
    # The uninterrupted run goes alongside the chain (a busy machine shares CPU per process).
    reference = subprocess.Popen(_command(reference_dir, pattern), cwd=repo_root,
                                 env=dict(subprocess_env, LGD_KILL_AT=""),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    command = _command(model_dir, pattern)
    stage1, stage2 = model_dir / "stage1", model_dir / "stage2"

    # 1. Inside the write of checkpoint 2: the shards sit in ckpt-2_temp.
    killed = _run(command, subprocess_env, repo_root, "merge:stage1:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (stage1 / "ckpt-2_temp").is_dir() and _latest(stage1) == "ckpt-1"

    # 2. Checkpoint 3 on disk, the state file still says 2.
    killed = _run(command, subprocess_env, repo_root, "record:stage1:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "stage1: resuming from step 1" in killed.stdout
    assert (stage1 / "ckpt-3.index").is_file() and _latest(stage1) == "ckpt-2"

    # 3. Stage 1 finished; its .keras file written to a temporary name, not renamed.
    killed = _run(command, subprocess_env, repo_root, "rename:stage1.keras")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "stage1: resuming from step 2" in killed.stdout
    assert _latest(stage1) == f"ckpt-{STAGE1_STEPS}" and not (model_dir / "stage1.keras").exists()

    # 4. Stage 2, killed from outside as soon as its first step is printed.
    code, out = _kill_when_printed(command, subprocess_env, repo_root, f"stage2 1/{STAGE2_STEPS}")
    assert code == -signal.SIGKILL, out
    assert (model_dir / "stage1.keras").is_file()  # written by this run: stage 1 was done

    # 5. Inside the write of stage 2's last checkpoint.
    killed = _run(command, subprocess_env, repo_root, f"merge:stage2:{STAGE2_STEPS}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _latest(stage2) == f"ckpt-{STAGE2_STEPS - 1}"
    assert not (model_dir / "stage2.keras").exists()

    # 6. The same command finishes the plan.
    final = _run(command, subprocess_env, repo_root)
    assert final.returncode == 0, final.stderr[-2000:]
    assert f"stage2: resuming from step {STAGE2_STEPS - 1}" in final.stdout
    assert (f"stage1 {STAGE1_STEPS} steps" in final.stdout
            and f"stage2 {STAGE2_STEPS} steps" in final.stdout), final.stdout
    assert _latest(stage1) == f"ckpt-{STAGE1_STEPS}" and _latest(stage2) == f"ckpt-{STAGE2_STEPS}"
    for name in ("class_names.txt", "operative_config.gin", "stage1.keras", "stage2.keras"):
        assert (model_dir / name).is_file(), name

    out, err = reference.communicate(timeout=TIMEOUT)
    assert reference.returncode == 0, err[-2000:]
    for name in ("stage1.keras", "stage2.keras"):
        expected, got = _weights(reference_dir / name), _weights(model_dir / name)
        assert sorted(got) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name}: {key}")
