"""`python -m lgd_tf.train --gin_file=... --model_dir=...`: two-stage training (Sec. 4.3).

    python -m lgd_tf.train --gin_file=gin/lgd3d_r50.gin \
        --gin_bindings="TRAIN_PATTERN='/data/k400/train-*'" --model_dir=runs/lgd3d_r50 \
        [--strategy=default|mirrored|multi_worker|tpu] [--tpu=NAME]

Rerunning the same command resumes from the last checkpoint of the stage it stopped in. With
gin/demo.gin and no data it builds the demo set, trains both stages and evaluates.
"""

import os
import time

from absl import app, flags

flags.DEFINE_multi_string("gin_file", None, "gin config file(s), later ones override.")
flags.DEFINE_multi_string("gin_bindings", [], "gin bindings, e.g. \"fit_stage.batch_size=8\".")
flags.DEFINE_multi_string("gin_search_paths", [], "folders searched for included gin files.")
flags.DEFINE_string("model_dir", None, "output folder (checkpoints, logs, models, results).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")
flags.DEFINE_integer("num_cpu_devices", 0, "split the CPU into this many logical devices "
                     "(MirroredStrategy on a machine without accelerators).")
flags.DEFINE_bool("evaluate", True, "evaluate the last stage on the eval data afterwards.")
flags.mark_flag_as_required("model_dir")

FLAGS = flags.FLAGS
PROGRAM = "lgd_tf.train"


def _duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def train(argv_flags):
    import tensorflow as tf

    from lgd_tf.training import gin_config, strategy, two_stage

    started = time.perf_counter()
    gin_config.parse_config(argv_flags.gin_file, argv_flags.gin_bindings,
                            argv_flags.gin_search_paths)
    if argv_flags.num_cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * argv_flags.num_cpu_devices)
    dist = strategy.get_strategy(argv_flags.strategy, tpu=argv_flags.tpu)
    chief = strategy.is_chief(dist)
    model_dir = argv_flags.model_dir
    results, model, sources = two_stage.fit_two_stage(model_dir, dist)
    parts = [f"{r.stage} {r.steps} steps ({_duration(r.seconds)}"
             + (f", resumed at {r.start_step}" if r.start_step else "")
             + (f", loss {r.loss:.4f}, {r.clips_per_second:.1f} clips/s)"
                if r.steps > r.start_step else ", already done)")
             for r in results.values()]
    summary = f"{PROGRAM}: done in {_duration(time.perf_counter() - started)}: " + "; ".join(
        parts)
    if chief and argv_flags.evaluate and sources.eval_pattern:
        from lgd_tf.training import evaluation

        print(f"evaluating {list(results)[-1]} on {sources.eval_pattern}", flush=True)
        eval_results = evaluation.evaluate_video_level(model_dir, model, list(results)[-1])
        print(evaluation.format_results(eval_results), flush=True)
        summary = (f"{PROGRAM}: done in {_duration(time.perf_counter() - started)}: "
                   + "; ".join(parts)
                   + f"; video-level top-1 {100 * eval_results['top1']:.1f}% top-5 "
                   f"{100 * eval_results['top5']:.1f}% on {eval_results['num_videos']} videos")
    if chief:
        print(f"{summary} -> {os.path.abspath(model_dir)}", flush=True)


def main(argv):
    from lgd_tf.training.errors import command_main

    return command_main(PROGRAM, FLAGS, train)(argv)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
