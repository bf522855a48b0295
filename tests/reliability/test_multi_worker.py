"""Two-process MultiWorkerMirroredStrategy on 127.0.0.1: SIGTERM, a worker SIGKILLed, restart.

Chief (worker 0) and worker 1 train gin/tiny.gin with `--strategy=multi_worker` on tiny
TFRecords written here (checkpoint every step). Three runs of the same command, each on fresh
ports from the OS:
  1. SIGTERM to both workers once the chief has printed stage-1 step 1: both save a checkpoint
     at the step they agree on (N), print one line and exit 1;
  2. restart: the chief resumes from N; worker 1 gets SIGKILL once the chief has printed the
     next step: the chief exits 1 within 60 s with one line naming the lost task and its last
     checkpoint (M >= 2, the one `tf.train.latest_checkpoint` finds);
  3. restart: the chief resumes from M, both stages end at their planned steps, both exit 0.
Run with `-s` to see the timeline (kill -> chief exit in seconds).
"""

import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf

from tests import cluster as cluster_lib
from tests.reliability import test_preemption

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

STAGE1_STEPS, STAGE2_STEPS = 6, 2
STARTUP = 240  # seconds for a cluster to print its first step (a busy 2-core machine)
EXIT = 60  # seconds for a worker to exit after the SIGTERM / the peer's SIGKILL
ERROR = "lgd_tf.train: error:"


def _command(model_dir, pattern):
    bindings = [
        f"lgd_tf.training.data_sources.train_pattern = '{pattern}'", "NUM_CLASSES = 2",
        "lgd_tf.training.fit_stage.checkpoint_every_steps = 1",
        f"stage1/lgd_tf.training.fit_stage.train_steps = {STAGE1_STEPS}",
        f"stage1/keras.optimizers.schedules.CosineDecay.decay_steps = {STAGE1_STEPS}",
        f"stage2/lgd_tf.training.fit_stage.train_steps = {STAGE2_STEPS}",
        f"stage2/keras.optimizers.schedules.CosineDecay.decay_steps = {STAGE2_STEPS}",
    ]
    return ([sys.executable, "-m", "lgd_tf.train", "--gin_file=gin/tiny.gin",
             f"--model_dir={model_dir}", "--noevaluate", "--strategy=multi_worker"]
            + [f"--gin_bindings={b}" for b in bindings])


def _iterations(checkpoint):
    return int(tf.train.load_checkpoint(checkpoint).get_tensor(
        "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


class _Worker:
    """One `lgd_tf.train` process of the cluster; stdout read by a thread, stderr to a file."""

    def __init__(self, command, ports, index, log, env, cwd):
        env = dict(env, TF_CONFIG=cluster_lib.tf_config(ports, index))
        self.log = log
        with open(log, "w") as err:
            self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                         stderr=err, text=True)
        self.lines, self._queue = [], queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, pattern, timeout):
        """The first stdout line matching `pattern` within `timeout` s (fails otherwise)."""
        deadline = time.perf_counter() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                pytest.fail(f"no stdout line matching {pattern!r} in {timeout} s:\n"
                            f"{self.stdout()[-2000:]}{self.stderr()[-3000:]}")
            if line is None:
                pytest.fail(f"exited with {self.proc.wait()} before a line matching "
                            f"{pattern!r}:\n{self.stdout()[-2000:]}{self.stderr()[-3000:]}")
            if re.match(pattern, line):
                return line

    def wait(self, timeout):
        """Exit code within `timeout` s (fails otherwise; the process is killed at the end)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout} s later:\n{self.stderr()[-3000:]}")
        self._reader.join(timeout=10)
        return code

    def stdout(self):
        return "".join(self.lines)

    def stderr(self):
        with open(self.log) as f:
            return f.read()

    def error_line(self):
        """The one `lgd_tf.train: error:` line of stderr, after checking there is no traceback."""
        stderr = self.stderr()
        assert "Traceback" not in stderr, stderr[-4000:]
        errors = [line for line in stderr.splitlines() if line.startswith(ERROR)]
        assert len(errors) == 1, stderr[-4000:]
        return errors[0]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_sigterm_and_a_killed_worker_then_the_same_command_resumes(
        tmp_path, repo_root, subprocess_env):
    t0 = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - t0:6.1f}s] {message}", flush=True)

    pattern = test_preemption._write_data(tmp_path)
    model_dir = tmp_path / "run"
    stage1_dir = str(model_dir / "stage1")
    command = _command(model_dir, pattern)
    started = []

    def start_cluster(run):
        ports = cluster_lib.free_ports(2)
        log(f"run {run}: cluster 127.0.0.1:{ports[0]} (chief), 127.0.0.1:{ports[1]}")
        cluster = [_Worker(command, ports, i, tmp_path / f"run{run}-worker{i}.err",
                           subprocess_env, repo_root) for i in (0, 1)]
        started.extend(cluster)
        return cluster

    try:
        # 1. SIGTERM to both mid stage 1: both stop at the same step N and say so in one line.
        chief, worker = start_cluster(1)
        log("chief: " + chief.wait_for_line(r"stage1 1/", STARTUP).strip()[:40])
        for w in (chief, worker):
            w.proc.send_signal(signal.SIGTERM)
        signalled = time.perf_counter()
        assert chief.wait(EXIT) == 1, chief.stderr()[-4000:]
        assert worker.wait(EXIT) == 1, worker.stderr()[-4000:]
        log(f"both exited with 1 {time.perf_counter() - signalled:.1f}s after SIGTERM")
        lines = [w.error_line() for w in (chief, worker)]
        for line in lines:
            log(line)
        stops = [re.search(r"stopped by SIGTERM at step (\d+)/", line) for line in lines]
        assert all(stops), lines
        stop_step = int(stops[0].group(1))
        assert int(stops[1].group(1)) == stop_step, lines
        assert 1 <= stop_step < STAGE1_STEPS - 1, lines
        latest = tf.train.latest_checkpoint(stage1_dir)
        assert latest and _iterations(latest) == stop_step, latest

        # 2. Restart; SIGKILL worker 1 after the chief's next step: the chief names the loss.
        chief, worker = start_cluster(2)
        chief.wait_for_line(rf"stage1: resuming from step {stop_step} ", STARTUP)
        kill_after = stop_step + 1
        log("chief: " + chief.wait_for_line(rf"stage1 {kill_after}/", STARTUP).strip()[:40])
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait()
        killed = time.perf_counter()
        assert chief.wait(EXIT) == 1, chief.stderr()[-4000:]
        log(f"worker 1 SIGKILLed after stage1 step {kill_after}; chief exited with 1 "
            f"{time.perf_counter() - killed:.1f}s later")
        line = chief.error_line()
        log(line)
        lost = re.fullmatch(
            ERROR + r" stage1: lost (.+) of the cluster at step \d+ \(\w+\); the last "
            r"checkpoint is step (\d+)\. Restart every worker with the same command to resume",
            line)
        assert lost, line
        assert lost.group(1) == "worker 1", line
        kept_step = int(lost.group(2))
        assert kept_step >= 2, line
        latest = tf.train.latest_checkpoint(stage1_dir)
        assert latest and latest.endswith(f"ckpt-{kept_step}"), (latest, line)
        assert _iterations(latest) == kept_step
        assert kept_step < STAGE1_STEPS

        # 3. Restart with the same command: resumes from that checkpoint and finishes.
        chief, worker = start_cluster(3)
        assert chief.wait(STARTUP + 120) == 0, chief.stderr()[-4000:]
        assert worker.wait(EXIT) == 0, worker.stderr()[-4000:]
        out = chief.stdout()
        assert f"stage1: resuming from step {kept_step} " in out, out
        log("chief: " + next(ln for ln in out.splitlines() if "resuming" in ln))
        log("chief: " + next(ln for ln in out.splitlines() if "lgd_tf.train: done" in ln))
        assert _iterations(tf.train.latest_checkpoint(stage1_dir)) == STAGE1_STEPS
        assert _iterations(tf.train.latest_checkpoint(str(model_dir / "stage2"))) == STAGE2_STEPS
        assert (model_dir / "stage1.keras").is_file() and (model_dir / "stage2.keras").is_file()
    finally:
        for w in started:
            w.kill()
