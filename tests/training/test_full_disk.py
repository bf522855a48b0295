"""A full disk under the model_dir: one line naming the path, nothing complete lost, resumable.

The model_dir is on a 3 MB tmpfs mounted by the test (root only; skipped where mounting is not
allowed): the tiny LGD-3D's stage-1 checkpoints (~1.3 MB each) fill it at the third one. Then
the tmpfs grows (as a user frees space) and the same command resumes from the last complete
checkpoint and finishes.
"""

import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0 or shutil.which("mount") is None:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _iterations(checkpoint):
    return int(tf.train.load_checkpoint(checkpoint).get_tensor(
        "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


def test_full_disk_is_one_line_and_the_run_resumes_after_space_is_freed(
        repo_root, subprocess_env, tiny_bindings, small_disk):
    model_dir = small_disk / "run"
    command = [sys.executable, "-m", "lgd_tf.train", "--gin_file=gin/tiny.gin",
               f"--model_dir={model_dir}", "--noevaluate",
               "--gin_bindings=lgd_tf.training.fit_stage.checkpoint_every_steps = 1",
               *[f"--gin_bindings={b}" for b in tiny_bindings]]
    full = subprocess.run(command, cwd=repo_root, env=subprocess_env, capture_output=True,
                          text=True, timeout=300)
    assert full.returncode == 1, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, full.stderr[-3000:]
    assert errors[0].startswith("lgd_tf.train: error: stage1: cannot write checkpoint ")
    assert f"in {model_dir / 'stage1'}: No space left on device; the last complete " in (
        errors[0])
    kept_step = int(errors[0].split("(step ")[1].split(")")[0])
    latest = tf.train.latest_checkpoint(str(model_dir / "stage1"))
    assert latest.endswith(f"ckpt-{kept_step}") and _iterations(latest) == kept_step
    assert not [p for p in os.listdir(model_dir / "stage1") if p.endswith("_temp")]

    remount = subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)],
                             capture_output=True, text=True)
    assert remount.returncode == 0, remount.stderr
    resumed = subprocess.run(command, cwd=repo_root, env=subprocess_env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"stage1: resuming from step {kept_step}" in resumed.stdout
    assert _iterations(tf.train.latest_checkpoint(str(model_dir / "stage2"))) == 3
    assert (model_dir / "stage2.keras").exists()
