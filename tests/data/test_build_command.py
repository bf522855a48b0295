"""`lgd_tf.build_tfrecords`, the TFRecord builder command: a real build, one-line errors with
exit 2 for bad input, exit 1 when class_names.txt cannot be written, `--help`, the wrapper."""

import errno
import glob
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from lgd_io import files
from lgd_tf import build_tfrecords
from lgd_tf.data import schema
from tests.data import helpers

PROGRAM = "lgd_tf.build_tfrecords"


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three tiny real videos (2 classes) and a `path,label` CSV naming them."""
    root = tmp_path_factory.mktemp("build_command")
    folder = root / "videos"
    (folder / "sub").mkdir(parents=True)
    for name, n, codec in (("a.mp4", 5, "libx264"), ("sub/b.webm", 6, "libvpx"),
                           ("c.mp4", 7, "libx264")):
        helpers.write_video(folder / name, helpers.indexed_frames(n, 24, 32), codec)
    csv_path = root / "labels.csv"
    csv_path.write_text("path,label\na.mp4,walk\nsub/b.webm,run\nc.mp4,walk\n")
    return folder, csv_path


def _run(capsys, *args):
    code = build_tfrecords.run([PROGRAM, *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def _records(pattern):
    out = {}
    for path in tf.io.gfile.glob(pattern):
        for record in tf.data.TFRecordDataset(path):
            parsed = schema.parse_record(record, "rgb")
            frames = np.stack([tf.io.decode_jpeg(j).numpy() for j in parsed["frames"]])
            context = tf.train.SequenceExample.FromString(record.numpy()).context.feature
            label_string = context["clip/label/string"].bytes_list.value[0].decode()
            out[parsed["media_id"].numpy().decode()] = (frames, int(parsed["label"]),
                                                         label_string)
    return out


def test_builds_records_and_class_names(videos, tmp_path, capsys):
    folder, csv_path = videos
    out = tmp_path / "out"
    args = [f"--videos_dir={folder}", f"--labels_csv={csv_path}", f"--output_dir={out}",
            "--num_shards=2", "--num_workers=1", "--short_side=16", "--prefix=val"]
    code, stdout, _ = _run(capsys, *args)
    assert code == 0
    assert "written 3 videos into 2 shards" in stdout and "skipped 0 videos" in stdout
    assert sorted(os.listdir(out)) == [".lock", "class_names.txt",
                                       "val-00000-of-00002.tfrecord",
                                       "val-00001-of-00002.tfrecord",
                                       "val.manifest"]  # no temporary files
    assert (out / ".lock").read_text() == ""  # released (emptied) when the build ended
    assert (out / "class_names.txt").read_text() == "run\nwalk\n"  # sorted names
    records = _records(str(out / "val-*"))
    assert sorted(records) == ["a", "c", "sub/b"]  # paths without their extension
    for media_id, (n, label) in {"a": (5, 1), "sub/b": (6, 0), "c": (7, 1)}.items():
        frames, got_label, label_string = records[media_id]
        assert (got_label, label_string) == (label, ["run", "walk"][label])
        assert frames.shape == (n, 16, 21, 3)  # 24 x 32 -> shorter side 16
        np.testing.assert_array_equal(helpers.frame_indices(frames), np.arange(n))
    # The same command again resumes: both shards are kept, nothing is re-encoded.
    code, stdout, _ = _run(capsys, *args)
    assert code == 0 and "written 0 videos into 0 shards, kept 2 finished shards" in stdout


def test_class_names_file_sets_the_indices(videos, tmp_path, capsys):
    folder, csv_path = videos
    names = tmp_path / "names.txt"
    names.write_text("walk\n\nrun\njump\n")
    out = tmp_path / "out"
    code, stdout, _ = _run(capsys, f"--videos_dir={folder}", f"--labels_csv={csv_path}",
                           f"--output_dir={out}", f"--class_names={names}", "--num_shards=1",
                           "--num_workers=1", "--short_side=16")
    assert code == 0 and "written 3 videos" in stdout
    assert (out / "class_names.txt").read_text() == "walk\nrun\njump\n"
    assert {k: v[1] for k, v in _records(str(out / "train-*")).items()} == {
        "a": 0, "sub/b": 1, "c": 0}


def _bad_inputs(root, folder, csv_path):
    """(name, flags, what the error line must contain) for each bad input."""
    out = root / "out"
    good = {"videos_dir": folder, "labels_csv": csv_path, "output_dir": out}
    kinetics = root / "kinetics.csv"
    kinetics.write_text("label,youtube_id,time_start,time_end,split\n"
                        "walk,abcdefghijk,0,10,train\n")
    other = root / "other.csv"
    other.write_text("video,class\nx.mp4,walk\n")  # neither form: rows name no file
    empty = root / "empty.csv"
    empty.write_text("\n")
    one_column = root / "one_column.csv"
    one_column.write_text("a.mp4\n")
    header_only = root / "header_only.csv"
    header_only.write_text("path,label\n")
    semicolons = root / "semicolons.csv"
    semicolons.write_text("path;label\na.mp4;walk\nc.mp4;walk\n")
    binary = root / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")
    cases = [(f"missing --{name}", {**good, name: None}, f"--{name}") for name in good]
    cases += [
        ("no videos_dir", {**good, "videos_dir": root / "nope"}, f"{root / 'nope'}"),
        ("videos_dir is a file", {**good, "videos_dir": csv_path}, f"{csv_path}"),
        ("no labels CSV", {**good, "labels_csv": root / "no.csv"}, f"{root / 'no.csv'}"),
        ("Kinetics CSV, no video", {**good, "labels_csv": kinetics}, f"{kinetics}"),
        ("Kinetics CSV, no row of the split", {**good, "labels_csv": kinetics,
                                               "split": "val"}, "split 'val'"),
        ("unknown CSV form", {**good, "labels_csv": other}, f"{other}"),
        ("empty CSV", {**good, "labels_csv": empty}, f"{empty}"),
        ("one-column CSV", {**good, "labels_csv": one_column}, f"{one_column}"),
        ("header-only CSV", {**good, "labels_csv": header_only}, "header row but no rows"),
        ("semicolon CSV", {**good, "labels_csv": semicolons}, "separated by ';'"),
        ("binary CSV", {**good, "labels_csv": binary}, f"{binary}"),
        ("no class_names file", {**good, "class_names": root / "names.txt"},
         f"{root / 'names.txt'}"),
        ("class_names lacks a label", {**good, "class_names": csv_path.parent / "walk.txt"},
         "not in class_names"),
    ]
    (csv_path.parent / "walk.txt").write_text("walk\n")
    return cases


def test_bad_inputs_exit_2_in_one_line_naming_the_file(videos, tmp_path, capsys):
    folder, csv_path = videos
    failed = []
    for name, values, needle in _bad_inputs(tmp_path, folder, csv_path):
        code, stdout, err = _run(capsys, *[f"--{k}={v}" for k, v in values.items() if v],
                                 "--num_workers=1")
        ok = (code == 2 and len(err) == 1 and err[0].startswith(f"{PROGRAM}: error: ")
              and needle in err[0])
        if not ok:
            failed.append((name, code, err))
        if name in ("unknown CSV form", "Kinetics CSV, no video", "empty CSV", "one-column CSV",
                    "header-only CSV", "semicolon CSV"):
            assert "label,youtube_id,time_start,time_end,split" in err[0], err
            assert "`path,label`" in err[0], err
    assert not failed, failed
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_undecodable_videos_exit_2_and_leave_no_empty_shards(tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "text.mp4").write_bytes(b"plain text, no video")
    (folder / "empty.webm").write_bytes(b"")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("text.mp4,0\nempty.webm,1\n")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, f"--videos_dir={folder}", f"--labels_csv={csv_path}",
                             f"--output_dir={out}", "--num_shards=2", "--num_workers=1")
    errors = [line for line in err if line.startswith(f"{PROGRAM}: error: ")]
    assert code == 2 and len(errors) == 1 and str(csv_path) in errors[0], err
    assert "skipped 2 videos" in stdout
    assert os.listdir(out) == [".lock"]  # no empty shards left that a rerun would keep


def test_class_names_write_failure_exits_1_naming_the_path(videos, tmp_path, capsys,
                                                            monkeypatch):
    folder, csv_path = videos
    out = tmp_path / "out"
    rename = files.replace

    def disk_full(src, dst):
        if os.path.basename(dst) == "class_names.txt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)
        return rename(src, dst)

    monkeypatch.setattr(files, "replace", disk_full)
    code, _, err = _run(capsys, f"--videos_dir={folder}", f"--labels_csv={csv_path}",
                        f"--output_dir={out}", "--num_shards=1", "--num_workers=1",
                        "--short_side=16")
    assert code == 1, err
    assert err == [f"{PROGRAM}: error: cannot write {out / 'class_names.txt'}: "
                   f"{os.strerror(errno.ENOSPC)}"]
    assert sorted(os.listdir(out)) == [".lock", "train-00000-of-00001.tfrecord",
                                       "train.manifest"]  # no temporary file


def test_help(capsys):
    assert build_tfrecords.run([PROGRAM, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Exit codes: 0" in out
    for flag in ("--videos_dir", "--labels_csv", "--output_dir", "--class_names", "--flow"):
        assert flag in out


@pytest.mark.subprocess
def test_checkout_wrapper_script(repo_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run(
        [sys.executable, str(repo_root / "tfrecords" / "build_tfrecords.py"), "--help"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "lgd_tf.build_tfrecords" in result.stdout and "--videos_dir" in result.stdout


_SLOW_BUILD = """
import sys, time
from lgd_io import video
real = video.iter_frames
def slow(*args, **kwargs):
    time.sleep(0.25)
    return real(*args, **kwargs)
video.iter_frames = slow  # the forked workers of this TensorFlow-free command see it
from lgd_io.builder import command
sys.exit(command.run(sys.argv))
"""


def _two_class_build(tmp_path, num_videos, num_shards):
    """`num_videos` 3-frame 16x16 videos v0, v1, ... labelled c0 / c1 alternately; returns
    (names, output folder, the build command's flags)."""
    folder = tmp_path / "videos"
    folder.mkdir()
    names = [f"v{i}" for i in range(num_videos)]
    for name in names:
        helpers.write_video(folder / f"{name}.mp4", helpers.indexed_frames(3, 16, 16),
                            "libx264")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\n" + "".join(f"{n}.mp4,c{i % 2}\n"
                                                 for i, n in enumerate(names)))
    out = tmp_path / "out"
    return names, out, [f"--videos_dir={folder}", f"--labels_csv={csv_path}",
                        f"--output_dir={out}", f"--num_shards={num_shards}",
                        "--num_workers=1", "--short_side=16"]


@pytest.mark.subprocess
def test_sigkill_mid_build_then_rerun_writes_every_video_once(tmp_path, subprocess_env,
                                                              capsys):
    names, out, args = _two_class_build(tmp_path, 8, num_shards=4)
    process = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, *args],
                               env=subprocess_env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, finished = time.time() + 120, []
    while time.time() < deadline and not finished and process.poll() is None:
        finished = glob.glob(str(out / "train-*.tfrecord"))
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the command and its worker
    process.wait(timeout=30)
    finished = glob.glob(str(out / "train-*.tfrecord"))
    manifests = glob.glob(str(out / "train.manifest" / "*.json"))
    assert 1 <= len(finished) < 4, finished  # killed after the first shard was renamed
    code, stdout, err = _run(capsys, *args)
    assert code == 0, err
    # A shard with its manifest is kept; one renamed just before the kill, without its
    # manifest yet, is rebuilt.
    assert f"kept {len(manifests)} finished shards" in stdout, stdout
    ids = [m for m, _, _ in helpers.read_media_ids(str(out / "train-*"))]
    assert sorted(ids) == names  # each video exactly once
    assert not [n for n in os.listdir(out) if ".tmp" in n]  # the killed run's file removed


def test_kinetics_csv_rerun_after_adding_a_row(tmp_path, capsys):
    """A Kinetics CSV with a BOM: an untrimmed file gives one record per row; a row added
    later rebuilds only its shard (the summary says why); a duplicate row is counted."""
    folder = tmp_path / "videos"
    folder.mkdir()
    helpers.write_video(folder / "abcdefghijk.mp4", helpers.indexed_frames(30, 24, 32),
                        "libx264", fps=10)
    csv_path = tmp_path / "k.csv"
    header = "\ufefflabel,youtube_id,time_start,time_end,split\n"
    rows = ["walk,abcdefghijk,0,1,train\n", "run,abcdefghijk,1,2,train\n"]
    csv_path.write_text(header + "".join(rows), encoding="utf-8")
    out = tmp_path / "out"
    args = [f"--videos_dir={folder}", f"--labels_csv={csv_path}", f"--output_dir={out}",
            "--num_shards=4", "--num_workers=1", "--short_side=16", "--split=train"]
    code, stdout, _ = _run(capsys, *args)
    assert code == 0 and "written 2 videos into 4 shards" in stdout
    csv_path.write_text(header + "".join(rows + ["run,abcdefghijk,2,3,train\n", rows[0]]),
                        encoding="utf-8")
    code, stdout, _ = _run(capsys, *args)
    assert code == 0
    assert "written 1 videos into 1 shards, kept 3 finished shards" in stdout, stdout
    assert "dropped 1 duplicate rows" in stdout and "(videos 1 added)" in stdout
    records = helpers.read_media_ids(str(out / "train-*"))
    assert sorted((m, n) for m, n, _ in records) == [
        ("abcdefghijk_000000_000001", 10), ("abcdefghijk_000001_000002", 10),
        ("abcdefghijk_000002_000003", 10)]


@pytest.mark.subprocess
def test_a_second_builder_on_the_folder_exits_1_naming_the_first(tmp_path, subprocess_env,
                                                                 capsys):
    names, out, args = _two_class_build(tmp_path, 6, num_shards=2)
    first = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, *args], env=subprocess_env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (
            (out / ".lock").exists() and (out / ".lock").read_text().strip()):
        time.sleep(0.02)
    code, stdout, err = _run(capsys, *args)
    first_out, _ = first.communicate(timeout=120)
    assert code == 1 and stdout == ""
    assert len(err) == 1 and err[0].startswith(f"{PROGRAM}: error: {out} is in use by "
                                               f"pid {first.pid} on {socket.gethostname()}")
    assert "another --output_dir" in err[0]
    # The first build was not disturbed: it wrote every video, each once.
    assert first.returncode == 0 and "written 6 videos into 2 shards" in first_out
    assert sorted(m for m, _, _ in helpers.read_media_ids(str(out / "train-*"))) == names


def test_a_stale_lock_is_taken_over_with_a_line(videos, tmp_path, capsys):
    folder, csv_path = videos
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_text("pid 4000000 on elsewhere (since 2026-01-01T00:00:00)\n")
    code, stdout, err = _run(capsys, f"--videos_dir={folder}", f"--labels_csv={csv_path}",
                             f"--output_dir={out}", "--num_shards=1", "--num_workers=1",
                             "--short_side=16")
    assert code == 0 and "written 3 videos" in stdout
    assert f"{out}: took over the lock left by pid 4000000 on elsewhere (since " \
           "2026-01-01T00:00:00) (no longer running)" in err


def test_summary_once_empty_class_named_and_files_get_the_umask(videos, tmp_path, capsys):
    folder, _ = videos
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\na.mp4,walk\nsub/b.webm,run\ngone.mp4,jump\n")
    out = tmp_path / "out"
    previous = os.umask(0o027)
    try:
        code, stdout, err = _run(capsys, f"--videos_dir={folder}", f"--labels_csv={csv_path}",
                                 f"--output_dir={out}", "--num_shards=2", "--num_workers=2",
                                 "--short_side=16")
    finally:
        os.umask(previous)
    assert code == 0
    # Printed once, on stdout: not again on stderr.
    assert stdout.count("written 2 videos into 2 shards") == 1
    assert not [line for line in err if "written 2 videos" in line]
    # The class whose only video is missing keeps its index and is named.
    assert "1 classes have no video (their rows were missing or failed): 'jump'" in stdout
    assert (out / "class_names.txt").read_text() == "jump\nrun\nwalk\n"
    written = glob.glob(str(out / "train-*")) + glob.glob(str(out / "train.manifest" / "*"))
    written.append(str(out / "class_names.txt"))
    assert len(written) == 5
    assert {oct(os.stat(p).st_mode & 0o777) for p in written} == {oct(0o666 & ~0o027)}


_FORK_AND_DIE = """
import os, signal, sys, time
from lgd_io import files
with files.folder_lock(sys.argv[1]):
    if os.fork() == 0:
        # Printed once os.fork has returned here: the at-fork hooks have run in this child.
        print(os.getpid(), flush=True)
        time.sleep(60)  # a worker that outlives its killed parent for a while
        os._exit(0)
    time.sleep(60)  # killed by the test once the child is running
"""


@pytest.mark.subprocess
def test_a_forked_worker_does_not_keep_a_killed_builders_lock(tmp_path, subprocess_env):
    process = subprocess.Popen([sys.executable, "-c", _FORK_AND_DIE, str(tmp_path)],
                               env=subprocess_env, stdout=subprocess.PIPE, text=True)
    child = int(process.stdout.readline())
    process.kill()  # SIGKILL: the builder dies holding its lock
    process.wait(timeout=30)
    process.stdout.close()
    try:
        assert process.returncode == -signal.SIGKILL
        os.kill(child, 0)  # the child still runs
        assert files.lock_holder(str(tmp_path)) is None
    finally:
        os.kill(child, signal.SIGKILL)


def test_the_build_command_is_started_without_tensorflow():
    from lgd_io.builder import launch

    exe = sys.executable
    assert launch.build_command_argv(
        ["python", "-X", "importtime", "-m", "lgd_tf.build_tfrecords", "--flow", "-m"],
        ["-m"]) == [exe, "-X", "importtime", "-m", "lgd_io.builder.command", "--flow", "-m"]
    assert launch.build_command_argv(["/venv/bin/python", "/venv/bin/lgd-build-tfrecords",
                                      "--help"], ["/venv/bin/lgd-build-tfrecords",
                                                  "--help"]) == [
        exe, "-m", "lgd_io.builder.command", "--help"]
    assert launch.build_command_argv(["python", "-m", "lgd_tf.train", "--help"], ["-m"]) is None
    assert launch.build_command_argv(["/venv/bin/lgd-train"], ["/venv/bin/lgd-train"]) is None


def test_beam_options_without_the_beam_runner_exit_2(videos, tmp_path, capsys):
    folder, csv_path = videos
    code, _, err = _run(capsys, f"--videos_dir={folder}", f"--labels_csv={csv_path}",
                        f"--output_dir={tmp_path / 'out'}",
                        "--beam_pipeline_options=--runner=DataflowRunner")
    assert code == 2
    assert err == [f"{PROGRAM}: error: --beam_pipeline_options given without --runner=beam"]
    assert not (tmp_path / "out").exists()  # refused before any output
