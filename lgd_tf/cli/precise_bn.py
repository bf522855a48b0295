"""`--precise_bn_batches` of `lgd_tf.evaluate` and `lgd_tf.export`: precise BatchNorm
statistics (`lgd_tf.training.precise_bn`) recomputed on the loaded model before it is
evaluated or exported.

The training data is the run record's `train_pattern` (run.json), or `--precise_bn_data`.
The clips are sampled as the run trained them (model type, modality, frames, crop: its video
spec), from frames resized to the run's evaluation short side at 4:3 (the training resize
itself is not recorded; for the Sec. 5.2 sizes, 120 -> 120 x 160, it is the same). `train`
does this itself at the end of each stage (`lgd_tf.training.fit_stage.precise_bn_batches`),
so these flags default to off.
"""

import os
import time

from absl import flags

from lgd_io.errors import BadInput

FLAGS_HELP = {
    "precise_bn_batches": "recompute every BatchNorm's moving statistics over this many "
    "training batches before evaluating / exporting (0: off; train already does it at the "
    "end of each stage unless configured off).",
    "precise_bn_data": "TFRecord glob of the training data for --precise_bn_batches "
    "(default: the run record's train_pattern).",
    "precise_bn_batch_size": "clips per batch for --precise_bn_batches.",
}


def define_flags(fv):
    flags.DEFINE_integer("precise_bn_batches", 0, FLAGS_HELP["precise_bn_batches"],
                         flag_values=fv)
    flags.DEFINE_string("precise_bn_data", None, FLAGS_HELP["precise_bn_data"], flag_values=fv)
    flags.DEFINE_integer("precise_bn_batch_size", 16, FLAGS_HELP["precise_bn_batch_size"],
                         flag_values=fv)


def training_pattern(num_batches, data_pattern, run_dir, batch_size=16):
    """The training data glob for `num_batches` > 0 (None when off), checked before any work.

    Args:
        num_batches: `--precise_bn_batches`.
        data_pattern: `--precise_bn_data`, or None for the run record's train_pattern.
        run_dir: the run folder (None when the model is a file without a run record).

    Raises:
        BadInput: a bad value, or no training data known (one line naming the flag).
    """
    if num_batches < 0:
        raise BadInput(f"--precise_bn_batches must be >= 0. Received: {num_batches}")
    if batch_size < 1:
        raise BadInput(f"--precise_bn_batch_size must be >= 1. Received: {batch_size}")
    if num_batches == 0:
        if data_pattern:
            raise BadInput("--precise_bn_data applies with --precise_bn_batches > 0 only")
        return None
    pattern = data_pattern
    if not pattern and run_dir is not None:
        from lgd_tf.runs import run_folder

        run = run_folder.RunFolder(run_dir)
        if os.path.isfile(run.file(run_folder.RUN_RECORD)):
            pattern = (run.read_run().data or {}).get("train_pattern")
    if not pattern:
        where = f"the run record of {run_dir}" if run_dir else "a model file"
        raise BadInput(f"--precise_bn_batches={num_batches} needs the training data, and "
                       f"{where} names none; give --precise_bn_data=GLOB of its training "
                       "TFRecord shards")
    from lgd_tf.data import reader

    flag = "--precise_bn_data" if data_pattern else "the run record's train_pattern"
    try:
        reader.list_files(pattern, kind="train", need_records=True)
    except ValueError as error:
        raise BadInput(f"{flag}: {error}") from None
    return pattern


def recompute(model, pattern, video_spec, num_batches, batch_size, num_classes):
    """Recomputes `model`'s BatchNorm statistics over `num_batches` batches of `pattern`,
    sampled as `video_spec` says; prints one line; returns the number of batches used."""
    from lgd_tf import data
    from lgd_tf.training import precise_bn

    kind = video_spec["model_type"][-2:]
    short = int(video_spec["eval"]["short_side"])
    crop = int(video_spec["crop_size"])
    resize = (max(short, crop), max(round(short * 4 / 3), crop))
    length = {"num_frames" if kind == "3d" else "num_segments": int(video_spec["num_frames"])}
    dataset = data.train_dataset(pattern, batch_size, model=kind,
                                 modality=video_spec["modality"], resize=resize,
                                 crop_size=crop, num_classes=num_classes, seed=0, **length)
    started = time.perf_counter()
    try:
        count = precise_bn.recompute_batch_norm_statistics(model, dataset, num_batches)
    except ValueError as error:
        raise BadInput(f"--precise_bn_batches: {error}") from None
    print(f"precise BatchNorm statistics from {count} batches of {batch_size} clips of "
          f"{pattern} ({time.perf_counter() - started:.1f}s)", flush=True)
    return count
