r"""`python -m lgd_tf.build_tfrecords`: sharded TFRecords (SequenceExample, MediaSequence keys)
from a folder of videos.

    python -m lgd_tf.build_tfrecords --videos_dir=videos --labels_csv=train.csv \
        --output_dir=data/kinetics --num_shards=256 [--flow] [--split=train] [--fps=25]

(also `lgd-build-tfrecords ...` when installed, `python tfrecords/build_tfrecords.py ...` from
a checkout). The labels CSV names its columns in a header row, in any order (a UTF-8 BOM is
fine): Kinetics `label,youtube_id,time_start,time_end,split` (media id
`<youtube_id>_<start:06d>_<end:06d>`; a file of that name under --videos_dir is the trimmed
segment, else `<youtube_id>.<ext>` is trimmed for each row) or `path,label` (paths relative to
--videos_dir; media id = the path without its extension; the header may be left out).
Duplicate rows are dropped and counted. Frames are resized to a shorter side of --short_side
(128) and JPEG-encoded as they are decoded; --fps resamples; --flow adds TV-L1 flow (Sec.
5.5). Class indices follow --class_names (one name per line; a label not in it is an error)
or the sorted names; they are written to class_names.txt in --output_dir (use the training
set's file for the validation build). A video goes to shard sha256(media id) mod
--num_shards; `<prefix>.manifest/` records what each finished shard holds. Rerunning with the
same or a changed CSV leaves exactly its videos in the shards, each once: unchanged shards
are kept, the others rebuilt (the summary says why); another --num_shards or encode option
rebuilds all. A video that cannot be decoded, or whose worker process dies twice (e.g. out of
memory), is skipped and listed in the summary, and so is a class left with no video.
--runner=beam runs the same shards as Apache Beam tasks (`pip install lgd_tf[beam]`): on this
machine Beam's FnApiRunner with --num_workers processes, or any runner given by
--beam_pipeline_options="--runner=DataflowRunner --project=..." (or Beam options after `--`).
One build at a time per --output_dir: a second exits 1 naming the first (pid, host).
Neither this command nor its workers import TensorFlow.
Exit codes: 0 done, 1 failure at run time (e.g. the disk is full, --output_dir in use by
another build), 2 bad usage or input (a missing flag, folder or file, a labels CSV with no
usable video, no video that decodes).
"""

import os
import shlex
import sys

from absl import flags, logging

from lgd_io import class_names as class_names_file
from lgd_io import files
from lgd_io.errors import BadInput, LgdError, one_line

PROGRAM = "lgd_tf.build_tfrecords"
CSV_FORMS = ("the Kinetics header `label,youtube_id,time_start,time_end,split` or "
             "`path,label` rows (paths relative to --videos_dir)")


def define_flags(fv):
    flags.DEFINE_string("videos_dir", None, "Folder searched (recursively) for the videos.",
                        flag_values=fv)
    flags.DEFINE_string("labels_csv", None, "Kinetics-form or `path,label` CSV.",
                        flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Where the shards go.", flag_values=fv)
    flags.DEFINE_string("split", None, "Kinetics split to keep (train/val/test); also the "
                        "prefix.", flag_values=fv)
    flags.DEFINE_string("prefix", None, "Shard file prefix (default: --split or 'train').",
                        flag_values=fv)
    flags.DEFINE_string("class_names", None, "Optional file, one class name per line (index "
                        "order).", flag_values=fv)
    flags.DEFINE_integer("num_shards", 8, "Number of output shards.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_integer("short_side", 128, "Shorter side of stored frames (0 keeps the "
                         "size).", lower_bound=0, flag_values=fv)
    flags.DEFINE_float("fps", None, "Resample to this frame rate.", lower_bound=0.001,
                       flag_values=fv)
    flags.DEFINE_boolean("flow", False, "Also store TV-L1 flow under "
                         "FORWARD_FLOW/image/encoded.", flag_values=fv)
    flags.DEFINE_integer("num_workers", None, "Parallel processes (default: CPU count).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality.", lower_bound=1, upper_bound=100,
                         flag_values=fv)
    flags.DEFINE_enum("runner", "local", ["local", "beam"], "local: a process pool on this "
                      "machine; beam: one Apache Beam task per shard.", flag_values=fv)
    flags.DEFINE_string("beam_pipeline_options", "", "Beam pipeline options, e.g. "
                        "\"--runner=DataflowRunner --project=P --region=R "
                        "--temp_location=gs://B/tmp --setup_file=./setup.py\" (default: the "
                        "FnApiRunner, --num_workers processes).", flag_values=fv)


def _read_text(path, what):
    """The text of a UTF-8 file given on the command line; a one-line error if it can't be."""
    if not os.path.exists(path):
        raise BadInput(f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise BadInput(f"{what} is not a file: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as error:
        hint = f"; expected {CSV_FORMS}" if what == "labels CSV" else ""
        raise BadInput(f"{what} {path} is not UTF-8 text ({error.reason} at byte "
                            f"{error.start}){hint}") from None


def read_class_names(path):
    """The class names of a --class_names file (one per line, blank lines ignored)."""
    names = class_names_file.parse(_read_text(path, "--class_names file"))
    if not names:
        raise BadInput(f"--class_names file {path} holds no class names (expected one "
                            "name per line, in index order)")
    return names


def read_entries(labels_csv, videos_dir, split=None, class_names=None):
    """`builder.read_labels_csv`, with every problem a one-line error naming the CSV, and a
    CSV that yields no video that exists refused (`TrainingError`)."""
    import csv

    from lgd_io.builder import labels

    text = _read_text(labels_csv, "labels CSV")  # exists, is a file, is text
    try:
        table = labels.read_labels_csv(labels_csv, videos_dir, split=split,
                                        class_names=class_names)
    except (ValueError, csv.Error) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        if labels_csv not in message:
            message = f"{labels_csv}: {message}"
        hint = "" if "class_names" in message or "expected" in message else (
            f"; expected {CSV_FORMS}")
        raise BadInput(f"bad labels CSV: {message}{hint}") from None
    entries, missing = table.entries, table.missing
    if not entries:
        if missing:
            first_row = next((line.strip() for line in text.splitlines() if line.strip()), "")
            found = (f"no video of its {len(missing)} rows was found under {videos_dir} "
                     f"(first row {first_row!r}: {missing[0][0]}: {missing[0][1]})")
        elif split is not None:
            found = f"no row has split '{split}' (--split)"
        else:
            found = "it has no rows"
        raise BadInput(f"labels CSV {labels_csv} yields 0 usable videos: {found}; "
                            f"expected {CSV_FORMS}")
    return table


def _check_folders(fv):
    if not os.path.exists(fv.videos_dir):
        raise BadInput(f"--videos_dir not found: {fv.videos_dir} (expected the folder "
                            "holding the videos)")
    if not os.path.isdir(fv.videos_dir):
        raise BadInput(f"--videos_dir is not a folder: {fv.videos_dir}")
    if os.path.exists(fv.output_dir) and not os.path.isdir(fv.output_dir):
        raise BadInput(f"--output_dir is not a folder: {fv.output_dir}")


def _beam_args(fv, trailing):
    """The Beam pipeline options of --runner=beam (None for the local runner)."""
    if fv.runner != "beam":
        if fv.beam_pipeline_options or trailing:
            what = "--beam_pipeline_options" if fv.beam_pipeline_options else trailing
            raise BadInput(f"{what} given without --runner=beam")
        return None
    try:
        return shlex.split(fv.beam_pipeline_options) + list(trailing)
    except ValueError as error:
        raise BadInput(f"--beam_pipeline_options: {error}") from None


def _build(fv, table, beam_args):
    from lgd_io.builder import local, shards

    options = shards.EncodeOptions(short_side=fv.short_side or None, fps=fv.fps,
                                   flow=fv.flow, quality=fv.jpeg_quality)
    kwargs = dict(prefix=fv.prefix or fv.split or "train", num_shards=fv.num_shards,
                  num_workers=fv.num_workers, options=options)
    if beam_args is None:
        return local.build_from_videos(table.entries, fv.output_dir, **kwargs)
    try:
        from lgd_io.builder import beam_runner
    except ImportError as error:
        raise BadInput(f"--runner=beam needs Apache Beam ({error}); install it with "
                       "`pip install 'lgd_tf[beam]'`") from None
    return beam_runner.build_with_beam(table.entries, fv.output_dir,
                                       pipeline_args=beam_args, **kwargs)


def _classes_without_videos(output_dir, prefix, class_names):
    """Names of the classes that no record of the finished shards holds."""
    from lgd_io.builder import shards

    seen = set()
    for path in shards.finished_shards(output_dir, prefix):
        manifest = shards.read_manifest(shards.manifest_path(path)) or {}
        status = manifest.get("status", {})
        seen.update(v["label"] for v in manifest.get("videos", [])
                    if status.get(v["media_id"]) == "written")
    return [name for i, name in enumerate(class_names) if i not in seen]


def _remove_empty_shards(summary, fv, tried):
    """Every video this run tried failed to decode: the shards it wrote are empty. Removes
    them, so that a rerun (after fixing the videos) does not take them as finished."""
    from lgd_io.builder import shards

    for path in summary.shards_written:
        files.remove_quietly(path)
        files.remove_quietly(shards.manifest_path(path))
    folder = os.path.dirname(shards.manifest_path(summary.shards_written[0]))
    if os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)
    raise BadInput(f"none of the {tried} videos read from {fv.labels_csv} could be decoded "
                   f"(see the summary above); the {len(summary.shards_written)} empty shards "
                   f"were removed from {fv.output_dir}")


def main(fv, trailing=()):
    if fv["verbosity"].value is None:
        logging.set_verbosity(logging.INFO)  # the progress line and the skipped videos
    _check_folders(fv)
    beam_args = _beam_args(fv, trailing)
    names = read_class_names(fv.class_names) if fv.class_names else None
    table = read_entries(fv.labels_csv, fv.videos_dir, split=fv.split, class_names=names)
    for name, reason in table.missing:
        logging.warning("Skipping %s: %s", name, reason)
    with files.folder_lock(fv.output_dir, in_use_hint="wait for that build to end, or give "
                           "another --output_dir"):
        summary = _build(fv, table, beam_args)
        summary.skipped = list(table.missing) + summary.skipped
        summary.duplicates += table.duplicates
        empty = _classes_without_videos(fv.output_dir, fv.prefix or fv.split or "train",
                                        table.class_names)
        if empty and summary.written:
            summary.notes.append(f"{len(empty)} classes have no video (their rows were "
                                 f"missing or failed): {', '.join(map(repr, empty))}")
        print(summary, flush=True)
        if summary.written == 0 and summary.shards_written:
            _remove_empty_shards(summary, fv, len(summary.skipped) - len(table.missing))
        class_names_file.write(fv.output_dir, table.class_names)


def _define_all():
    fv = flags.FlagValues()
    define_flags(fv)
    flags.DEFINE_integer("verbosity", None, "absl log level (e.g. 0 for INFO); default: "
                         "errors only.", flag_values=fv)
    for name in ("videos_dir", "labels_csv", "output_dir"):
        flags.mark_flag_as_required(name, flag_values=fv)
    return fv


def _error(message):
    print(f"{PROGRAM}: error: {message}", file=sys.stderr, flush=True)


def run(argv=None):
    """Runs the command on `argv` (default sys.argv; argv[0] is the program); returns the
    exit code (0, 1 run-time failure, 2 bad input). Console scripts `sys.exit(run())`."""
    argv = list(sys.argv if argv is None else argv)
    fv = _define_all()
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv[1:]):
        print(f"{__doc__.strip()}\n\nFlags:\n{fv.get_help()}")
        return 0
    try:
        trailing = fv(argv)[1:]
    except flags.Error as error:
        _error(f"{one_line(error)} (see --help)")
        return 2
    verbosity = fv["verbosity"].value
    logging.set_verbosity(logging.ERROR if verbosity is None else verbosity)
    try:
        main(fv, trailing)
    except LgdError as error:
        _error(one_line(error))
        return error.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return 1
    except OSError as error:
        _error(f"{error.filename + ': ' if error.filename else ''}{error.strerror or error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
