"""The hooks of a stage's training loop (Sec. 4.3), each with one job.

`loop.run_stage` calls `hook.after_step(step)` after every optimizer step, with a `Step` (the
step's number counted from the start of the stage, its statistics summed over the global
batch, the mean loss, and the replicas' stop votes), and `hook.end(number)` once the stage
has reached its last step. The hooks are called in the order of the list: the loss check
first (a diverged step is neither logged nor saved), then the progress line, the stop signal,
the periodic checkpoint and the periodic evaluation, as the loop did before its parts were
named. `PreciseBatchNorm` works only at the end, before the summaries are closed.
"""

import collections
import contextlib
import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from lgd_io import files
from lgd_tf.training import precise_bn
from lgd_tf.training.errors import Interrupted, RunFailure, TrainingError, one_line

Step = collections.namedtuple("Step", ["number", "stats", "loss", "stop_votes"])


class Hook:
    """Does nothing; a hook overrides what it needs."""

    def after_step(self, step):
        """Called after optimizer step `step.number` (a `Step`)."""

    def end(self, number):
        """Called once the stage has reached its last step, `number`."""


class Checkpointer(Hook):
    """A checkpoint every `every` steps and at the stage's last step (`total`).

    `tf.train.CheckpointManager` writes to temporary names and renames, so a run killed at
    any moment resumes from the last saved step with the same command. `last_saved` is the
    step of the last complete checkpoint (None: none yet), which the loop's errors name. A
    checkpoint that cannot be written (a full disk) is one `RunFailure`, its half-written
    shards removed. A worker other than the chief writes into its own `write_dir`, removed at
    the end (`remove_at_end`).
    """

    def __init__(self, stage, manager, write_dir, total, every, *, writer=None, last_saved=None,
                 remove_at_end=False):
        self.stage, self.manager, self.write_dir = stage, manager, write_dir
        self.total, self.every = total, max(1, every)
        self.writer, self.last_saved, self.remove_at_end = writer, last_saved, remove_at_end

    def save(self, step):
        """Saves the checkpoint of step `step` (and flushes the summaries)."""
        try:
            self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as error:
            if isinstance(error, (tf.errors.FailedPreconditionError,
                                  tf.errors.InvalidArgumentError)):
                raise  # not the disk: something in the checkpoint cannot be saved
            # TensorFlow's half-written shards of this checkpoint: free their space.
            with contextlib.suppress(OSError, tf.errors.OpError):
                tf.io.gfile.rmtree(os.path.join(self.write_dir, f"ckpt-{step}_temp"))
            kept = (f"the last complete checkpoint (step {self.last_saved}) is kept"
                    if self.last_saved is not None else "no checkpoint was written yet")
            raise RunFailure(f"{self.stage}: cannot write checkpoint {step} in {self.write_dir}: "
                             f"{files.failure_reason(error)}; {kept}") from None
        if self.writer is not None:
            self.writer.flush()
        self.last_saved = step

    def after_step(self, step):
        if step.number % self.every == 0 or step.number == self.total:
            self.save(step.number)

    def end(self, number):
        if self.remove_at_end:
            shutil.rmtree(self.write_dir, ignore_errors=True)


class FiniteLoss(Hook):
    """Stops the stage with a `RunFailure` when the loss is NaN or infinite."""

    def __init__(self, stage, stage_dir, checkpointer):
        self.stage, self.stage_dir, self.checkpointer = stage, stage_dir, checkpointer

    def after_step(self, step):
        if np.isfinite(step.loss):
            return
        last_saved = self.checkpointer.last_saved
        kept = (f"the last good checkpoint (step {last_saved}) is kept in {self.stage_dir}"
                if last_saved is not None else "no checkpoint was written yet")
        raise RunFailure(f"{self.stage}: the loss is {step.loss} at step {step.number}; "
                         f"training stopped and {kept}. Lower the learning rate or check "
                         "the data.")


class StopSignal(Hook):
    """A stop request (the commands set it on SIGTERM / SIGINT): checkpoint, then `Interrupted`.

    `requested()` is the flag the train step takes; the step sums it over the replicas and
    workers, so under MultiWorkerMirroredStrategy every worker sees the vote of any of them
    and all stop at the same step. `stop` is an object with `is_set()` (None: never); its
    `reason`, if any, names the signal.
    """

    def __init__(self, stage, stop, checkpointer, total, stage_dir):
        self.stage, self.stop, self.checkpointer = stage, stop, checkpointer
        self.total, self.stage_dir = total, stage_dir

    def requested(self):
        """1.0 when a stop was requested on this worker, else 0.0."""
        return float(bool(self.stop is not None and self.stop.is_set()))

    def after_step(self, step):
        if step.stop_votes <= 0:
            return
        self.checkpointer.save(step.number)
        reason = getattr(self.stop, "reason", None) or "a stop request"
        raise Interrupted(f"{self.stage}: stopped by {reason} at step {step.number}/"
                          f"{self.total}; checkpoint saved in {self.stage_dir}; rerun the "
                          "same command to resume")


class Progress(Hook):
    """Every `every` steps (and at the last): TensorBoard scalars and, on the chief, a line
    with a bar, the losses, top-1/top-5, the learning rate, clips/s and the ETA.

    The values are means over the clips of the steps since the last line. `last` holds the
    last line's values and `recent_loss()` the mean loss of the last 10 steps (the stage's
    result).
    """

    def __init__(self, stage, total, start, global_batch, every, *, optimizer, writer=None,
                 enabled=True):
        self.stage, self.total, self.every, self.enabled = stage, total, max(1, every), enabled
        self.global_batch, self.optimizer, self.writer = global_batch, optimizer, writer
        self.window = collections.defaultdict(float)
        self.window_steps = 0
        self.window_start = self.start = time.perf_counter()
        self.start_step = start
        self.last = {}
        self.losses = collections.deque(maxlen=10)

    def recent_loss(self):
        return float(np.mean(self.losses))

    def after_step(self, step):
        self.losses.append(step.loss)
        for key, value in step.stats.items():
            self.window[key] += float(value)
        self.window_steps += 1
        if step.number % self.every and step.number != self.total:
            return
        elapsed = time.perf_counter() - self.window_start
        count = max(self.window["count"], 1.0)
        means = {k: v / count for k, v in self.window.items() if k != "count"}
        means["loss/total"] = sum(v for k, v in means.items() if k.startswith("loss/"))
        clips_per_second = self.window_steps * self.global_batch / max(elapsed, 1e-9)
        self.last = dict(means, clips_per_second=clips_per_second)
        learning_rate = learning_rate_of(self.optimizer)
        if self.writer is not None:
            scalars = dict(means, learning_rate=learning_rate, clips_per_second=clips_per_second)
            with self.writer.as_default(step=step.number):
                for key, value in scalars.items():
                    tf.summary.scalar(key, value)
        if self.enabled:
            print(self._line(step.number, means, learning_rate, clips_per_second), flush=True)
        self.window.clear()
        self.window_steps = 0
        self.window_start = time.perf_counter()

    def _line(self, step, means, learning_rate, clips_per_second):
        done = (step - self.start_step) / max(time.perf_counter() - self.start, 1e-9)
        eta = (self.total - step) / max(done, 1e-9)
        width = 20
        filled = int(width * step / self.total)
        bar = "=" * filled + (">" if filled < width else "") + "." * (width - filled - 1)
        heads = ", ".join(f"{k[5:]} {v:.3f}" for k, v in sorted(means.items())
                          if k.startswith("loss/") and k not in ("loss/total",))
        return (f"{self.stage} {step:>{len(str(self.total))}}/{self.total} [{bar[:width]}] "
                f"loss {means['loss/total']:.4f} ({heads}) top-1 {means['top1']:.3f} "
                f"top-5 {means['top5']:.3f} lr {learning_rate:.3g} "
                f"{clips_per_second:.1f} clips/s ETA {duration(eta)}")

    def end(self, number):
        if self.writer is not None:
            self.writer.close()


def duration(seconds):
    """"42s" or "3m05s"."""
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def learning_rate_of(optimizer):
    """The optimizer's current learning rate (NaN when it has none to read)."""
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except (TypeError, ValueError, AttributeError):
        return float("nan")


class BestModel:
    """The checkpoint with the best eval top-1 so far, in `stage_dir/best/` (and best.json,
    read back on a resume so that a rerun keeps comparing against the same best)."""

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
        """Keeps step `step` if its `results["top1"]` beats the best; returns whether it did."""
        if results["top1"] <= self.top1:
            return False
        self.top1, self.step = float(results["top1"]), int(step)
        self.manager.save(checkpoint_number=step)
        if self.chief:
            files.write_json(self.record, {"step": self.step, "top1": self.top1,
                                                "top5": results["top5"]})
        return True


class PeriodicEvaluation(Hook):
    """`evaluate_fn(model, summary_dir=stage_dir/eval, step=n)` every `every` steps (the
    video-level evaluation, which writes the eval scalars); `best` keeps the best checkpoint
    and a line reports the top-1."""

    def __init__(self, stage, model, evaluate_fn, every, stage_dir, best):
        self.stage, self.model, self.evaluate_fn = stage, model, evaluate_fn
        self.every, self.summary_dir, self.best = int(every), os.path.join(stage_dir, "eval"), best

    def after_step(self, step):
        if step.number % self.every:
            return
        results = self.evaluate_fn(self.model, summary_dir=self.summary_dir, step=step.number)
        best = self.best
        note = ("best so far, kept in " + best.dir if best.update(step.number, results) else
                f"best {100 * best.top1:.1f}% at step {best.step}")
        print(f"{self.stage}: eval at step {step.number}: video-level top-1 "
              f"{100 * results['top1']:.1f}% ({note})", flush=True)


class PreciseBatchNorm(Hook):
    """At the end of a stage that trained (or had already trained), every BatchNorm's moving
    statistics recomputed over the first `num_batches` global batches of a fresh training
    pipeline, `dataset_fn(None)` (PySlowFast's precise BN, `precise_bn`). `batches` is the
    number used (0: off, or a stage of 0 steps)."""

    def __init__(self, stage, model, strategy, dataset_fn, num_batches, batch_size, chief):
        self.stage, self.model, self.strategy, self.dataset_fn = stage, model, strategy, dataset_fn
        self.num_batches, self.batch_size, self.chief = int(num_batches), batch_size, chief
        self.batches = 0

    def end(self, number):
        if not self.num_batches or number <= 0:
            return
        started = time.perf_counter()
        try:
            self.batches = precise_bn.recompute_batch_norm_statistics(
                self.model, self.dataset_fn(None), self.num_batches, strategy=self.strategy)
        except ValueError as error:
            raise TrainingError(f"{self.stage}: precise BatchNorm statistics: "
                                f"{one_line(error)}") from None
        if self.chief:
            print(f"{self.stage}: precise BatchNorm statistics from {self.batches} training "
                  f"batches of {self.batch_size} clips ({time.perf_counter() - started:.1f}s)",
                  flush=True)
