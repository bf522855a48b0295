"""Builds sharded TFRecords (SequenceExample, MediaSequence keys) from a folder of videos.

    python tfrecords/build_tfrecords.py --videos_dir=videos --labels_csv=train.csv \
        --output_dir=data/kinetics --num_shards=256 [--flow] [--split=train]

labels CSV: Kinetics `label,youtube_id,time_start,time_end,split` or `path,label`. Frames are
resized to a shorter side of --short_side (128), JPEG-encoded; --fps resamples; --flow adds
TV-L1 flow (Sec. 5.5). Bad videos are skipped and listed in the summary; shards already
written are kept, so rerunning the same command resumes. Writes class_names.txt.
"""

import os

from absl import app, flags, logging

from lgd_tf.data import builder

FLAGS = flags.FLAGS
flags.DEFINE_string("videos_dir", None, "Folder searched (recursively) for the videos.")
flags.DEFINE_string("labels_csv", None, "Kinetics-form or `path,label` CSV.")
flags.DEFINE_string("output_dir", None, "Where the shards go.")
flags.DEFINE_string("split", None, "Kinetics split to keep (train/val/test); also the prefix.")
flags.DEFINE_string("prefix", None, "Shard file prefix (default: --split or 'train').")
flags.DEFINE_string("class_names", None, "Optional file, one class name per line (index order).")
flags.DEFINE_integer("num_shards", 8, "Number of output shards.")
flags.DEFINE_integer("short_side", 128, "Shorter side of stored frames (0 keeps the size).")
flags.DEFINE_float("fps", None, "Resample to this frame rate.")
flags.DEFINE_boolean("flow", False, "Also store TV-L1 flow under FORWARD_FLOW/image/encoded.")
flags.DEFINE_integer("num_workers", None, "Parallel processes (default: CPU count).")
flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality.")
flags.mark_flags_as_required(["videos_dir", "labels_csv", "output_dir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    names = None
    if FLAGS.class_names:
        with open(FLAGS.class_names) as f:
            names = [line.strip() for line in f if line.strip()]
    entries, names, missing = builder.read_labels_csv(
        FLAGS.labels_csv, FLAGS.videos_dir, split=FLAGS.split, class_names=names)
    for name, reason in missing:
        logging.warning("Skipping %s: %s", name, reason)
    options = builder.EncodeOptions(short_side=FLAGS.short_side or None, fps=FLAGS.fps,
                                    flow=FLAGS.flow, quality=FLAGS.jpeg_quality)
    summary = builder.build_from_videos(
        entries, FLAGS.output_dir, prefix=FLAGS.prefix or FLAGS.split or "train",
        num_shards=FLAGS.num_shards, num_workers=FLAGS.num_workers, options=options)
    summary.skipped = list(missing) + summary.skipped
    with open(os.path.join(FLAGS.output_dir, "class_names.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    print(summary)


if __name__ == "__main__":
    app.run(main)
