"""tf.distribute strategy selection: default, mirrored, multi_worker, tpu.

The global batch (gin: `fit_stage.batch_size`) is split evenly over
`strategy.num_replicas_in_sync` replicas; learning rates are not rescaled implicitly (see
`schedules.paper_step_decay(global_batch_size=..., reference_batch_size=...)`).
"""

import json
import os

import tensorflow as tf
from absl import logging

from lgd_tf.training.errors import TrainingError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def get_strategy(name="default", *, tpu=None):
    """Returns the `tf.distribute.Strategy` named `name`.

    mirrored: all local GPUs, else all (logical) CPU devices. multi_worker: the cluster in the
    TF_CONFIG environment variable. tpu: `tpu` is the TPU name or grpc address ("" or "local"
    on a TPU VM).
    """
    if name not in STRATEGIES:
        raise TrainingError(f"--strategy must be one of {', '.join(STRATEGIES)}. "
                            f"Received: {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise TrainingError("--strategy=multi_worker needs the TF_CONFIG environment "
                                "variable (cluster and task of this worker).")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as error:
            raise TrainingError(f"TF_CONFIG is not valid JSON: {error}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """True on the worker that writes checkpoints, summaries and final files."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (
        task_type == "worker" and task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def worker_tag(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return "worker0"
    return f"{resolver.task_type}{resolver.task_id}"


def xla_allowed(strategy, jit_compile):
    """XLA on, except for MirroredStrategy over several CPU devices.

    TF 2.21 fails to compile the step there (a variable placed on another device), so XLA is
    switched off in that case with a log line.
    """
    if not jit_compile:
        return False
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        devices = strategy.extended.worker_devices
        if len(devices) > 1 and all("CPU" in d.upper() for d in devices):
            logging.warning("XLA is off: MirroredStrategy over several CPU devices does not "
                            "compile in TF 2.21 (variable on another device).")
            print("lgd_tf.train: XLA switched off (MirroredStrategy over CPU devices).")
            return False
    return True
