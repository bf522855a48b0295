"""One stage of the two-stage fit (Sec. 4.3): a resumable training loop under a strategy.

Stage 1 minimises Eq. 6, CE(W_g g_L) + CE(W_x P(x_L)); stage 2 minimises Eq. 7, CE of the
combination classifier. The loss is whichever softmax cross-entropies the model's head outputs
(`{"global", "local"}` or `{"combined"}`), plus L2 weight decay (Caffe style, 0.5 * wd * |W|^2
on every kernel) when `weight_decay` > 0.

`fit_stage` (the gin entry point) builds a `StageConfig` (`stage_config`) and calls
`run_stage`: optimizer steps, each followed by the hooks of `lgd_tf.training.hooks`, one job
each. Checkpoints (`tf.train.CheckpointManager`: model, optimizer with its step counter,
optionally the input pipeline's position) are written every `checkpoint_every_steps` steps and
at the end; TensorFlow writes them to temporary names and renames, so a run killed at any
moment (SIGKILL included) resumes from the last saved step with the same command. A stop
request (the commands set it on SIGTERM / SIGINT) saves a checkpoint at the current step
first; under MultiWorkerMirroredStrategy the workers agree on it inside the step, so all of
them stop at the same step. With `eval_every_steps`, the video-level evaluation runs during
training, its scalars go to `stage_dir/eval/` and the checkpoint with the best eval top-1 is
kept in `stage_dir/best/` beside the latest ones.
"""

import collections
import functools
import inspect
import os
import re
import sys
import time

import keras
import tensorflow as tf
from absl import logging

from lgd_tf import data
from lgd_tf.models import class_probabilities
from lgd_tf.training import hooks
from lgd_tf.training import strategy as strategy_lib
from lgd_tf.training.errors import RunFailure, TrainingError, data_error, one_line, warn
from lgd_tf.training.stage_config import StageConfig

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


def fit_stage(stage, model, strategy, train_pattern, stage_dir, num_classes, *,
              train_steps=None, epochs=None, steps_per_epoch=None, batch_size=64,
              optimizer=None, weight_decay=1e-4,
              checkpoint_every_steps=500, max_checkpoints=3, log_every_steps=20,
              jit_compile=False, data_fn=None, seed=0, checkpoint_input_pipeline=False,
              eval_every_steps=None, evaluate_fn=None, stop=None, class_names=None,
              precise_bn_batches=0):
    """Trains `model` for `train_steps` optimizer steps (resuming from `stage_dir`).

    The gin entry point (`lgd_tf.training.fit_stage.<keyword>`, per stage
    `stage1/lgd_tf.training.fit_stage.<keyword>`): the keywords are the fields of
    `StageConfig` (documented there), which this builds before `run_stage`, except:
        model: a Keras model built in `strategy.scope()`, outputs a dict of logits.
        strategy: the `tf.distribute.Strategy`.
        evaluate_fn: `evaluate_fn(model, summary_dir=..., step=...)` -> dict with "top1",
            "top5" (video-level evaluation, which also writes the eval scalars), called
            every `eval_every_steps` steps.
        stop: an object with `is_set()`; when set, a checkpoint is saved at the current step
            and `Interrupted` is raised (the object's `reason`, if any, names the signal).

    Returns:
        StageResult.

    Raises:
        TrainingError: bad settings or data; RunFailure: the loss diverged, a checkpoint
        could not be written, a worker of the cluster was lost; Interrupted: `stop` was set.
    """
    config = StageConfig(
        stage, train_pattern, stage_dir, num_classes, train_steps=train_steps, epochs=epochs,
        steps_per_epoch=steps_per_epoch, batch_size=batch_size, optimizer=optimizer,
        weight_decay=weight_decay, checkpoint_every_steps=checkpoint_every_steps,
        max_checkpoints=max_checkpoints, log_every_steps=log_every_steps,
        jit_compile=jit_compile, data_fn=data_fn, seed=seed,
        checkpoint_input_pipeline=checkpoint_input_pipeline, eval_every_steps=eval_every_steps,
        class_names=class_names, precise_bn_batches=precise_bn_batches)
    return run_stage(config, model, strategy, evaluate_fn=evaluate_fn, stop=stop)


def run_stage(config, model, strategy, *, evaluate_fn=None, stop=None):
    """The loop of one stage (Sec. 4.3): optimizer steps until `config.train_steps`, each
    followed by the hooks (`lgd_tf.training.hooks`: loss check, progress, stop signal,
    checkpoint, evaluation), and their `end` at the last step (precise BatchNorm statistics,
    summaries closed). Arguments and errors as `fit_stage`; returns a `StageResult`."""
    run = _prepare(config, model, strategy)
    precise = hooks.PreciseBatchNorm(config.stage, model, strategy, run.dataset_fn,
                                     config.precise_bn_batches, config.batch_size, run.chief)
    step = run.start_step
    if step >= config.train_steps:  # already trained: only the end of the stage
        precise.end(step)
        return StageResult(config.stage, step, step, 0.0, float("nan"), float("nan"), 0.0,
                           precise_bn_batches=precise.batches)
    train_step = _train_step_fn(config, model, strategy, run.optimizer)
    stage = _stage_hooks(config, model, run, precise, evaluate_fn, stop)
    started = time.perf_counter()
    while step < config.train_steps:
        stats = _next_stats(config, run, train_step, stage.stop.requested(), step,
                            stage.checkpointer.last_saved)
        step += 1
        votes = stats.pop("stop")
        loss = sum(v for k, v in stats.items() if k.startswith("loss/")) / stats["count"]
        done = hooks.Step(step, stats, loss, votes)
        for hook in stage.all:
            hook.after_step(done)
    seconds = time.perf_counter() - started
    for hook in stage.all:
        hook.end(step)
    return _result(config, run, step, seconds, stage.progress, precise)


_Run = collections.namedtuple("_Run", ["chief", "multi_worker", "write_dir", "dataset_fn",
                                       "skips", "optimizer", "iterator", "manager", "latest",
                                       "start_step"])
_Hooks = collections.namedtuple("_Hooks", ["all", "progress", "stop", "checkpointer"])


def _prepare(config, model, strategy):
    """The stage's data, optimizer and checkpoint manager, restored from the latest
    checkpoint in `config.stage_dir` (workers other than the chief write elsewhere)."""
    stage, replicas = config.stage, strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise TrainingError(f"{stage}: the global batch {config.batch_size} does not split "
                            f"over {replicas} replicas.")
    chief = strategy_lib.is_chief(strategy)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    write_dir = config.stage_dir if chief else os.path.join(
        config.stage_dir, f".tmp_{strategy_lib.worker_tag(strategy)}")
    data_fn = config.data_fn or data.train_dataset
    extra = {} if config.class_names is None else {"class_names": list(config.class_names)}
    skips = None
    if "skip_counter" in inspect.signature(data_fn).parameters:  # counted for the summary
        with tf.device("/cpu:0"):
            skips = extra["skip_counter"] = data.SkipCounter()
    dataset_fn = functools.partial(_training_data, config, data_fn, extra)
    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    _check_clip_shape(stage, dataset.element_spec[0], model)
    with strategy.scope():
        optimizer = _as_optimizer(config.optimizer)
        if keras.mixed_precision.global_policy().name == "mixed_float16" and not isinstance(
                optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        iterator = iter(dataset)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    if config.checkpoint_input_pipeline and not multi_worker:
        try:
            checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, data=iterator)
        except ValueError:  # e.g. MirroredStrategy's DistributedIterator is not trackable
            if chief:
                warn(f"{stage}: the input pipeline's position is not checkpointed under "
                     f"{type(strategy).__name__}; a resumed run draws new batches")
    manager = tf.train.CheckpointManager(checkpoint, write_dir,
                                         max_to_keep=config.max_checkpoints)
    latest = tf.train.latest_checkpoint(config.stage_dir)
    if latest:
        _restore(checkpoint, latest, stage, config.stage_dir)
    start_step = int(optimizer.iterations.numpy())
    if chief and latest and start_step < config.train_steps:
        print(f"{stage}: resuming from step {start_step} ({latest})", flush=True)
    return _Run(chief, multi_worker, write_dir, dataset_fn, skips, optimizer, iterator,
                manager, latest, start_step)


def _training_data(config, data_fn, extra, input_context):
    """The training pipeline of one input context (None: the whole global batch)."""
    try:
        return data_fn(config.train_pattern, config.batch_size, input_context=input_context,
                       seed=config.seed, num_classes=config.num_classes, **extra)
    except ValueError as error:
        raise TrainingError(f"{config.stage}: training data: {error}") from None


def _train_step_fn(config, model, strategy, optimizer):
    """A tf.function: the next global batch through every replica; the statistics summed."""
    replica_step = _make_replica_step(model, optimizer, config.batch_size,
                                      config.weight_decay, config.num_classes)
    jit = strategy_lib.xla_allowed(strategy, config.jit_compile)
    compiled_step = tf.function(replica_step, jit_compile=jit) if jit else replica_step

    @tf.function
    def train_step(iterator, stop_flag):
        clips, labels = next(iterator)
        per_replica = strategy.run(compiled_step, args=(clips, labels, stop_flag))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    return train_step


def _next_stats(config, run, train_step, stop_flag, step, last_saved):
    """Runs optimizer step `step + 1`; its statistics as NumPy values. The data's errors and
    a lost worker of the cluster become one line."""
    stage = config.stage
    try:
        stats = train_step(run.iterator, tf.constant(stop_flag))
        return {k: v.numpy() for k, v in stats.items()}
    except (StopIteration, tf.errors.OutOfRangeError):
        raise TrainingError(f"{stage}: the training data ran out at step {step} "
                            f"({config.train_pattern} yields no batch of "
                            f"{config.batch_size}).") from None
    except tf.errors.InvalidArgumentError as error:
        line = data_error(error)  # a bad record, named by the pipeline
        if line is None:
            raise
        raise TrainingError(line) from None
    except tf.errors.DataLossError as error:
        raise TrainingError(f"{stage}: training data {config.train_pattern}: "
                            f"{one_line(error)}") from None
    except _LOST_PEER as error:
        if not run.multi_worker:
            raise
        kept = (f"the last checkpoint is step {last_saved}" if last_saved is not None
                else "no checkpoint was written yet")
        raise RunFailure(
            f"{stage}: lost {_lost_task(error)} of the cluster at step {step + 1} "
            f"({type(error).__name__}); {kept}. Restart every worker with the same "
            "command to resume") from None


def _stage_hooks(config, model, run, precise, evaluate_fn, stop):
    """The hooks of a stage that has steps to run, in the order they are called."""
    stage, total = config.stage, config.train_steps
    writer = (tf.summary.create_file_writer(os.path.join(config.stage_dir, "train"))
              if run.chief else None)
    checkpointer = hooks.Checkpointer(
        stage, run.manager, run.write_dir, total, config.checkpoint_every_steps, writer=writer,
        last_saved=run.start_step if run.latest else None, remove_at_end=not run.chief)
    progress = hooks.Progress(stage, total, run.start_step, config.batch_size,
                              config.log_every_steps, optimizer=run.optimizer, writer=writer,
                              enabled=run.chief)
    stop_signal = hooks.StopSignal(stage, stop, checkpointer, total, config.stage_dir)
    every = [hooks.FiniteLoss(stage, config.stage_dir, checkpointer), precise, progress,
             stop_signal, checkpointer]
    if evaluate_fn is not None and config.eval_every_steps:
        if not run.multi_worker:
            best = hooks.BestModel(run.manager.checkpoint, config.stage_dir, run.chief)
            every.append(hooks.PeriodicEvaluation(stage, model, evaluate_fn,
                                                  config.eval_every_steps, config.stage_dir,
                                                  best))
        elif run.chief:
            warn(f"{stage}: fit_stage.eval_every_steps is ignored under "
                 "MultiWorkerMirroredStrategy; evaluate the saved checkpoints with "
                 "lgd_tf.evaluate")
    return _Hooks(every, progress, stop_signal, checkpointer)


def _result(config, run, step, seconds, progress, precise):
    """The `StageResult` of a stage that ran (and the count of bad records it skipped)."""
    skipped = run.skips.count if run.skips is not None else 0
    if skipped and run.chief:
        print(f"{config.stage}: {skipped} bad records skipped (ignore_errors; each named "
              "above)")
    sys.stdout.flush()
    return StageResult(config.stage, step, run.start_step, seconds, progress.recent_loss(),
                       progress.last.get("top1", float("nan")),
                       (step - run.start_step) * config.batch_size / max(seconds, 1e-9),
                       skipped, precise.batches)


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
