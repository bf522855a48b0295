"""gin at the edge: every configurable registered once under its gin name, config parsing
with one-line errors, the per-stage scopes and the operative config.

Registered names (users' gin files use them; they keep working):
    lgd_tf.models.lgd3d / lgd2d (also lgd3d / lgd2d), lgd_tf.data.train_dataset /
    eval_dataset / build_demo_dataset, lgd_tf.training.data_sources / fit_two_stage /
    fit_stage / evaluate_video_level / paper_step_decay (Sec. 5.2), Keras 3 optimisers
    (keras.optimizers.SGD, ...) and schedules (keras.optimizers.schedules.CosineDecay, ...).
The library functions themselves take explicit arguments; the wiring between them (which data
function fit_stage reads, ...) is the default binding `DEFAULTS` below, which a user's file or
binding may override. `train` recomputes precise BatchNorm statistics over 20 training
batches at the end of each stage by default (`fit_stage.precise_bn_batches`; 0 switches it
off): evaluation with the moving statistics lags a model that has just learned
(docs/results.md, precise BN table).
"""

import logging
import os
import pathlib
import re

import keras

import gin
from lgd_tf import data, models
from lgd_tf.runs import run_folder
from lgd_tf.training import evaluation, loop, schedules, two_stage
from lgd_tf.training.errors import TrainingError

lgd3d = gin.external_configurable(models.lgd3d, module="lgd_tf.models")
lgd2d = gin.external_configurable(models.lgd2d, module="lgd_tf.models")
train_dataset = gin.external_configurable(data.train_dataset, module="lgd_tf.data")
eval_dataset = gin.external_configurable(data.eval_dataset, module="lgd_tf.data")
build_demo_dataset = gin.external_configurable(data.build_demo_dataset, module="lgd_tf.data")
paper_step_decay = gin.external_configurable(schedules.paper_step_decay,
                                             module="lgd_tf.training")
data_sources = gin.external_configurable(
    two_stage.data_sources, module="lgd_tf.training", denylist=["need_train", "need_eval"])
fit_two_stage = gin.external_configurable(
    two_stage.fit_two_stage, module="lgd_tf.training",
    denylist=["model_dir", "strategy", "sources", "fit_stage_fn", "stage_scope",
              "evaluate_fn", "stop", "after_stage", "video_spec_fn"])
fit_stage = gin.external_configurable(
    loop.fit_stage, module="lgd_tf.training",
    denylist=["stage", "model", "strategy", "train_pattern", "stage_dir", "num_classes",
              "class_names", "evaluate_fn", "stop"])
evaluate_video_level = gin.external_configurable(
    evaluation.evaluate_video_level, module="lgd_tf.training",
    denylist=["model_dir", "sources", "model", "stage", "write_files", "summary_dir", "step"])

for _name in ("SGD", "Adam", "AdamW", "RMSprop", "Nadam", "LossScaleOptimizer"):
    gin.external_configurable(getattr(keras.optimizers, _name), module="keras.optimizers")
for _name in ("PiecewiseConstantDecay", "CosineDecay", "CosineDecayRestarts",
              "ExponentialDecay", "PolynomialDecay", "InverseTimeDecay"):
    gin.external_configurable(getattr(keras.optimizers.schedules, _name),
                              module="keras.optimizers.schedules")

DEFAULTS = """
lgd_tf.training.fit_stage.data_fn = @lgd_tf.data.train_dataset
lgd_tf.training.fit_stage.precise_bn_batches = 20
lgd_tf.training.evaluate_video_level.data_fn = @lgd_tf.data.eval_dataset
lgd_tf.training.data_sources.build_demo_fn = @lgd_tf.data.build_demo_dataset
"""

STAGE_SCOPE = gin.config_scope

_PACKAGE = pathlib.Path(__file__).resolve().parent.parent
# In a wheel the configs are package data (lgd_tf/gin); in a source checkout, the top gin/.
GIN_DIR = _PACKAGE / "gin" if (_PACKAGE / "gin").is_dir() else _PACKAGE.parent / "gin"


def packaged_configs():
    """Names of the shipped configs ("demo.gin", "lgd3d_r50.gin", ...)."""
    return sorted(p.name for p in GIN_DIR.glob("*.gin"))


def resolve_gin_file(name):
    """A --gin_file value -> an existing path.

    As given if it exists (relative to the current directory); else a shipped config by its
    bare name (`demo.gin`) or its checkout path (`gin/demo.gin`).

    Raises:
        TrainingError: no such file (the message lists the shipped configs).
    """
    path = pathlib.Path(os.path.expanduser(name))
    if path.is_file():
        return str(path)
    parts = path.parts[1:] if path.parts[:1] == ("gin",) else path.parts
    shipped = GIN_DIR.joinpath(*parts) if parts else None
    if shipped is not None and not path.is_absolute() and shipped.is_file():
        return str(shipped)
    raise TrainingError(f"gin file not found: {name} (shipped configs: "
                        f"{', '.join(packaged_configs())})")


def record_config(record):
    """The gin config a run record stands for at evaluation: its classes, its eval data (the
    macro EVAL_PATTERN, so `--gin_bindings="EVAL_PATTERN='...'"` gives other data) and its
    evaluation sampling (`lgd_tf.data.eval_dataset.*`, each overridable by a binding)."""
    spec = record.video_spec
    kind = spec["model_type"][-2:]
    lines = [f"EVAL_PATTERN = {record.data.get('eval_pattern')!r}",
             "lgd_tf.training.data_sources.eval_pattern = %EVAL_PATTERN",
             f"lgd_tf.training.data_sources.num_classes = {len(record.class_names)}",
             f"lgd_tf.data.eval_dataset.model = {kind!r}",
             f"lgd_tf.data.eval_dataset.modality = {spec['modality']!r}",
             f"lgd_tf.data.eval_dataset.{'num_frames' if kind == '3d' else 'num_segments'} = "
             f"{spec['num_frames']}"]
    lines += [f"lgd_tf.data.eval_dataset.{name} = {value!r}"
              for name, value in sorted(spec["eval"].items())]
    return "\n".join(lines) + "\n"


def parse_record(record, gin_bindings=()):
    """Parses `record_config(record)` after `DEFAULTS`, then the bindings; one-line
    `TrainingError` on a problem."""
    gin.clear_config()
    try:
        gin.parse_config(DEFAULTS)
        gin.parse_config(record_config(record))
        gin.parse_config_files_and_bindings([], list(gin_bindings))
    except (SyntaxError, ValueError, KeyError, TypeError) as error:
        gin.clear_config()
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise TrainingError(f"bad --gin_bindings: {message}") from None
    check_macros_used(gin_bindings)


def eval_sampling(stage):
    """The evaluation sampling bound in `stage`'s scope: {setting: value}."""
    with STAGE_SCOPE(stage):
        bound = gin.get_bindings("lgd_tf.data.eval_dataset")
    return {k: v for k, v in bound.items() if k in run_folder.EVAL_SAMPLING}


def parse(gin_files, gin_bindings=(), search_paths=(), *, finalize=True):
    """Parses gin files and bindings after `DEFAULTS`; one-line `TrainingError` on a problem.

    Relative includes are searched in `search_paths`, the current directory and the folder
    holding the shipped gin/ (so `include 'gin/base/...'` works from anywhere).
    """
    if not gin_files:
        raise TrainingError("give at least one --gin_file (e.g. --gin_file=demo.gin; shipped: "
                            f"{', '.join(packaged_configs())})")
    paths = [resolve_gin_file(name) for name in gin_files]
    for folder in [*search_paths, os.getcwd(), str(GIN_DIR.parent)]:
        gin.add_config_file_search_path(folder)
    gin.clear_config()
    root = logging.getLogger()
    root.addFilter(_quiet_search_misses)
    try:
        gin.parse_config(DEFAULTS)
        gin.parse_config_files_and_bindings(paths, list(gin_bindings),
                                            finalize_config=finalize)
    except (SyntaxError, ValueError, KeyError, TypeError, OSError) as error:
        gin.clear_config()
        where = ""
        if isinstance(error, SyntaxError) and error.filename:
            where = f" ({error.filename}, line {error.lineno})"
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise TrainingError(f"bad gin config{where}: {message}") from None
    finally:
        root.removeFilter(_quiet_search_misses)
    check_macros_used(gin_bindings)
    return paths


def check_macros_used(gin_bindings):
    """Refuses a binding of a macro (`TRAIN_PATTERN='...'`) that the parsed config never
    references: gin would accept it and ignore it.

    Raises:
        TrainingError: one line naming the binding.
    """
    text = gin.config_str()
    for binding in gin_bindings:
        name = binding.split("=", 1)[0].strip()
        if re.fullmatch(r"[A-Za-z_]\w*", name) and not re.search(rf"%{name}\b", text):
            gin.clear_config()
            raise TrainingError(
                f"--gin_bindings=\"{binding.strip()}\": the config does not use {name}, so "
                "the binding would be ignored; bind the setting itself (e.g. "
                "lgd_tf.training.data_sources.train_pattern) or use a config that reads "
                f"%{name}")


def _quiet_search_misses(record):
    """gin logs "Path not found" for each search path an include is not in (all but one)."""
    return not record.getMessage().startswith("Path not found: ")


def call(fn, *args, **kwargs):
    """Calls a configurable; a missing required setting becomes a one-line `TrainingError`."""
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, TypeError) as error:
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        if "Required bindings" in text or "gin.REQUIRED" in text or "required" in text and (
                "argument" in text):
            raise TrainingError(f"missing gin setting: {text}") from None
        raise


def operative_config_text():
    """gin's operative config, plus the evaluation sampling (the `eval_dataset` blocks of the
    whole config) when the run did not evaluate (--noevaluate): a complete record of the
    configuration (run.json holds the video spec itself)."""
    text = gin.operative_config_str()

    def is_sampling(block):
        header = block.strip().splitlines()[0] if block.strip() else ""
        return header.startswith("# Parameters for ") and header.rstrip(":").rsplit(
            "/", 1)[-1].endswith("eval_dataset")

    if any(is_sampling(block) for block in text.split("\n\n")):
        return text
    everything = gin.config_str().split("\n\n")
    sampling = [block.strip() for block in everything if is_sampling(block)]
    if not sampling:
        return text
    used = set(re.findall(r"%([\w.]+)", "\n".join(sampling)))
    macros = [line for block in everything if block.strip().startswith("# Macros:")
              for line in block.splitlines() if line.split(" = ")[0].strip() in used]
    return (text.rstrip() + "\n\n# The evaluation sampling of the config (not used by this "
            "run):\n" + "".join(line + "\n" for line in macros) + "\n"
            + "\n\n".join(sampling) + "\n")


def video_spec(architecture):
    """The run's video spec (`run_folder.video_spec`) from the active scope's bindings of
    `lgd_tf.data.train_dataset.crop_size` and `lgd_tf.data.eval_dataset.*`."""
    crop = gin.get_bindings("lgd_tf.data.train_dataset").get("crop_size")
    return run_folder.video_spec(architecture, crop,
                                 gin.get_bindings("lgd_tf.data.eval_dataset"))
