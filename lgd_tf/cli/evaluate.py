r"""`python -m lgd_tf.evaluate --model_dir=RUN`: video-level accuracy (Sec. 5.2).

    python -m lgd_tf.evaluate --model_dir=runs/demo
    python -m lgd_tf.evaluate --model_dir=runs/lgd3d_r50 \
        --gin_bindings="EVAL_PATTERN='/data/k400/val-*'" [--output_dir=elsewhere]

The run folder's record (written by lgd_tf.train) gives the classes, the eval data and the
evaluation sampling; --gin_bindings override them (e.g. EVAL_PATTERN for other data,
lgd_tf.data.eval_dataset.num_clips=...), and --gin_file replaces them by a config. The first
line says what was used. Data whose class names are not the run's is refused (classes are
matched by name, not index). Scores averaged over every clip (and crop) of each video;
top-1 / top-5, per-class accuracy, the confusion matrix (CSV, and a figure with the class
names), the per-video predictions and scores, written into the run folder, replaced together
(or into --output_dir only). While lgd_tf.train holds the run folder, evaluate refuses
(naming its pid) unless --output_dir is given. Evaluates the last finished stage, or --stage.
`--fuse_with=OTHER_MODEL_DIR` late-fuses the scores with another evaluated run (two-stream,
Sec. 5.5). `--precise_bn_batches=N` recomputes the BatchNorm statistics of the loaded model
over N training batches (the run record's train_pattern, or `--precise_bn_data`) first; the
run folder's model is not changed (train already saves precise statistics by default).
Exit codes: 0 done, 1 failure at run time (incl. the run folder in use), 2 bad usage or input
(e.g. no trained model, other classes).
"""


from absl import flags

from lgd_tf.cli import precise_bn
from lgd_tf.cli.command import Command, define_gin_flags
from lgd_tf.cli.shared_flags import define_fusion_flags

PROGRAM = "lgd_tf.evaluate"


def define_flags(fv):
    define_gin_flags(fv, bindings_example="EVAL_PATTERN='/data/val-*'",
                     file_help="gin config file(s) replacing the run record's data and "
                     "sampling (optional); a bare name (demo.gin) is a shipped config.")
    flags.DEFINE_string("model_dir", None, "the training run's folder.", flag_values=fv)
    flags.DEFINE_enum("stage", None, ["stage1", "stage2"], "which saved stage (default: "
                      "the last finished).", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "write the results here instead of into the run "
                        "folder (works while the run is training).", flag_values=fv)
    define_fusion_flags(fv, "another evaluated model_dir (e.g. the flow stream) whose "
                        "per-video scores are late-fused with these (Sec. 5.5).",
                        module_name=__name__)
    precise_bn.define_flags(fv)


def evaluate(fv):
    from lgd_tf.cli import training
    from lgd_tf.training import evaluation

    results = training.evaluate(
        fv.model_dir, fv.gin_file, fv.gin_bindings, fv.gin_search_paths, stage=fv.stage,
        fuse_with=fv.fuse_with, fusion_weight=fv.fusion_weight, output_dir=fv.output_dir,
        precise_bn_batches=fv.precise_bn_batches, precise_bn_data=fv.precise_bn_data,
        precise_bn_batch_size=fv.precise_bn_batch_size)
    print(evaluation.format_results(results), flush=True)


COMMAND = Command(PROGRAM, __doc__, define_flags, evaluate, required=["model_dir"])


def run(argv=None):
    """Runs the command on `argv` (default sys.argv); returns the exit code."""
    return COMMAND.run(argv)

