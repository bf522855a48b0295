r"""`python -m lgd_tf.train --gin_file=... --model_dir=...`: two-stage training (Sec. 4.3).

    python -m lgd_tf.train --gin_file=lgd3d_r50.gin \
        --gin_bindings="TRAIN_PATTERN='/data/k400/train-*'" --model_dir=runs/lgd3d_r50 \
        [--strategy=default|mirrored|multi_worker|tpu] [--tpu=NAME]

Rerunning the same command resumes from the last checkpoint of the stage it stopped in; a
SIGTERM or SIGINT saves a checkpoint at the current step first. A rerun whose model or classes
differ from the run's is refused before anything is written, and a second process on a
model_dir in use is refused. With demo.gin (or tiny.gin) and no data it builds the demo set,
trains both stages and evaluates. A bare --gin_file name is one of the shipped configs.
Exit codes: 0 done, 1 failure at run time (incl. stopped by a signal), 2 bad usage or input.
"""

import os
import time

from absl import flags

from lgd_tf.cli.command import Command, define_gin_flags

PROGRAM = "lgd_tf.train"


def define_flags(fv):
    define_gin_flags(fv)
    flags.DEFINE_string("model_dir", None, "output folder (checkpoints, logs, models, "
                        "results).", flag_values=fv)
    flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                      "tf.distribute strategy.", flag_values=fv)
    flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.", flag_values=fv)
    flags.DEFINE_integer("num_cpu_devices", 0, "split the CPU into this many logical devices "
                         "(MirroredStrategy on a machine without accelerators).",
                         flag_values=fv)
    flags.DEFINE_bool("evaluate", True, "evaluate the last stage on the eval data afterwards.",
                      flag_values=fv)


def _duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def train(fv):
    from lgd_tf.cli import training

    started = time.perf_counter()
    outcome = training.train(
        fv.model_dir, fv.gin_file, fv.gin_bindings, fv.gin_search_paths,
        strategy_name=fv.strategy, tpu=fv.tpu, num_cpu_devices=fv.num_cpu_devices,
        evaluate=fv.evaluate)
    if outcome is None:  # not the chief
        return
    results, eval_results = outcome.results, outcome.eval_results
    parts = [f"{r.stage} {r.steps} steps ({_duration(r.seconds)}"
             + (f", resumed at {r.start_step}" if r.start_step else "")
             + (f", loss {r.loss:.4f}, {r.clips_per_second:.1f} clips/s"
                + (f", {r.skipped} bad records skipped" if getattr(r, "skipped", 0) else "")
                + ")" if r.steps > r.start_step else ", already done)")
             for r in results.values()]
    summary = f"{PROGRAM}: done in {_duration(time.perf_counter() - started)}: " + "; ".join(
        parts)
    if eval_results:
        summary += (f"; video-level top-1 {100 * eval_results['top1']:.1f}% top-5 "
                    f"{100 * eval_results['top5']:.1f}% on {eval_results['num_videos']} videos")
    print(f"{summary} -> {os.path.abspath(fv.model_dir)}", flush=True)


COMMAND = Command(PROGRAM, __doc__, define_flags, train, required=["model_dir"])


def run(argv=None):
    """Runs the command on `argv` (default sys.argv); returns the exit code."""
    return COMMAND.run(argv)

