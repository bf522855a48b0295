"""The two-stage fit of LGD networks (Sec. 4.3) and where its data comes from.

Stage 1 trains the backbone with the two softmax heads of Eq. 6; stage 2 builds the model with
the combination classifier (Eq. 4-5, 7), copies stage 1's backbone into it and tunes the whole
network. Each stage runs in the gin scope of its name, so `stage2/fit_stage.batch_size = 16` or
`stage2/lgd3d.num_frames = 128` (the Long setting) change one stage only.

model_dir layout: operative_config.gin, class_names.txt, stage1/ and stage2/ (checkpoints and
TensorBoard logs), stage1.keras / stage2.keras (the final model of each stage),
eval_results.json (see `evaluation`).
"""

import collections
import os
import time

import keras
import tensorflow as tf

import gin
from lgd_tf.training import files, loop
from lgd_tf.training import strategy as strategy_lib
from lgd_tf.training.errors import TrainingError, one_line

STAGES = ("stage1", "stage2")

DataSources = collections.namedtuple(
    "DataSources", ["train_pattern", "eval_pattern", "num_classes", "class_names"])


def _check_pattern(kind, pattern):
    found = sorted({f for p in pattern.split(",") for f in tf.io.gfile.glob(p.strip())})
    if not found:
        raise TrainingError(f"no file matches the {kind} data pattern {pattern!r}")
    for path in found:
        for _ in tf.data.TFRecordDataset(path).take(1):
            return found
    raise TrainingError(f"the {kind} data set is empty: the {len(found)} file(s) matching "
                        f"{pattern!r} hold no record")


def _read_class_names(path, num_classes):
    with tf.io.gfile.GFile(path) as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) != num_classes:
        raise TrainingError(f"NUM_CLASSES is {num_classes} but {path} lists {len(names)} "
                            "classes")
    return names


@gin.configurable(module="lgd_tf.training")
def data_sources(train_pattern=None, eval_pattern=None, num_classes=gin.REQUIRED,
                 class_names_file=None, demo_cache_dir=None, *, need_train=True,
                 need_eval=True):
    """Resolves the data: TFRecord patterns, or the demo set when no pattern is given.

    Args:
        train_pattern, eval_pattern: globs (comma-separated lists allowed) of shards.
        num_classes: K; checked against the class names and the demo set.
        class_names_file: one name per line; default `class_names.txt` next to the train
            shards (written by tfrecords/build_tfrecords.py), else "0".."K-1".
        demo_cache_dir: with no pattern given, `lgd_tf.data.build_demo_dataset(dir)` (built
            once, cached) supplies both patterns and the class names.
        need_train, need_eval: which patterns must exist (evaluation needs only eval).
    """
    from lgd_tf.training import gin_config

    num_classes = int(num_classes)
    class_names = None
    if train_pattern is None and eval_pattern is None and demo_cache_dir:
        cache = os.path.expanduser(demo_cache_dir)
        demo = gin_config.build_demo_dataset(cache)
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
        default = os.path.join(os.path.dirname(anchor.split(",")[0]), "class_names.txt")
        path = class_names_file or (default if tf.io.gfile.exists(default) else None)
        class_names = (_read_class_names(path, num_classes) if path
                       else [str(i) for i in range(num_classes)])
    return DataSources(train_pattern, eval_pattern, num_classes, class_names)


def write_operative_config(model_dir):
    files.write_text(os.path.join(model_dir, "operative_config.gin"),
                     gin.operative_config_str())


def _init_stage2_backbone(model, previous, model_dir):
    """Stage 2 starts from stage 1's backbone (Sec. 4.3)."""
    if previous is not None:
        model.get_layer("backbone").set_weights(previous.get_layer("backbone").get_weights())
        return "stage 1 of this run"
    path = os.path.join(model_dir, "stage1.keras")
    if tf.io.gfile.exists(path):
        from lgd_tf.models import load_lgd_weights

        load_lgd_weights(model, path)
        return path
    return None


@gin.configurable(module="lgd_tf.training", denylist=["model_dir", "strategy"])
def fit_two_stage(model_dir, strategy, *, model_fn=gin.REQUIRED, stages=STAGES, seed=0,
                  mixed_precision=None):
    """Runs the stages in order, each resumable; returns ({stage: StageResult}, model).

    Args:
        model_dir: output folder (layout in the module docstring).
        strategy: a `tf.distribute.Strategy` (`strategy.get_strategy`).
        model_fn: builder called as `model_fn(head=stage)` in the stage's gin scope
            (gin: `@lgd3d` / `@lgd2d`).
        stages: which stages to run: both, ("stage1",) or ("stage2",) (stage 2 alone starts
            from model_dir/stage1.keras if present, else from the builder's weights).
        seed: Keras seed (initialisation) and input pipeline seed.
        mixed_precision: None, "mixed_bfloat16" or "mixed_float16" (float16 adds loss
            scaling).
    """
    from lgd_tf.training import gin_config

    stages = tuple(stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages or list(stages) != sorted(stages):
        raise TrainingError(f"fit_two_stage.stages must be a non-empty ordered subset of "
                            f"{STAGES}. Received: {stages}")
    chief = strategy_lib.is_chief(strategy)
    started = time.perf_counter()
    sources = gin_config.call_configurable(data_sources, need_eval=False)
    if chief:
        print(f"data: {sources.num_classes} classes, train {sources.train_pattern} "
              f"(ready in {time.perf_counter() - started:.1f}s)", flush=True)
    tf.io.gfile.makedirs(model_dir)
    if chief:
        files.write_text(os.path.join(model_dir, "class_names.txt"),
                         "\n".join(sources.class_names) + "\n")
    keras.utils.set_random_seed(seed)
    if mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision)
    results, previous, model = {}, None, None
    for stage in stages:
        with gin.config_scope(stage):
            with strategy.scope():
                try:
                    model = gin_config.call_configurable(model_fn, head=stage)
                except ValueError as error:
                    raise TrainingError(f"{stage}: model: {one_line(error)}") from None
            if getattr(model, "num_classes", sources.num_classes) != sources.num_classes:
                raise TrainingError(f"the model has {model.num_classes} classes but the data "
                                    f"has {sources.num_classes} (set NUM_CLASSES)")
            if stage == "stage2":
                origin = _init_stage2_backbone(model, previous, model_dir)
                if chief:
                    print(f"stage2: backbone from {origin or 'the builder (no stage 1 model)'}",
                          flush=True)
            results[stage] = gin_config.call_configurable(
                loop.fit_stage, stage, model, strategy, sources.train_pattern,
                os.path.join(model_dir, stage), sources.num_classes, seed=seed)
        if chief:
            final = os.path.join(model_dir, f"{stage}.keras")
            if results[stage].steps > results[stage].start_step or not tf.io.gfile.exists(
                    final):
                files.save_model(model, final)
            write_operative_config(model_dir)
        previous = model
    keras.mixed_precision.set_global_policy("float32")
    return results, model, sources
