"""`python -m lgd_tf.train` / `lgd_tf.evaluate` as commands: resume after SIGKILL, errors."""

import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

pytestmark = pytest.mark.subprocess

TRAIN = [sys.executable, "-m", "lgd_tf.train", "--gin_file=gin/tiny.gin"]
EVALUATE = [sys.executable, "-m", "lgd_tf.evaluate", "--gin_file=gin/tiny.gin"]


def _args(bindings):
    return [f"--gin_bindings={b}" for b in bindings]


def _iterations(checkpoint):
    return int(tf.train.load_checkpoint(checkpoint).get_tensor(
        "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.slow
def test_resume_after_sigkill_continues_from_the_saved_step(
        repo_root, subprocess_env, tiny_bindings, tmp_path):
    model_dir = tmp_path / "run"
    command = TRAIN + _args(tiny_bindings + [
        "stage1/lgd_tf.training.fit_stage.train_steps = 80",
        "stage1/keras.optimizers.schedules.CosineDecay.decay_steps = 80",
        "lgd_tf.training.fit_stage.checkpoint_every_steps = 5",
    ]) + [f"--model_dir={model_dir}", "--noevaluate"]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=repo_root, env=subprocess_env, stdout=log,
                                 stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if tf.train.latest_checkpoint(str(model_dir / "stage1")):
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()
    saved = tf.train.latest_checkpoint(str(model_dir / "stage1"))
    assert saved is not None
    saved_step = int(saved.rsplit("-", 1)[1])
    assert 5 <= saved_step < 80 and saved_step % 5 == 0
    assert _iterations(saved) == saved_step
    first_events = set(os.listdir(model_dir / "stage1" / "train"))

    second = subprocess.run(command, cwd=repo_root, env=subprocess_env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"stage1: resuming from step {saved_step}" in second.stdout
    progress = [line.split()[1] for line in second.stdout.splitlines()
                if line.startswith("stage1 ")]
    assert progress[0] == f"{saved_step + 1}/80" and progress[-1] == "80/80"
    assert len(progress) == 80 - saved_step  # exactly the missing steps, each logged once
    assert _iterations(tf.train.latest_checkpoint(str(model_dir / "stage1"))) == 80
    assert _iterations(tf.train.latest_checkpoint(str(model_dir / "stage2"))) == 3
    assert (model_dir / "stage1.keras").exists() and (model_dir / "stage2.keras").exists()
    assert first_events <= set(os.listdir(model_dir / "stage1" / "train"))
    assert "lgd_tf.train: done" in second.stdout
    assert not [p for p in os.listdir(model_dir) if ".tmp-" in p]

    # A third run finds both stages done and trains nothing.
    third = subprocess.run(command, cwd=repo_root, env=subprocess_env, capture_output=True,
                           text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "stage1 80 steps" in third.stdout and "already done" in third.stdout
    assert not [line for line in third.stdout.splitlines() if line.startswith("stage1 ")]


@pytest.mark.slow
def test_bad_inputs_give_one_line_errors(repo_root, subprocess_env, tiny_bindings,
                                         tiny_data_dir, tmp_path):
    bad_gin = tmp_path / "bad.gin"
    bad_gin.write_text("include 'gin/tiny.gin'\nlgd_tf.models.lgd3d.depth = = 50\n")
    two_names = tmp_path / "two_classes.txt"
    two_names.write_text("digit0_left\ndigit0_right\n")  # the demo set's first two names
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train-00000-of-00001.tfrecord").write_bytes(b"")
    real = [f"lgd_tf.training.data_sources.eval_pattern = '{tiny_data_dir}/eval-*'"]
    cases = {
        "syntax": ([sys.executable, "-m", "lgd_tf.train", f"--gin_file={bad_gin}"]
                   + _args(tiny_bindings), f"bad gin config ({bad_gin}, line 2)"),
        "missing": (TRAIN + _args(real + [
            "lgd_tf.training.data_sources.train_pattern = '/nonexistent/train-*'"]),
            "no file matches the train data pattern '/nonexistent/train-*'"),
        "empty": (TRAIN + _args(real + [
            f"lgd_tf.training.data_sources.train_pattern = '{empty}/train-*'"]),
            "the train data set is empty"),
        "labels": (TRAIN + _args(real + [
            f"lgd_tf.training.data_sources.train_pattern = '{tiny_data_dir}/train-*'",
            f"lgd_tf.training.data_sources.class_names_file = '{two_names}'",
            "NUM_CLASSES = 2"]), ">= num_classes 2"),
        "nan": (TRAIN + _args(tiny_bindings + [
            "stage1/keras.optimizers.schedules.CosineDecay.warmup_target = 1e30",
            "lgd_tf.training.fit_stage.checkpoint_every_steps = 1",
            "stage1/lgd_tf.training.fit_stage.train_steps = 20"]),
            "training stopped and the last good checkpoint (step "),
        "evaluate": (EVALUATE + _args(tiny_bindings), "is not a run folder (no such folder)"),
    }
    processes = {}
    for name, (command, _) in cases.items():
        processes[name] = subprocess.Popen(
            command + [f"--model_dir={tmp_path / name}"], cwd=repo_root, env=subprocess_env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for name, (_, message) in cases.items():
            out, err = processes[name].communicate(timeout=300)
            # Exit codes: 2 bad input (config, data, no model), 1 failure at run time (NaN).
            expected_code = 1 if name == "nan" else 2
            assert processes[name].returncode == expected_code, (name, out[-2000:],
                                                                 err[-2000:])
            assert "Traceback" not in err, (name, err[-3000:])
            error_lines = [line for line in err.splitlines() if ": error: " in line]
            assert len(error_lines) == 1 and message in error_lines[0], (name, err[-2000:])
            if name == "nan":
                kept_step = int(
                    error_lines[0].split("last good checkpoint (step ")[1].split(")")[0])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    kept = tf.train.latest_checkpoint(str(tmp_path / "nan" / "stage1"))
    assert kept is not None and kept.endswith(f"ckpt-{kept_step}")
    assert not (tmp_path / "nan" / "stage1.keras").exists()


@pytest.mark.parametrize("gin_file, bindings, message", [
    ("unknown.gin", [], "doesn't have a parameter named 'no_such_argument'"),
    ("gin/nope.gin", [], "gin file not found: gin/nope.gin"),
    ("gin/tiny.gin", ["NUM_CLASSES = 5"], "NUM_CLASSES is 5 but the demo data set has 12"),
    ("gin/tiny.gin", ["lgd_tf.training.data_sources.demo_cache_dir = None"],
     "no train data: set data_sources.train_pattern"),
    ("gin/lgd3d_r50.gin", [], "no train data: set data_sources.train_pattern"),
    ("lgd3d_r50.gin", ["TRAIN_PATTERN = '/tmp'"], "the train data pattern '/tmp' is a folder"),
])
def test_config_errors_are_reported_in_one_line(repo_root, tiny_bindings, tmp_path, capsys,
                                                monkeypatch, gin_file, bindings, message):
    """The command itself (flags, config, data checks), in-process: exit 2, one line."""
    import gin
    from lgd_tf import train

    monkeypatch.chdir(repo_root)
    (tmp_path / "unknown.gin").write_text("lgd_tf.models.lgd3d.no_such_argument = 1\n")
    path = tmp_path / gin_file if gin_file == "unknown.gin" else gin_file
    argv = ["lgd_tf.train", f"--gin_file={path}", f"--model_dir={tmp_path / 'run'}",
            "--noevaluate"] + _args((tiny_bindings if "tiny" in gin_file else []) + bindings)
    try:
        code = train.run(argv)
    finally:
        gin.clear_config()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("lgd_tf.train: error: "), err
    assert message in err[0]
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize("argv, message", [
    ([], "--model_dir"),
    (["--model_dir=x", "--no_such_flag=1"], "no_such_flag"),
    (["--model_dir=x", "stray"], "unexpected arguments ['stray']"),
    (["--model_dir=x", "--strategy=gpu"], "--strategy"),
])
def test_bad_usage_exits_2_in_one_line(capsys, argv, message):
    from lgd_tf import evaluate, train

    for command, program in ((train, "lgd_tf.train"), (evaluate, "lgd_tf.evaluate")):
        if command is evaluate and "--strategy=gpu" in argv:
            continue
        code = command.run([program] + argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, (program, err)
        assert err[0].startswith(f"{program}: error: ") and message in err[0], err


def test_help_shows_the_usage_and_the_flags(capsys):
    from lgd_tf import evaluate, train

    for command in (train, evaluate):
        assert command.run(["x", "--help"]) == 0
        out = capsys.readouterr().out
        assert "Exit codes: 0" in out and "--model_dir" in out and "--gin_file" in out
