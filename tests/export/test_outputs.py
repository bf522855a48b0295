"""Nothing replaced until the whole command succeeded: predict --timeline and explain stage both
their files, export refuses another run's folder and a folder another export is writing."""

import errno
import json
import os
import shutil
import subprocess
import sys
import time

import keras
import pytest

from lgd_tf import explain, export, predict
from lgd_tf.analysis import rendering
from lgd_tf.inference import timeline as timeline_lib
from tests.export.conftest import record_run, tiny_lgd3d
from tests.locks import lock_held_by_another_process


def _run(command, capsys, *args):
    code = command.run(["command", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err, program):
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"{program}: error: "), err
    return lines[0][len(f"{program}: error: "):]


def _tree(folder):
    """{relative path: bytes} of every file under `folder` (hidden ones included)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _disk_full(path):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_timeline_files_are_unchanged_after_the_png_fails(recorded_run, videos, tmp_path,
                                                          capsys, monkeypatch):
    prefix = tmp_path / "timeline"
    old = {tmp_path / "timeline.csv": b"old csv\n", tmp_path / "timeline.png": b"old png"}
    for path, content in old.items():
        path.write_bytes(content)

    def png_fails(timeline, path=None, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a png")
        _disk_full(path)

    monkeypatch.setattr(timeline_lib, "timeline_figure_png", png_fails)
    code, out, err = _run(predict, capsys, f"--model={recorded_run}",
                          f"--video={videos['dark']}", f"--timeline={prefix}")
    assert code == 1 and out == ""
    assert _error_line(err, "lgd_tf.predict") == (
        f"cannot write --timeline {prefix}.png: No space left on device")
    assert {p: p.read_bytes() for p in old} == old
    assert sorted(os.listdir(tmp_path)) == ["timeline.csv", "timeline.png"]


def test_timeline_outputs_are_checked_before_the_work(recorded_run, videos, tmp_path, capsys):
    (tmp_path / "timeline.csv").write_bytes(b"old csv\n")
    (tmp_path / "timeline.png").mkdir()
    code, out, err = _run(predict, capsys, f"--model={recorded_run}",
                          f"--video={videos['dark']}", f"--timeline={tmp_path / 'timeline'}")
    assert code == 2 and out == ""
    assert _error_line(err, "lgd_tf.predict") == (
        f"--timeline={tmp_path / 'timeline.png'} is a folder; give a file path")
    assert (tmp_path / "timeline.csv").read_bytes() == b"old csv\n"


def test_explain_video_is_unchanged_after_the_png_fails(recorded_run, videos, tmp_path,
                                                        capsys, monkeypatch):
    output = tmp_path / "cam.gif"
    old = {output: b"old gif", tmp_path / "cam.png": b"old png"}
    for path, content in old.items():
        path.write_bytes(content)
    monkeypatch.setattr(rendering, "save_grid", lambda path, *a, **k: _disk_full(path))
    code, out, err = _run(explain, capsys, f"--model={recorded_run}",
                          f"--video={videos['dark']}", f"--output={output}")
    assert code == 1
    assert _error_line(err, "lgd_tf.explain") == (
        f"cannot write --output {tmp_path / 'cam.png'}: No space left on device")
    assert {p: p.read_bytes() for p in old} == old
    assert sorted(os.listdir(tmp_path)) == ["cam.gif", "cam.png"]


def test_explain_outputs_are_checked_before_the_work(recorded_run, videos, tmp_path, capsys):
    output = tmp_path / "missing" / "cam.gif"
    code, out, err = _run(explain, capsys, f"--model={recorded_run}",
                          f"--video={videos['dark']}", f"--output={output}")
    assert code == 2 and out == ""
    assert _error_line(err, "lgd_tf.explain") == (
        f"--output={output}: folder {output.parent} does not exist; create it first")


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory):
    """Two runs that are not the recorded one: other class names, another architecture."""
    keras.utils.set_random_seed(3)
    folder = tmp_path_factory.mktemp("other_runs")
    return {"classes": record_run(tiny_lgd3d(), folder / "classes", ["night", "day"]),
            "architecture": record_run(tiny_lgd3d(base_filters=4), folder / "architecture")}


@pytest.fixture(scope="module")
def litert_export(recorded_run, tmp_path_factory):
    export_dir = tmp_path_factory.mktemp("mixed") / "export"
    assert export.run(["export", f"--model_dir={recorded_run}", f"--export_dir={export_dir}",
                       "--format=litert"]) == 0
    return export_dir


@pytest.mark.parametrize("other, what", [
    ("classes", "class 0 is 'dark' there and 'night' here"),
    ("architecture", "its model has base_filters=8, this one base_filters=4"),
])
@pytest.mark.parametrize("args", [["--format=litert"], ["--format=onnx"], ["--version=2"]])
def test_export_into_another_runs_folder_is_refused(other, what, args, other_runs,
                                                    litert_export, capsys):
    before = _tree(litert_export)
    code, out, err = _run(export, capsys, f"--model_dir={other_runs[other]}",
                          f"--export_dir={litert_export}", *args)
    assert code == 2 and out == ""
    assert _error_line(err, "lgd_tf.export") == (
        f"--export_dir={litert_export} holds the export of another run ({what}); export "
        "into another --export_dir")
    assert _tree(litert_export) == before


def test_another_run_with_the_same_classes_and_model_is_refused(recorded_run, litert_export,
                                                                tmp_path, capsys):
    """A retrain of the same config into another run folder: only the run id tells them
    apart, and it is enough to refuse."""
    twin = tmp_path / "twin"
    shutil.copytree(recorded_run, twin)
    record = json.loads((twin / "run.json").read_text())
    record["run_id"] = "0" * 32
    (twin / "run.json").write_text(json.dumps(record))
    exported = json.loads((litert_export / "export.json").read_text())["run_id"]
    before = _tree(litert_export)
    code, out, err = _run(export, capsys, f"--model_dir={twin}",
                          f"--export_dir={litert_export}", "--format=onnx")
    assert code == 2 and out == ""
    assert _error_line(err, "lgd_tf.export") == (
        f"--export_dir={litert_export} holds the export of another run (run {exported[:8]} "
        "there, run 00000000 here, with the same classes and model); export into another "
        "--export_dir")
    assert _tree(litert_export) == before


def test_the_same_run_adds_formats_and_versions(recorded_run, litert_export, capsys):
    """The folder's own run may add another format and a new version."""
    tflite = (litert_export / "model.tflite").read_bytes()
    code, out, err = _run(export, capsys, f"--model_dir={recorded_run}",
                          f"--export_dir={litert_export}", "--version=3")
    assert code == 0, err
    assert (litert_export / "3" / "saved_model.pb").is_file()
    assert (litert_export / "model.tflite").read_bytes() == tflite


def test_a_second_export_into_a_folder_being_written_is_refused(recorded_run, tmp_path):
    """Another process holds the export folder's lock (as an export does while it writes):
    the export exits 1 saying so and writes nothing."""
    export_dir = tmp_path / "export"
    with lock_held_by_another_process(export_dir) as holder_pid:
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "lgd_tf.export", f"--model_dir={recorded_run}",
             f"--export_dir={export_dir}", "--format=litert"],
            capture_output=True, text=True, timeout=300,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.getcwd()))
        assert time.monotonic() - start < 120
    assert result.returncode == 1 and result.stdout == ""
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"lgd_tf.export: error: {export_dir} is in use by pid {holder_pid} ")
    assert "another export is writing there" in line
    assert sorted(os.listdir(export_dir)) == [".lock"]
