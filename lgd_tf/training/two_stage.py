"""The two-stage fit of LGD networks (Sec. 4.3) and where its data comes from.

Stage 1 trains the backbone with the two softmax heads of Eq. 6; stage 2 builds the model with
the combination classifier (Eq. 4-5, 7), copies stage 1's backbone into it and tunes the whole
network. Each stage's model and fit are made inside `stage_scope(stage)`, so a configuration
layer can give one stage its own settings (the commands use gin scopes: `stage2/...`).

The model_dir is a `run_folder.RunFolder` (layout there). Before anything is written, the
run's class names and each stage's model architecture are checked against the folder's
run.json: a rerun with another model or other classes is refused.
"""

import collections
import contextlib
import functools
import os

import keras
import tensorflow as tf

from lgd_tf import data
from lgd_tf.data import reader
from lgd_tf.models import LGDClassifier, load_lgd_weights
from lgd_tf.runs import run_folder
from lgd_tf.training import evaluation, loop, precision
from lgd_tf.training import strategy as strategy_lib
from lgd_tf.training.errors import TrainingError, one_line, warn

STAGES = ("stage1", "stage2")

DataSources = collections.namedtuple(
    "DataSources", ["train_pattern", "eval_pattern", "num_classes", "class_names"])


def _check_pattern(kind, pattern):
    """The files of a data flag's pattern (`reader.list_files`); TrainingError if it is bad."""
    try:
        return reader.list_files(pattern, kind=kind, need_records=True)
    except ValueError as error:
        raise TrainingError(str(error)) from None


def data_sources(train_pattern=None, eval_pattern=None, num_classes=None,
                 class_names_file=None, demo_cache_dir=None, *, need_train=True,
                 need_eval=True, build_demo_fn=None):
    """Resolves the data: TFRecord patterns, or the demo set when no pattern is given.

    Args:
        train_pattern, eval_pattern: globs (comma-separated lists allowed) of shards.
        num_classes: K; checked against the class names and the demo set.
        class_names_file: one name per line; default the class names file next to the
            train shards (written by the TFRecord builder), else "0".."K-1".
        demo_cache_dir: with no pattern given, `build_demo_fn(dir)` (built once, cached)
            supplies both patterns and the class names.
        need_train, need_eval: which patterns must exist (evaluation needs only eval).
        build_demo_fn: default `lgd_tf.data.build_demo_dataset`.

    Returns:
        `DataSources`.
    """
    if num_classes is None:
        raise TrainingError("set the number of classes: data_sources.num_classes (gin: "
                            "NUM_CLASSES = ...)")
    num_classes = int(num_classes)
    class_names = None
    if train_pattern is None and eval_pattern is None and demo_cache_dir:
        cache = os.path.expanduser(demo_cache_dir)
        demo = (build_demo_fn or data.build_demo_dataset)(cache)
        if demo.num_classes != num_classes:
            raise TrainingError(f"NUM_CLASSES is {num_classes} but the demo data set has "
                                f"{demo.num_classes} classes")
        train_pattern, eval_pattern = demo.train_pattern, demo.eval_pattern
        class_names = list(demo.class_names)
    for kind, pattern, needed in (("train", train_pattern, need_train),
                                  ("eval", eval_pattern, need_eval)):
        if needed and not pattern:
            raise TrainingError(f"no {kind} data: set data_sources.{kind}_pattern (e.g. "
                                f"--gin_bindings=\"{kind.upper()}_PATTERN='/data/{kind}-*'\")")
        if needed:
            _check_pattern(kind, pattern)
    if class_names is None:
        anchor = train_pattern or eval_pattern
        path = class_names_file or run_folder.class_names_path(
            os.path.dirname(anchor.split(",")[0]))
        class_names = run_folder.read_class_names(path, num_classes)
        if class_names is None and class_names_file:
            raise TrainingError(f"data_sources.class_names_file {class_names_file} not found")
        class_names = class_names or [str(i) for i in range(num_classes)]
    return DataSources(train_pattern, eval_pattern, num_classes, class_names)


def _init_stage2_backbone(model, previous, run):
    """Stage 2 starts from stage 1's backbone (Sec. 4.3)."""
    if previous is not None:
        model.get_layer("backbone").set_weights(previous.get_layer("backbone").get_weights())
        return "stage 1 of this run"
    path = run.stage_model("stage1")
    if tf.io.gfile.exists(path):
        load_lgd_weights(model, path)
        return path
    return None


def _build(stage, model_fn, strategy, stage_scope, num_classes):
    with stage_scope(stage), strategy.scope():
        try:
            model = model_fn(head=stage)
        except ValueError as error:
            raise TrainingError(f"{stage}: model: {one_line(error)}") from None
    if getattr(model, "num_classes", num_classes) != num_classes:
        raise TrainingError(f"the model has {model.num_classes} classes but the data has "
                            f"{num_classes} (set NUM_CLASSES)")
    return model


def fit_two_stage(model_dir, strategy, sources, *, model_fn=None, stages=STAGES, seed=0,
                  mixed_precision=None, fit_stage_fn=None, stage_scope=None,
                  evaluate_fn=None, stop=None, after_stage=None, video_spec_fn=None):
    """Runs the stages in order, each resumable; returns ({stage: StageResult}, model).

    Args:
        model_dir: output folder, a path or a `run_folder.RunFolder`.
        strategy: a `tf.distribute.Strategy` (`strategy.get_strategy`).
        sources: `DataSources` (`data_sources`).
        model_fn: builder called as `model_fn(head=stage)` (e.g. `lgd_tf.models.lgd3d`
            with its arguments bound).
        stages: which stages to run: both, ("stage1",) or ("stage2",) (stage 2 alone starts
            from model_dir/stage1.keras if present, else from the builder's weights).
        seed: Keras seed (initialisation) and input pipeline seed.
        mixed_precision: None, "mixed_bfloat16" or "mixed_float16" (float16 adds loss
            scaling).
        fit_stage_fn: `loop.fit_stage` (default) or a version with more arguments bound.
        stage_scope: `stage_scope(stage)` -> context manager entered around each stage's
            model building and fit (the commands give gin's `config_scope`).
        evaluate_fn: `evaluate_fn(model, stage, summary_dir=..., step=...)` -> results dict,
            for `fit_stage(eval_every_steps=...)`; default `evaluation.evaluate_video_level`
            on `sources` without writing result files.
        stop: an object with `is_set()` (e.g. `threading.Event`); when set, the running stage
            saves a checkpoint and raises `Interrupted`.
        after_stage: `after_stage(stage)` called on the chief once a stage's model is saved
            (the commands write the operative config there).
        video_spec_fn: `video_spec_fn(architecture)` -> the run's video spec
            (`run_folder.video_spec`), called in the last stage's scope with that stage's
            architecture; default `run_folder.video_spec` with the pipelines' defaults. The
            spec goes to run.json and into every stage model (`lgd_tf.models.video_spec`).

    Returns:
        ({stage: StageResult}, the last stage's model).
    """
    stages = _check_stages(model_fn, stages)
    run = model_dir if isinstance(model_dir, run_folder.RunFolder) else (
        run_folder.RunFolder(model_dir))
    fit_stage_fn = fit_stage_fn or loop.fit_stage
    stage_scope = stage_scope or (lambda stage: contextlib.nullcontext())
    if evaluate_fn is None and sources.eval_pattern:
        evaluate_fn = functools.partial(_evaluate_without_files, run.path, sources)
    chief = strategy_lib.is_chief(strategy)
    keras.utils.set_random_seed(seed)
    _set_policy(mixed_precision, chief)
    try:
        models = _prepare_run(run, strategy, sources, model_fn, stages, stage_scope,
                              video_spec_fn, chief)
        results, previous, model = {}, None, None
        for stage in stages:
            model = models[stage]
            if stage == "stage2":
                origin = _init_stage2_backbone(model, previous, run)
                if chief:
                    print(f"stage2: backbone from {origin or 'the builder (no stage 1 model)'}",
                          flush=True)
            with stage_scope(stage):
                results[stage] = fit_stage_fn(
                    stage, model, strategy, sources.train_pattern, run.stage_dir(stage),
                    sources.num_classes, seed=seed, evaluate_fn=_bind_stage(evaluate_fn, stage),
                    stop=stop, class_names=evaluation.label_check_names(sources.class_names))
            if chief:
                _finish_stage(run, stage, model, results[stage], after_stage)
            previous = model
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return results, model


def _check_stages(model_fn, stages):
    """The stages to run, checked: a non-empty ordered subset of STAGES (and a model)."""
    if model_fn is None:
        raise TrainingError("set fit_two_stage.model_fn (gin: lgd_tf.training.fit_two_stage."
                            "model_fn = @lgd_tf.models.lgd3d)")
    stages = tuple(stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages or list(stages) != sorted(stages):
        raise TrainingError(f"fit_two_stage.stages must be a non-empty ordered subset of "
                            f"{STAGES}. Received: {stages}")
    return stages


def _evaluate_without_files(model_dir, sources, model, stage, **kwargs):
    """The default evaluation during training: video-level, no result files written."""
    return evaluation.evaluate_video_level(model_dir, sources, model, stage, write_files=False,
                                           **kwargs)


def _set_policy(mixed_precision, chief):
    """Sets the global mixed-precision policy (None: keep float32) and warns where it is slow."""
    if not mixed_precision:
        return
    keras.mixed_precision.set_global_policy(mixed_precision)
    warning = precision.policy_warning(mixed_precision)
    if warning and chief:
        warn(warning)


def _prepare_run(run, strategy, sources, model_fn, stages, stage_scope, video_spec_fn, chief):
    """Builds every stage's model first and checks the run folder against them before
    anything is written; then records the run (chief). Returns {stage: model}."""
    models = {stage: _build(stage, model_fn, strategy, stage_scope, sources.num_classes)
              for stage in stages}
    architectures = {stage: run_folder.model_architecture(m) for stage, m in models.items()}
    run.check(sources.class_names, architectures)
    spec = _video_spec(video_spec_fn, stage_scope, stages[-1], architectures[stages[-1]])
    for model in models.values():
        if isinstance(model, LGDClassifier):
            model.video_spec = spec
    if chief:
        run.makedirs()
        run.record(sources.class_names, architectures, video_spec=spec,
                   data={"train_pattern": sources.train_pattern,
                         "eval_pattern": sources.eval_pattern})
    return models


def _finish_stage(run, stage, model, result, after_stage):
    """Saves the stage's model (chief) unless a finished stage was only rerun, then marks the
    stage done and calls `after_stage`."""
    final = run.stage_model(stage)
    if result.steps > result.start_step or not tf.io.gfile.exists(final):
        run_folder.save_model(model, final, what=run.what(final))
    elif result.precise_bn_batches:
        # A finished stage rerun: the saved model's statistics are the stage's.
        load_lgd_weights(model, final)
    run.finish_stage(stage)
    if after_stage is not None:
        after_stage(stage)


def _video_spec(video_spec_fn, stage_scope, stage, architecture):
    """The run's video spec, from the settings of the last stage (the one evaluated)."""
    with stage_scope(stage):
        if video_spec_fn is None:
            return run_folder.video_spec(architecture)
        return video_spec_fn(architecture)


def _bind_stage(evaluate_fn, stage):
    if evaluate_fn is None:
        return None
    return lambda model, **kwargs: evaluate_fn(model, stage, **kwargs)
