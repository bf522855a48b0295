"""A worker of a two-process MultiWorkerMirroredStrategy run on 127.0.0.1 killed and restarted.

    python -m tests.reliability.multi_worker_restart [--kill_after_step=2]

Not a pytest test: on a busy 2-core machine it needs minutes (two TensorFlow processes, the
chief's detection of the dead peer, a restart of both), so it is run by hand and its output
is in docs/reliability.md. Steps:
  1. chief (worker 0) and worker 1 train gin/tiny.gin with --strategy=multi_worker on tiny
     TFRecords written here (checkpoint every step);
  2. worker 1 gets SIGKILL once the chief has printed stage-1 step `kill_after_step`;
  3. what the chief does is recorded (error and exit code, or still running after
     `--wait_chief` seconds, in which case it is killed too, as a cluster manager would);
  4. both are restarted with the same command: they resume from the chief's last checkpoint
     and finish both stages with the planned number of steps.
"""

import argparse
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

from tests.conftest import REPO_ROOT
from tests.reliability import test_preemption

STAGE1_STEPS, STAGE2_STEPS = 6, 3


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


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


def _start(command, ports, index, log):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2",
               TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                   "index": index}}))
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=open(log, "w"), text=True)


def _log(t0, message):
    print(f"[{time.perf_counter() - t0:6.1f}s] {message}", flush=True)


def _last_error(log):
    """The last `SomeError: message` line of a log (a traceback's exception line)."""
    lines = [line.strip() for line in pathlib.Path(log).read_text().splitlines()]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line)
              or line.startswith("lgd_tf.train: error")]
    return errors[-1][:300] if errors else "(no error line on stderr)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill_after_step", type=int, default=2)
    parser.add_argument("--wait_chief", type=float, default=180.0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        pattern = test_preemption._write_data(tmp)
        model_dir = tmp / "run"
        command = _command(model_dir, pattern)
        ports = _free_ports(2)
        _log(t0, f"cluster 127.0.0.1:{ports[0]} (chief), 127.0.0.1:{ports[1]}; "
                 f"stage1 {STAGE1_STEPS} + stage2 {STAGE2_STEPS} steps, global batch 4")
        chief = _start(command, ports, 0, tmp / "chief1.err")
        worker = _start(command, ports, 1, tmp / "worker1.err")
        for line in chief.stdout:
            if line.startswith("stage1 "):
                _log(t0, f"chief: {line.strip()[:60]}")
            if line.startswith(f"stage1 {args.kill_after_step}/"):
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                _log(t0, f"worker 1 SIGKILLed (exit {worker.returncode})")
                break
        killed_at = time.perf_counter()
        try:
            chief.communicate(timeout=args.wait_chief)
            _log(t0, f"chief exited with {chief.returncode} "
                     f"{time.perf_counter() - killed_at:.1f}s after the kill: "
                     f"{_last_error(tmp / 'chief1.err')}")
        except subprocess.TimeoutExpired:
            chief.send_signal(signal.SIGKILL)
            chief.wait()
            _log(t0, f"chief still running {args.wait_chief:.0f}s after the kill "
                     "(blocked in a collective); SIGKILLed as a cluster manager would")
        latest = sorted(p.name for p in (model_dir / "stage1").glob("ckpt-*.index"))
        _log(t0, f"checkpoints kept by the chief: {latest}")

        ports = _free_ports(2)
        chief = _start(command, ports, 0, tmp / "chief2.err")
        worker = _start(command, ports, 1, tmp / "worker2.err")
        out, _ = chief.communicate(timeout=900)
        worker.wait(timeout=300)
        for line in out.splitlines():
            if "resuming" in line or line.startswith("lgd_tf.train: done"):
                _log(t0, f"chief: {line.strip()}")
        _log(t0, f"restart: chief exit {chief.returncode}, worker exit {worker.returncode}"
             + ("" if chief.returncode == 0 else f": {_last_error(tmp / 'chief2.err')}"))
        files = sorted(p.name for p in model_dir.iterdir())
        _log(t0, f"model_dir: {files}")
        ok = (chief.returncode == 0 and worker.returncode == 0
              and f"stage1 {STAGE1_STEPS} steps" in out and f"stage2 {STAGE2_STEPS} steps" in out)
        print("multi_worker_restart:", "OK" if ok else "FAILED", flush=True)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
