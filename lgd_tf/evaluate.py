"""`python -m lgd_tf.evaluate --gin_file=... --model_dir=...`: video-level accuracy (Sec. 5.2).

Scores averaged over every clip (and crop) of each video; top-1 / top-5, per-class accuracy,
confusion matrix (CSV and PNG) and eval_results.json in model_dir. Evaluates stage2.keras,
else stage1.keras, or --stage. `--fuse_with=OTHER_MODEL_DIR` late-fuses the scores with
another evaluated run (two-stream, Sec. 5.5).
"""


from absl import app, flags

flags.DEFINE_multi_string("gin_file", None, "gin config file(s) of the run.")
flags.DEFINE_multi_string("gin_bindings", [], "gin bindings, e.g. \"EVAL_PATTERN='...'\".")
flags.DEFINE_multi_string("gin_search_paths", [], "folders searched for included gin files.")
flags.DEFINE_string("model_dir", None, "the training run's folder.")
flags.DEFINE_enum("stage", None, ["stage1", "stage2"], "which saved stage (default: last).")
flags.DEFINE_string("fuse_with", None, "another evaluated model_dir (e.g. the flow stream) "
                    "whose per-video scores are late-fused with these (Sec. 5.5).")
flags.DEFINE_float("fusion_weight", 0.5, "weight of the flow stream in the fusion.")
flags.mark_flag_as_required("model_dir")

FLAGS = flags.FLAGS
PROGRAM = "lgd_tf.evaluate"


def evaluate(argv_flags):
    from lgd_tf.training import evaluation, gin_config

    gin_config.parse_config(argv_flags.gin_file, argv_flags.gin_bindings,
                            argv_flags.gin_search_paths)
    results = evaluation.evaluate_video_level(
        argv_flags.model_dir, stage=argv_flags.stage, fuse_with=argv_flags.fuse_with,
        fusion_weight=argv_flags.fusion_weight)
    print(evaluation.format_results(results), flush=True)


def main(argv):
    from lgd_tf.training.errors import command_main

    return command_main(PROGRAM, FLAGS, evaluate)(argv)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
