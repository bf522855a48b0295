"""`python -m lgd_tf.evaluate --gin_file=... --model_dir=...`: video-level accuracy (Sec. 5.2).

Scores averaged over every clip (and crop) of each video; top-1 / top-5, per-class accuracy,
confusion matrix (CSV, and a figure with the class names) and eval_results.json in model_dir.
Evaluates stage2.keras, else stage1.keras, or --stage. `--fuse_with=OTHER_MODEL_DIR`
late-fuses the scores with another evaluated run (two-stream, Sec. 5.5).
Exit codes: 0 done, 1 failure at run time, 2 bad usage or input (e.g. no trained model).
"""

import sys

from absl import flags

from lgd_tf.cli.command import Command, define_gin_flags

PROGRAM = "lgd_tf.evaluate"


def define_flags(fv):
    define_gin_flags(fv, bindings_example="EVAL_PATTERN='/data/val-*'")
    flags.DEFINE_string("model_dir", None, "the training run's folder.", flag_values=fv)
    flags.DEFINE_enum("stage", None, ["stage1", "stage2"], "which saved stage (default: "
                      "last).", flag_values=fv)
    flags.DEFINE_string("fuse_with", None, "another evaluated model_dir (e.g. the flow "
                        "stream) whose per-video scores are late-fused with these (Sec. 5.5).",
                        flag_values=fv)
    flags.DEFINE_float("fusion_weight", 0.5, "weight of the flow stream in the fusion.",
                       flag_values=fv)


def evaluate(fv):
    from lgd_tf.cli import training
    from lgd_tf.training import evaluation

    results = training.evaluate(
        fv.model_dir, fv.gin_file, fv.gin_bindings, fv.gin_search_paths, stage=fv.stage,
        fuse_with=fv.fuse_with, fusion_weight=fv.fusion_weight)
    print(evaluation.format_results(results), flush=True)


COMMAND = Command(PROGRAM, __doc__, define_flags, evaluate, required=["model_dir"])


def run(argv=None):
    """Runs the command on `argv` (default sys.argv); returns the exit code."""
    return COMMAND.run(argv)


if __name__ == "__main__":
    sys.exit(run())
