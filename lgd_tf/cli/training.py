"""What `lgd_tf.train` and `lgd_tf.evaluate` do, from gin config to results.

train: parse the config, pick the strategy, lock the run folder, resolve the data, run the two
stages (each in its gin scope, stopped cleanly by SIGTERM / SIGINT), write the operative config
after each stage, and evaluate the last stage (result files, eval scalars and the confusion
figure in TensorBoard).
"""

import collections
import contextlib
import os
import time

import tensorflow as tf

from lgd_tf.cli import configs, signals
from lgd_tf.training import evaluation, run_folder
from lgd_tf.training import strategy as strategy_lib


def _split_cpu(num_cpu_devices):
    if num_cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices)


TrainOutcome = collections.namedtuple(
    "TrainOutcome", ["results", "model", "sources", "eval_results"])


def train(model_dir, gin_files, gin_bindings=(), gin_search_paths=(), *,
          strategy_name="default", tpu=None, num_cpu_devices=0, evaluate=True):
    """The train command: parses the config, then `train_configured`."""
    configs.parse(gin_files, gin_bindings, gin_search_paths)
    _split_cpu(num_cpu_devices)
    strategy = strategy_lib.get_strategy(strategy_name, tpu=tpu)
    return train_configured(model_dir, strategy, evaluate=evaluate)


def train_configured(model_dir, strategy, *, evaluate=True, **overrides):
    """Trains with the parsed gin config; returns a `TrainOutcome` (on the chief; None on
    other workers).

    The chief holds the run folder's lock throughout; SIGTERM / SIGINT stop the running
    stage with a checkpoint. `overrides` go to `fit_two_stage` (e.g. `stages=...`).
    """
    chief = strategy_lib.is_chief(strategy)
    run = run_folder.RunFolder(model_dir)
    lock = run.locked() if chief else contextlib.nullcontext(run)
    with lock, signals.stop_on_signals() as stop:
        started = time.perf_counter()
        sources = configs.call(configs.data_sources, need_eval=False)
        if chief:
            print(f"data: {sources.num_classes} classes, train {sources.train_pattern} "
                  f"(ready in {time.perf_counter() - started:.1f}s)", flush=True)

        def evaluate_fn(model, stage, **kwargs):
            return configs.call(configs.evaluate_video_level, run.path, sources, model, stage,
                                write_files=False, **kwargs)

        def after_stage(stage):
            del stage
            run_folder.write_text(run.file(run_folder.OPERATIVE_CONFIG),
                                  configs.operative_config_text())

        results, model = configs.call(
            configs.fit_two_stage, run, strategy, sources, fit_stage_fn=configs.fit_stage,
            stage_scope=configs.STAGE_SCOPE, video_spec_fn=configs.video_spec,
            evaluate_fn=evaluate_fn if sources.eval_pattern else None, stop=stop,
            after_stage=after_stage, **overrides)
        if not chief:
            return None
        eval_results = None
        if evaluate and sources.eval_pattern:
            stage = list(results)[-1]
            print(f"evaluating {stage} on {sources.eval_pattern}", flush=True)
            with configs.STAGE_SCOPE(stage):
                eval_results = configs.call(
                    configs.evaluate_video_level, run.path, sources, model, stage,
                    summary_dir=os.path.join(run.stage_dir(stage), "eval"),
                    step=results[stage].steps)
            print(evaluation.format_results(eval_results), flush=True)
        return TrainOutcome(results, model, sources, eval_results)


def evaluate(model_dir, gin_files, gin_bindings=(), gin_search_paths=(), *, stage=None,
             fuse_with=None, fusion_weight=0.5):
    """Runs the evaluate command; returns the results dict (also in model_dir).

    The eval scalars and the confusion figure also go to TensorBoard, beside those of the
    evaluations during training: `<stage>/eval` (`<stage>/eval_fused` with `fuse_with`), at
    the step of the stage's last checkpoint (0 without one).
    """
    configs.parse(gin_files, gin_bindings, gin_search_paths)
    sources = configs.call(configs.data_sources, need_train=False)
    model, stage = evaluation.load_stage_model(model_dir, stage)
    stage_dir = run_folder.RunFolder(model_dir).stage_dir(stage)
    latest = tf.train.latest_checkpoint(stage_dir)
    step = int(latest.rsplit("-", 1)[1]) if latest else 0
    summary_dir = os.path.join(stage_dir, "eval_fused" if fuse_with else "eval")
    with configs.STAGE_SCOPE(stage):
        results = configs.call(configs.evaluate_video_level, model_dir, sources, model, stage,
                               fuse_with=fuse_with, fusion_weight=fusion_weight,
                               summary_dir=summary_dir, step=step)
    print(f"TensorBoard: eval scalars at step {step} in {summary_dir}", flush=True)
    return results
