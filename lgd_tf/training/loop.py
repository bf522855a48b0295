"""One stage of the two-stage fit (Sec. 4.3): a resumable training loop under a strategy.

Stage 1 minimises Eq. 6, CE(W_g g_L) + CE(W_x P(x_L)); stage 2 minimises Eq. 7, CE of the
combination classifier. The loss is whichever softmax cross-entropies the model's head outputs
(`{"global", "local"}` or `{"combined"}`), plus L2 weight decay (Caffe style, 0.5 * wd * |W|^2
on every kernel) when `weight_decay` > 0.

Checkpoints (`tf.train.CheckpointManager`: model, optimizer with its step counter, optionally
the input pipeline's position) are written every `checkpoint_every_steps` steps and at the end;
TensorFlow writes them to temporary names and renames, so a run killed at any moment (SIGKILL
included) resumes from the last saved step with the same command. A stop request (the commands
set it on SIGTERM / SIGINT) saves a checkpoint at the current step first; under
MultiWorkerMirroredStrategy the workers agree on it inside the step, so all of them stop at the
same step. With `eval_every_steps`, the video-level evaluation runs during training, its
scalars go to `stage_dir/eval/` and the checkpoint with the best eval top-1 is kept in
`stage_dir/best/` beside the latest ones.
"""

import collections
import contextlib
import inspect
import json
import os
import re
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from lgd_tf import data
from lgd_tf.models import class_probabilities
from lgd_tf.runs import run_folder
from lgd_tf.training import precise_bn
from lgd_tf.training import strategy as strategy_lib
from lgd_tf.training.errors import (
    Interrupted,
    RunFailure,
    TrainingError,
    data_error,
    one_line,
    warn,
)

StageResult = collections.namedtuple(
    "StageResult", ["stage", "steps", "start_step", "seconds", "loss", "top1", "clips_per_second",
                    "skipped", "precise_bn_batches"], defaults=(0, 0))


def _as_optimizer(optimizer):
    if optimizer is None:
        return keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if callable(optimizer):
        return optimizer()
    raise TrainingError(f"fit_stage.optimizer must be a Keras optimizer or a factory. "
                        f"Received: {optimizer!r}")


def stage_loss(outputs, labels, global_batch_size):
    """Eq. 6 (stage 1: CE of the global and the local head) or Eq. 7 (stage 2: CE of the
    combination classifier): the sum over the head outputs of each head's softmax
    cross-entropy, averaged over the GLOBAL batch (so replicas' sums add up to the mean).

    Returns:
        (loss, {head: per-example cross-entropy (B,)}).
    """
    labels = tf.cast(labels, tf.int32)
    head_losses = {
        name: tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(logits, tf.float32))
        for name, logits in sorted(outputs.items())}
    loss = tf.add_n([tf.nn.compute_average_loss(v, global_batch_size=global_batch_size)
                     for v in head_losses.values()])
    return loss, head_losses


def loss_and_gradients(model, optimizer, clips, labels, global_batch_size, weight_decay):
    """One replica's forward and backward pass.

    Returns:
        (gradients of the (scaled) loss w.r.t. model.trainable_variables, outputs,
        head_losses, weight-decay term of this replica).
    """
    decayed = [v for v in model.trainable_variables if len(v.shape) >= 2]
    with tf.GradientTape() as tape:
        outputs = model(clips, training=True)
        loss, head_losses = stage_loss(outputs, labels, global_batch_size)
        l2 = tf.constant(0.0)
        if weight_decay and decayed:
            l2 = tf.nn.scale_regularization_loss(0.5 * weight_decay * tf.add_n(
                [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in decayed]))
            loss += l2
        scaled = optimizer.scale_loss(loss) if optimizer is not None else loss
    grads = tape.gradient(scaled, model.trainable_variables)
    return grads, outputs, head_losses, l2


def _make_replica_step(model, optimizer, global_batch_size, weight_decay, num_classes):
    top_k = min(5, num_classes)

    def replica_step(clips, labels, stop):
        labels = tf.cast(labels, tf.int32)
        grads, outputs, head_losses, l2 = loss_and_gradients(
            model, optimizer, clips, labels, global_batch_size, weight_decay)
        optimizer.apply(grads, model.trainable_variables)
        probabilities = class_probabilities(outputs)
        stats = {f"loss/{name}": tf.reduce_sum(v) for name, v in head_losses.items()}
        stats["loss/weight_decay"] = l2 * global_batch_size
        stats["top1"] = tf.reduce_sum(tf.cast(
            tf.math.in_top_k(labels, probabilities, 1), tf.float32))
        stats["top5"] = tf.reduce_sum(tf.cast(
            tf.math.in_top_k(labels, probabilities, top_k), tf.float32))
        stats["count"] = tf.cast(tf.shape(labels)[0], tf.float32)
        # Summed over replicas and workers: > 0 when any worker was asked to stop.
        stats["stop"] = tf.identity(stop)
        return stats

    return replica_step


class _Progress:
    """A progress line every `every` steps: bar, losses, top-1/top-5, lr, clips/s, ETA."""

    def __init__(self, stage, total, start, global_batch, every, enabled):
        self.stage, self.total, self.every, self.enabled = stage, total, every, enabled
        self.global_batch = global_batch
        self.window = collections.defaultdict(float)
        self.window_steps = 0
        self.window_start = time.perf_counter()
        self.start_step = start
        self.start = time.perf_counter()
        self.last = {}

    def update(self, step, stats, learning_rate, writer):
        for key, value in stats.items():
            self.window[key] += float(value)
        self.window_steps += 1
        if step % self.every and step != self.total:
            return
        elapsed = time.perf_counter() - self.window_start
        count = max(self.window["count"], 1.0)
        means = {k: v / count for k, v in self.window.items() if k != "count"}
        means["loss/total"] = sum(v for k, v in means.items() if k.startswith("loss/"))
        clips_per_second = self.window_steps * self.global_batch / max(elapsed, 1e-9)
        self.last = dict(means, clips_per_second=clips_per_second)
        if writer is not None:
            scalars = dict(means, learning_rate=learning_rate, clips_per_second=clips_per_second)
            with writer.as_default(step=step):
                for key, value in scalars.items():
                    tf.summary.scalar(key, value)
        if self.enabled:
            done = (step - self.start_step) / max(time.perf_counter() - self.start, 1e-9)
            eta = (self.total - step) / max(done, 1e-9)
            width = 20
            filled = int(width * step / self.total)
            bar = "=" * filled + (">" if filled < width else "") + "." * (width - filled - 1)
            heads = ", ".join(f"{k[5:]} {v:.3f}" for k, v in sorted(means.items())
                              if k.startswith("loss/") and k not in ("loss/total",))
            print(f"{self.stage} {step:>{len(str(self.total))}}/{self.total} [{bar[:width]}] "
                  f"loss {means['loss/total']:.4f} ({heads}) top-1 {means['top1']:.3f} "
                  f"top-5 {means['top5']:.3f} lr {learning_rate:.3g} "
                  f"{clips_per_second:.1f} clips/s ETA {_duration(eta)}", flush=True)
        self.window.clear()
        self.window_steps = 0
        self.window_start = time.perf_counter()


def _duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _learning_rate(optimizer):
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except (TypeError, ValueError, AttributeError):
        return float("nan")


def _check_clip_shape(stage, clip_spec, model):
    """Fails early, naming the bindings, when the data's clips do not fit the model's input."""
    per_replica = getattr(clip_spec, "_component_specs", clip_spec)  # PerReplicaSpec or not
    clip_shape = tuple(tf.nest.flatten(per_replica)[0].shape)[1:]
    model_shape = tuple(model.inputs[0].shape)[1:]
    for axis, name, binding in ((0, "frames", "num_frames"), (3, "channels", "modality")):
        want, got = model_shape[axis], clip_shape[axis]
        if want is not None and got is not None and want != got:
            raise TrainingError(
                f"{stage}: the data give clips of {got} {name} but the model takes {want}; make "
                f"lgd_tf.data.train_dataset.{binding} and the model's {binding} agree")


_LOST_PEER = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
              tf.errors.CancelledError, tf.errors.AbortedError)


def _lost_task(error):
    """"worker 1" from a collective's error message naming /job:worker/replica:0/task:1."""
    tasks = re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", str(error))
    return ", ".join(sorted({f"{job} {task}" for job, task in tasks})) or "a peer"


class _Best:
    """The checkpoint with the best eval top-1 so far, in `stage_dir/best/` (and best.json)."""

    def __init__(self, checkpoint, stage_dir, chief):
        self.dir = os.path.join(stage_dir, "best")
        self.record = os.path.join(self.dir, "best.json")
        self.chief = chief
        self.manager = tf.train.CheckpointManager(checkpoint, self.dir, max_to_keep=1)
        self.top1, self.step = -1.0, None
        if tf.io.gfile.exists(self.record):
            with tf.io.gfile.GFile(self.record) as f:
                saved = json.load(f)
            self.top1, self.step = float(saved["top1"]), int(saved["step"])

    def update(self, step, results):
        if results["top1"] <= self.top1:
            return False
        self.top1, self.step = float(results["top1"]), int(step)
        self.manager.save(checkpoint_number=step)
        if self.chief:
            run_folder.write_json(self.record, {"step": self.step, "top1": self.top1,
                                                "top5": results["top5"]})
        return True


def fit_stage(stage, model, strategy, train_pattern, stage_dir, num_classes, *,
              train_steps=None, epochs=None, steps_per_epoch=None, batch_size=64,
              optimizer=None, weight_decay=1e-4,
              checkpoint_every_steps=500, max_checkpoints=3, log_every_steps=20,
              jit_compile=False, data_fn=None, seed=0, checkpoint_input_pipeline=False,
              eval_every_steps=None, evaluate_fn=None, stop=None, class_names=None,
              precise_bn_batches=0):
    """Trains `model` for `train_steps` optimizer steps (resuming from `stage_dir`).

    Args:
        stage: "stage1" or "stage2" (names the logs).
        model: a Keras model built in `strategy.scope()`, outputs a dict of logits.
        strategy: the `tf.distribute.Strategy`.
        train_pattern: TFRecord glob for `data_fn`.
        stage_dir: checkpoints and TensorBoard logs (`stage_dir/train`, `stage_dir/eval`).
        num_classes: K (labels are checked against it by the input pipeline).
        train_steps: total optimizer steps of the stage; or give `epochs` and
            `steps_per_epoch` (train_steps = epochs x steps_per_epoch, rounded).
        batch_size: global batch, split evenly over the replicas.
        optimizer: a Keras optimizer or a factory (gin: `@keras.optimizers.SGD`); built in
            the strategy's scope. Default SGD(0.01, momentum 0.9): the learning rate is
            Sec. 5.2's; the paper states no momentum (0.9 is the ResNet value, He et al.).
        weight_decay: L2 factor on every kernel (0 switches it off; the default 1e-4 is the
            ResNet value, not stated in the paper).
        checkpoint_every_steps, max_checkpoints: checkpoint frequency and how many are kept.
        log_every_steps: progress line and TensorBoard summaries.
        jit_compile: XLA for the train step (off for MirroredStrategy over CPU devices).
        data_fn: `fn(pattern, batch_size, input_context=..., seed=..., num_classes=...)`,
            default `lgd_tf.data.train_dataset`.
        seed: seed of the input pipeline.
        checkpoint_input_pipeline: also checkpoint the input iterator (same data order after
            a resume; its state holds the shuffle buffer, so keep it off for big data).
        eval_every_steps: run `evaluate_fn` every this many steps (None: never).
        evaluate_fn: `evaluate_fn(model, summary_dir=..., step=...)` -> dict with "top1",
            "top5" (video-level evaluation, which also writes the eval scalars).
        stop: an object with `is_set()`; when set, a checkpoint is saved at the current step
            and `Interrupted` is raised (the object's `reason`, if any, names the signal).
        class_names: passed to `data_fn` (label strings checked) unless None.
        precise_bn_batches: N > 0: once the stage has reached `train_steps` (also when it
            was already there), every BatchNorm's moving statistics are recomputed over the
            first N global batches of a fresh `data_fn` pipeline (same settings and seed),
            as PySlowFast's precise BN (`precise_bn.recompute_batch_norm_statistics`). The
            checkpoints keep the moving statistics; the model returned (and saved as the
            stage's .keras) has the precise ones. 0: off.

    Returns:
        StageResult.

    Raises:
        TrainingError: bad settings or data; RunFailure: the loss diverged, a checkpoint
        could not be written, a worker of the cluster was lost; Interrupted: `stop` was set.
    """
    data_fn = data_fn or data.train_dataset
    if train_steps is None:
        if epochs is None or steps_per_epoch is None:
            raise TrainingError(f"{stage}: set fit_stage.train_steps, or fit_stage.epochs and "
                                "fit_stage.steps_per_epoch")
        train_steps = round(float(epochs) * int(steps_per_epoch))
    train_steps = int(train_steps)
    if train_steps < 0:
        raise TrainingError(f"{stage}: train_steps must be >= 0. Received: {train_steps}")
    if eval_every_steps is not None and int(eval_every_steps) < 1:
        raise TrainingError(f"{stage}: fit_stage.eval_every_steps must be >= 1 or None. "
                            f"Received: {eval_every_steps}")
    if int(precise_bn_batches) < 0:
        raise TrainingError(f"{stage}: fit_stage.precise_bn_batches must be >= 0. Received: "
                            f"{precise_bn_batches}")
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise TrainingError(f"{stage}: the global batch {batch_size} does not split over "
                            f"{replicas} replicas.")
    chief = strategy_lib.is_chief(strategy)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    write_dir = stage_dir if chief else os.path.join(
        stage_dir, f".tmp_{strategy_lib.worker_tag(strategy)}")

    extra = {} if class_names is None else {"class_names": list(class_names)}
    skips = None
    if "skip_counter" in inspect.signature(data_fn).parameters:  # counted for the summary
        with tf.device("/cpu:0"):
            skips = extra["skip_counter"] = data.SkipCounter()

    def dataset_fn(input_context):
        try:
            return data_fn(train_pattern, batch_size, input_context=input_context, seed=seed,
                           num_classes=num_classes, **extra)
        except ValueError as error:
            raise TrainingError(f"{stage}: training data: {error}") from None

    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    _check_clip_shape(stage, dataset.element_spec[0], model)
    with strategy.scope():
        optimizer = _as_optimizer(optimizer)
        if keras.mixed_precision.global_policy().name == "mixed_float16" and not isinstance(
                optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        iterator = iter(dataset)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    if checkpoint_input_pipeline and not multi_worker:
        try:
            checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, data=iterator)
        except ValueError:  # e.g. MirroredStrategy's DistributedIterator is not trackable
            if chief:
                warn(f"{stage}: the input pipeline's position is not checkpointed under "
                     f"{type(strategy).__name__}; a resumed run draws new batches")
    manager = tf.train.CheckpointManager(checkpoint, write_dir, max_to_keep=max_checkpoints)
    latest = tf.train.latest_checkpoint(stage_dir)
    if latest:
        _restore(checkpoint, latest, stage, stage_dir)
    step = start_step = int(optimizer.iterations.numpy())
    if chief and latest and step < train_steps:
        print(f"{stage}: resuming from step {step} ({latest})", flush=True)
    if step >= train_steps:
        precise = _precise_statistics(stage, model, strategy, dataset_fn, step,
                                      precise_bn_batches, batch_size, chief)
        return StageResult(stage, step, start_step, 0.0, float("nan"), float("nan"), 0.0,
                           precise_bn_batches=precise)

    replica_step = _make_replica_step(model, optimizer, batch_size, weight_decay, num_classes)
    jit = strategy_lib.xla_allowed(strategy, jit_compile)
    compiled_step = tf.function(replica_step, jit_compile=jit) if jit else replica_step

    @tf.function
    def train_step(iterator, stop_flag):
        clips, labels = next(iterator)
        per_replica = strategy.run(compiled_step, args=(clips, labels, stop_flag))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    writer = tf.summary.create_file_writer(os.path.join(stage_dir, "train")) if chief else None
    best = None
    if evaluate_fn is not None and eval_every_steps:
        if multi_worker:
            if chief:
                warn(f"{stage}: fit_stage.eval_every_steps is ignored under "
                     "MultiWorkerMirroredStrategy; evaluate the saved checkpoints with "
                     "lgd_tf.evaluate")
        else:
            best = _Best(checkpoint, stage_dir, chief)
    progress = _Progress(stage, train_steps, step, batch_size, max(1, log_every_steps), chief)
    started = time.perf_counter()
    last_saved = step if latest else None

    def save(step):
        try:
            manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as error:
            if isinstance(error, (tf.errors.FailedPreconditionError,
                                  tf.errors.InvalidArgumentError)):
                raise  # not the disk: something in the checkpoint cannot be saved
            # TensorFlow's half-written shards of this checkpoint: free their space.
            with contextlib.suppress(OSError, tf.errors.OpError):
                tf.io.gfile.rmtree(os.path.join(write_dir, f"ckpt-{step}_temp"))
            kept = (f"the last complete checkpoint (step {last_saved}) is kept"
                    if last_saved is not None else "no checkpoint was written yet")
            raise RunFailure(f"{stage}: cannot write checkpoint {step} in {write_dir}: "
                             f"{run_folder.failure_reason(error)}; {kept}") from None
        if writer is not None:
            writer.flush()
        return step

    def stop_requested():
        return bool(stop is not None and stop.is_set())

    losses = []
    while step < train_steps:
        try:
            stats = train_step(iterator, tf.constant(float(stop_requested())))
            stats = {k: v.numpy() for k, v in stats.items()}
            stop_votes = stats.pop("stop")
        except (StopIteration, tf.errors.OutOfRangeError):
            raise TrainingError(f"{stage}: the training data ran out at step {step} "
                                f"({train_pattern} yields no batch of {batch_size}).") from None
        except tf.errors.InvalidArgumentError as error:
            line = data_error(error)  # a bad record, named by the pipeline
            if line is None:
                raise
            raise TrainingError(line) from None
        except tf.errors.DataLossError as error:
            raise TrainingError(f"{stage}: training data {train_pattern}: "
                                f"{one_line(error)}") from None
        except _LOST_PEER as error:
            if not multi_worker:
                raise
            kept = (f"the last checkpoint is step {last_saved}" if last_saved is not None
                    else "no checkpoint was written yet")
            raise RunFailure(
                f"{stage}: lost {_lost_task(error)} of the cluster at step {step + 1} "
                f"({type(error).__name__}); {kept}. Restart every worker with the same "
                "command to resume") from None
        step += 1
        loss = sum(v for k, v in stats.items() if k.startswith("loss/")) / stats["count"]
        if not np.isfinite(loss):
            kept = (f"the last good checkpoint (step {last_saved}) is kept in {stage_dir}"
                    if last_saved is not None else "no checkpoint was written yet")
            raise RunFailure(f"{stage}: the loss is {loss} at step {step}; training stopped "
                             f"and {kept}. Lower the learning rate or check the data.")
        losses.append(loss)
        progress.update(step, stats, _learning_rate(optimizer), writer)
        if stop_votes > 0:
            last_saved = save(step)
            reason = getattr(stop, "reason", None) or "a stop request"
            raise Interrupted(f"{stage}: stopped by {reason} at step {step}/{train_steps}; "
                              f"checkpoint saved in {stage_dir}; rerun the same command to "
                              "resume")
        if step % max(1, checkpoint_every_steps) == 0 or step == train_steps:
            last_saved = save(step)
        if best is not None and step % int(eval_every_steps) == 0:
            results = evaluate_fn(model, summary_dir=os.path.join(stage_dir, "eval"),
                                  step=step)
            note = ("best so far, kept in " + best.dir if best.update(step, results) else
                    f"best {100 * best.top1:.1f}% at step {best.step}")
            print(f"{stage}: eval at step {step}: video-level top-1 "
                  f"{100 * results['top1']:.1f}% ({note})", flush=True)
    seconds = time.perf_counter() - started
    precise = _precise_statistics(stage, model, strategy, dataset_fn, step, precise_bn_batches,
                                  batch_size, chief)
    if writer is not None:
        writer.close()
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    skipped = skips.count if skips is not None else 0
    if skipped and chief:
        print(f"{stage}: {skipped} bad records skipped (ignore_errors; each named above)")
    sys.stdout.flush()
    last = progress.last
    return StageResult(stage, step, start_step, seconds, float(np.mean(losses[-10:])),
                       last.get("top1", float("nan")),
                       (step - start_step) * batch_size / max(seconds, 1e-9), skipped, precise)


def _precise_statistics(stage, model, strategy, dataset_fn, step, num_batches, batch_size,
                        chief):
    """Precise BN statistics of a trained stage (nothing when off or for a 0-step stage);
    returns the number of batches used."""
    if not num_batches or step <= 0:
        return 0
    started = time.perf_counter()
    try:
        count = precise_bn.recompute_batch_norm_statistics(
            model, dataset_fn(None), int(num_batches), strategy=strategy)
    except ValueError as error:
        raise TrainingError(f"{stage}: precise BatchNorm statistics: {one_line(error)}") from None
    if chief:
        print(f"{stage}: precise BatchNorm statistics from {count} training batches of "
              f"{batch_size} clips ({time.perf_counter() - started:.1f}s)", flush=True)
    return count


def _restore(checkpoint, path, stage, stage_dir):
    """Restores `path`; a checkpoint of another model is one line, not a restore traceback."""
    try:
        checkpoint.restore(path).expect_partial()
    except (ValueError, AssertionError, tf.errors.OpError) as error:
        raise TrainingError(
            f"{stage_dir} holds a {stage} checkpoint of another model ({one_line(error)}); "
            "train into a new --model_dir, or use the configuration it was trained "
            "with") from None
    logging.info("%s: restored %s", stage, path)
