"""tf.distribute: MirroredStrategy over 2 logical CPUs, MultiWorkerMirroredStrategy on 127.0.0.1.

Both run in subprocesses: logical devices and the collective runtime must be configured before
TensorFlow starts, which a shared pytest process has already done.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from tests import cluster

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import gin, keras
    from lgd_tf.cli import configs, training
    from lgd_tf.training import loop
    from lgd_tf.training import strategy as strategy_lib

    data_dir, model_dir = sys.argv[1], sys.argv[2]
    configs.parse(["gin/tiny.gin"], [
        f"lgd_tf.training.data_sources.demo_cache_dir = '{data_dir}'",
        "stage1/lgd_tf.training.fit_stage.train_steps = 2",
        "stage2/lgd_tf.training.fit_stage.train_steps = 1",
        "lgd_tf.training.fit_stage.jit_compile = True",
    ])
    mirrored = strategy_lib.get_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2, mirrored.extended.worker_devices
    keras.utils.set_random_seed(0)
    with mirrored.scope(), gin.config_scope("stage1"):
        model = configs.lgd3d(head="stage1")
    with gin.config_scope("stage1"):
        reference = configs.lgd3d(head="stage1")
    reference.set_weights(model.get_weights())
    clips, labels = next(iter(configs.train_dataset(
        f"{data_dir}/train-*", 4, deterministic=True, seed=1)))
    wd = 1e-3

    def halves(ctx):
        r = ctx.replica_id_in_sync_group
        return clips[2 * r:2 * r + 2], labels[2 * r:2 * r + 2]

    @tf.function
    def mirrored_grads(c, y):
        grads, *_ = loop.loss_and_gradients(model, None, c, y, 4, wd)
        return grads

    per_replica = mirrored.run(
        mirrored_grads, args=mirrored.experimental_distribute_values_from_function(halves))
    got = [mirrored.reduce(tf.distribute.ReduceOp.SUM, g, axis=None).numpy()
           for g in per_replica]
    # One device: the two per-replica halves one after the other (each half's BatchNorm uses
    # its own statistics, as unsynchronised BN does on each replica); the weight decay is
    # split over the 2 replicas, so each half carries half of it.
    # Both in graph mode (tf.function), as training runs them.
    @tf.function
    def one_device_grads(c, y):
        grads, *_ = loop.loss_and_gradients(reference, None, c, y, 4, wd / 2)
        return grads

    expected = None
    for h in range(2):
        g = [x.numpy() for x in one_device_grads(clips[2 * h:2 * h + 2],
                                                   labels[2 * h:2 * h + 2])]
        expected = g if expected is None else [a + b for a, b in zip(expected, g)]
    worst = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))
                for a, b in zip(got, expected))
    names = [v.path for v in model.trainable_variables]
    results = training.train_configured(model_dir, mirrored, evaluate=False).results
    print(json.dumps({"worst_relative_error": worst, "num_grads": len(got),
                      "nonzero": sum(bool(np.any(g)) for g in got), "names": names[:3],
                      "steps": [r.steps for r in results.values()]}))
""")


def test_mirrored_two_cpus_gives_the_one_device_gradients(repo_root, subprocess_env,
                                                          tiny_data_dir, tmp_path):
    out = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tiny_data_dir),
                          str(tmp_path / "run")], cwd=repo_root, env=subprocess_env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["num_grads"] > 20 and report["nonzero"] > 20
    assert report["worst_relative_error"] < 1e-4, report
    assert report["steps"] == [2, 1]
    assert "XLA switched off (MirroredStrategy over CPU devices)" in out.stdout
    for stage in ("stage1", "stage2"):  # the resume caveat is printed, not only logged
        assert (f"warning: {stage}: the input pipeline's position is not checkpointed under "
                "MirroredStrategy") in out.stderr, out.stderr[-3000:]
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "stage2")).endswith("ckpt-1")


def test_multi_worker_mirrored_two_local_workers_train(repo_root, subprocess_env,
                                                       tiny_bindings, tmp_path):
    ports = cluster.free_ports(2)
    model_dir = tmp_path / "run"
    command = [sys.executable, "-m", "lgd_tf.train", "--gin_file=gin/tiny.gin",
               "--strategy=multi_worker", f"--model_dir={model_dir}", "--noevaluate"] + [
        f"--gin_bindings={b}" for b in tiny_bindings + [
            "stage1/lgd_tf.training.fit_stage.train_steps = 3",
            "stage2/lgd_tf.training.fit_stage.train_steps = 2"]]
    workers = []
    for index in range(2):
        env = dict(subprocess_env, TF_CONFIG=cluster.tf_config(ports, index))
        workers.append(subprocess.Popen(command, cwd=repo_root, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-4000:]
    chief_out, worker_out = outputs[0][0], outputs[1][0]
    assert "stage1 3/3" in chief_out and "lgd_tf.train: done" in chief_out
    assert "lgd_tf.train: done" not in worker_out  # only the chief reports and writes
    for stage, steps in (("stage1", 3), ("stage2", 2)):
        latest = tf.train.latest_checkpoint(str(model_dir / stage))
        assert latest.endswith(f"ckpt-{steps}")
        assert int(tf.train.load_checkpoint(latest).get_tensor(
            "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == steps
        assert not [p for p in (model_dir / stage).iterdir() if p.name.startswith(".tmp_")]
    assert (model_dir / "stage2.keras").exists()
