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

from lgd_io import files
from lgd_tf.cli import configs, precise_bn, signals
from lgd_tf.runs import run_folder
from lgd_tf.training import evaluation
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
            path = run.file(run_folder.OPERATIVE_CONFIG)
            run_folder.write_text(path, configs.operative_config_text(), what=run.what(path))

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


def evaluate(model_dir, gin_files=(), gin_bindings=(), gin_search_paths=(), *, stage=None,
             fuse_with=None, fusion_weight=0.5, output_dir=None, precise_bn_batches=0,
             precise_bn_data=None, precise_bn_batch_size=16):
    """Runs the evaluate command; returns the results dict (also in model_dir, or output_dir).

    The run record (`run_folder.RunFolder.read_run`) gives the classes, the eval data and the
    evaluation sampling; `--gin_file` replaces it by a config (as before the record), and
    `--gin_bindings` override either. The data's class names must be the run's. Results are
    written into the run folder while holding its lock (refused while `train` holds it), or
    into `output_dir` only. The eval scalars and the confusion figure also go to TensorBoard:
    `<stage>/eval` (`<stage>/eval_fused` with `fuse_with`), at the step of the stage's last
    checkpoint (0 without one). `precise_bn_batches` > 0 recomputes the loaded model's
    BatchNorm statistics first (`precise_bn`; the run folder's files are not changed).
    """
    run = run_folder.RunFolder(model_dir)
    record = run.read_run()
    train_pattern = precise_bn.training_pattern(precise_bn_batches, precise_bn_data,
                                                model_dir, precise_bn_batch_size)
    stage = stage or (record.finished_stages[-1] if record.finished_stages else None)
    if stage is None or not tf.io.gfile.exists(run.stage_model(stage)):
        wanted = run_folder.stage_file(stage) if stage else "a finished stage"
        raise run_folder.BadInput(f"no trained model in {model_dir}: {wanted} is not there "
                                  "yet (train the run first, or give another --stage)")
    if gin_files:
        configs.parse(gin_files, gin_bindings, gin_search_paths)
        origin = f"--gin_file {', '.join(gin_files)}"
    else:
        configs.parse_record(record, gin_bindings)
        origin = "the run record" + (" and --gin_bindings" if gin_bindings else "")
    sources = _check_classes(configs.call(configs.data_sources, need_train=False), record)
    if output_dir and os.path.realpath(output_dir) == os.path.realpath(model_dir):
        output_dir = None  # the run folder itself: under its lock
    folder = output_dir or model_dir
    flag = "--output_dir" if output_dir else "--model_dir"
    if output_dir:
        try:
            tf.io.gfile.makedirs(output_dir)
        except (OSError, tf.errors.OpError) as error:
            raise run_folder.BadInput(f"--output_dir={output_dir}: cannot create it: "
                                      f"{files.failure_reason(error)}") from None
    for name in run_folder.EVAL_FILES:
        files.check_output(os.path.join(folder, name), flag)
    lock = run.locked(in_use_hint="wait for that run to end, or give --output_dir to write "
                      "the results elsewhere") if not output_dir else (
        files.folder_lock(output_dir, lock_name=run_folder.LOCK))
    with lock:
        model, stage = evaluation.load_stage_model(model_dir, stage)
        if train_pattern:
            precise_bn.recompute(model, train_pattern, record.video_spec, precise_bn_batches,
                                 precise_bn_batch_size, len(record.class_names))
        sampling = configs.eval_sampling(stage)
        print(f"evaluating {run_folder.stage_file(stage)} of {model_dir} on "
              f"{sources.eval_pattern}: {sampling.get('num_clips')} clips x "
              f"{sampling.get('num_crops', 1)} crops at short side "
              f"{sampling.get('short_side')} (from {origin})", flush=True)
        latest = tf.train.latest_checkpoint(run.stage_dir(stage))
        step = int(latest.rsplit("-", 1)[1]) if latest else 0
        base = os.path.join(output_dir, stage) if output_dir else run.stage_dir(stage)
        summary_dir = os.path.join(base, "eval_fused" if fuse_with else "eval")
        with configs.STAGE_SCOPE(stage):
            results = configs.call(configs.evaluate_video_level, model_dir, sources, model,
                                   stage, fuse_with=fuse_with, fusion_weight=fusion_weight,
                                   summary_dir=summary_dir, step=step, output_dir=folder,
                                   output_flag=flag)
    print(f"TensorBoard: eval scalars at step {step} in {summary_dir}", flush=True)
    return results


def _check_classes(sources, record):
    """The data's class names must be the run's (by name); data without names of its own
    (no class names file: "0".."K-1") is taken to have the run's."""
    if evaluation.label_check_names(sources.class_names) is None and len(
            sources.class_names) == len(record.class_names):
        return sources._replace(class_names=list(record.class_names))
    what = run_folder.class_difference(record.class_names, sources.class_names,
                                       "in the run", "in the data")
    if what:
        raise run_folder.BadInput(
            f"the eval data {sources.eval_pattern} has other classes than the run "
            f"{record.path} ({what}); give data built with the run's class names, or "
            "evaluate the run trained on these classes")
    return sources
