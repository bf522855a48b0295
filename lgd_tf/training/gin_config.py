"""Everything gin can configure, registered once, and config parsing with one-line errors.

Registered: `lgd_tf.models.lgd3d` / `lgd2d` (also as `lgd3d` / `lgd2d`), the data functions
`lgd_tf.data.train_dataset` / `eval_dataset` / `build_demo_dataset`, Keras 3 optimisers
(`keras.optimizers.SGD`, ...) and schedules (`keras.optimizers.schedules.CosineDecay`, ...),
and `paper_step_decay` (Sec. 5.2). Layers stay free of gin. The training configurables
(`data_sources`, `fit_two_stage`, `fit_stage`, `evaluate_video_level`) are declared where they
live, with `@gin.configurable`.
"""

import os

import keras

import gin
from lgd_tf import data, models
from lgd_tf.training import schedules
from lgd_tf.training.errors import TrainingError

lgd3d = gin.external_configurable(models.lgd3d, module="lgd_tf.models")
lgd2d = gin.external_configurable(models.lgd2d, module="lgd_tf.models")
train_dataset = gin.external_configurable(data.train_dataset, module="lgd_tf.data")
eval_dataset = gin.external_configurable(data.eval_dataset, module="lgd_tf.data")
build_demo_dataset = gin.external_configurable(data.build_demo_dataset, module="lgd_tf.data")
paper_step_decay = gin.external_configurable(schedules.paper_step_decay,
                                             module="lgd_tf.training")

for _name in ("SGD", "Adam", "AdamW", "RMSprop", "Nadam", "LossScaleOptimizer"):
    gin.external_configurable(getattr(keras.optimizers, _name), module="keras.optimizers")
for _name in ("PiecewiseConstantDecay", "CosineDecay", "CosineDecayRestarts",
              "ExponentialDecay", "PolynomialDecay", "InverseTimeDecay"):
    gin.external_configurable(getattr(keras.optimizers.schedules, _name),
                              module="keras.optimizers.schedules")

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "gin")


def parse_config(gin_files, gin_bindings=(), search_paths=()):
    """Parses gin files and bindings; raises `TrainingError` with one line on any problem.

    Relative includes are searched in `search_paths`, the current directory and the
    repository's `gin/` folder (so `include 'gin/base/...'` works from anywhere).
    """
    # Entry points import the training configurables before parsing.
    from lgd_tf.training import evaluation, two_stage  # noqa: F401

    if not gin_files:
        raise TrainingError("Give at least one --gin_file (e.g. --gin_file=gin/demo.gin).")
    for path in gin_files:
        if not os.path.isfile(path):
            raise TrainingError(f"gin file not found: {path}")
    for path in list(search_paths) + [os.getcwd(), os.path.dirname(GIN_DIR)]:
        gin.add_config_file_search_path(path)
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings),
                                            finalize_config=False)
    except (SyntaxError, ValueError, KeyError, TypeError, OSError) as error:
        where = ""
        if isinstance(error, SyntaxError) and error.filename:
            where = f" ({error.filename}, line {error.lineno})"
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise TrainingError(f"bad gin config{where}: {message}") from None


def call_configurable(fn, *args, **kwargs):
    """Calls a gin configurable, turning a missing %gin.REQUIRED value into a one-line error."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as error:
        if "Required bindings" in str(error) or "gin.REQUIRED" in str(error):
            message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
            raise TrainingError(f"missing gin setting: {message}") from None
        raise
