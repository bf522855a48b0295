"""`lgd_tf.export` on the command layer: --help, exit codes with one-line errors, atomic
writes that keep what export_dir held, and the training run's evaluation sampling."""

import ast
import errno
import json
import pathlib
import shutil
import sys

import keras
import pytest
import tensorflow as tf

import lgd_tf.serving
from lgd_tf import export, predict
from lgd_tf.inference import classifier
from lgd_tf.inference import predict as predict_lib
from lgd_tf.serving import export as export_lib
from lgd_tf.serving import module
from tests.export.conftest import NUM_FRAMES, record_run

PREFIX = "lgd_tf.export: error: "

def _run(capsys, *args):
    code = export.run(["export", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err):
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(PREFIX), err
    return lines[0][len(PREFIX):]


def _tree(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _served_sampling(saved_model_dir):
    loaded = tf.saved_model.load(str(saved_model_dir))
    return json.loads(loaded.sampling_json.numpy())


@pytest.fixture
def run_dir(trained_model_dir, tmp_path):
    """A training run folder whose record samples 2 clips at short side 32, stride 2, pad."""
    model = keras.saving.load_model(trained_model_dir / "stage2.keras", safe_mode=True)
    return record_run(model, tmp_path / "run",
                      eval_sampling={"num_clips": 2, "short_side": 32, "temporal_stride": 2,
                                     "short_video": "pad"})


@pytest.mark.parametrize("command, first_line, flags", [
    (export, "`python -m lgd_tf.export --model_dir=... --export_dir=...`",
     ["model_dir", "export_dir", "version", "num_clips", "short_video"]),
    (predict, "`python -m lgd_tf.predict --model=PATH --video=a.mp4`",
     ["model", "video", "top_k", "fuse_with", "json"]),
])
def test_help_shows_the_usage_and_the_flags_and_exits_0(command, first_line, flags, capsys):
    assert command.run(["prog", "--help"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(first_line) and err == ""
    assert "Exit codes: 0" in out and "\nFlags:\n" in out
    usage, flag_help = out.split("\nFlags:\n")
    body = sys.modules[command.COMMAND.main.__module__]  # lgd_tf.cli.<command>
    assert usage.strip() == body.__doc__.strip()
    for flag in flags:
        assert f"--{flag}:" in flag_help or f"--[no]{flag}:" in flag_help, flag


def test_usage_and_input_errors_exit_2_with_one_line(exported, trained_model_dir, tmp_path,
                                                     capsys):
    export_dir, _ = exported
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    model = f"--model_dir={trained_model_dir}"
    cases = {
        "unknown flag": ([model, f"--export_dir={tmp_path / 'o'}", "--num_clip=3"],
                         "num_clip"),
        "missing required flag": ([model], "--export_dir"),
        "missing model": ([f"--model_dir={tmp_path / 'nope'}", f"--export_dir={tmp_path / 'o'}"],
                          "nope"),
        "existing version": ([model, f"--export_dir={export_dir}", "--version=1"],
                             "already exists"),
        "export_dir under a file": ([model, f"--export_dir={a_file / 'export'}"],
                                    f"{a_file} is a file"),
        "export_dir is a file": ([model, f"--export_dir={a_file}"], "is a file"),
        "bad num_crops": ([model, f"--export_dir={tmp_path / 'o'}", "--num_crops=2"],
                          "--num_crops must be 1 or 3"),
        "bad short_video": ([model, f"--export_dir={tmp_path / 'o'}", "--short_video=x"],
                            "short_video"),
        "negative version": ([model, f"--export_dir={tmp_path / 'o'}", "--version=-1"],
                             "--version"),
    }
    before = _tree(export_dir)
    for case, (args, expected) in cases.items():
        code, out, err = _run(capsys, *args)
        assert code == 2, (case, err)
        assert out == "", case
        assert expected in _one_error_line(err), (case, err)
    assert _tree(export_dir) == before
    assert not (tmp_path / "o").exists() and a_file.read_text() == "not a folder"


def _failing_save(error):
    def save(obj, export_dir, signatures=None, **kwargs):
        del obj, signatures, kwargs
        # Half a SavedModel, then the disk fills up.
        pathlib.Path(export_dir, "variables").mkdir(parents=True)
        pathlib.Path(export_dir, "saved_model.pb").write_bytes(b"half")
        raise error

    return save


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (tf.errors.ResourceExhaustedError(None, None, "out of disk space"), "out of disk space"),
    (tf.errors.PermissionDeniedError(None, None, "permission denied"), "permission denied"),
])
def test_write_failure_exits_1_and_keeps_the_versions_already_there(
        exported, trained_model_dir, tmp_path, monkeypatch, capsys, error, reason):
    export_dir = tmp_path / "served"
    shutil.copytree(exported[0], export_dir)
    before = _tree(export_dir)
    monkeypatch.setattr(tf.saved_model, "save", _failing_save(error))
    code, out, err = _run(capsys, f"--model_dir={trained_model_dir}",
                          f"--export_dir={export_dir}", "--version=2", "--short_side=32")
    assert code == 1, err
    line = _one_error_line(err)
    assert line.startswith(f"cannot write the export in {export_dir}: ") and reason in line
    assert line.endswith("; what was in it before is unchanged")
    assert out == ""
    assert _tree(export_dir) == before  # version 1, model.keras, class names; nothing else
    assert sorted(p.name for p in export_dir.iterdir()) == [
        ".lock", "1", "class_names.txt", "export.json", "model.keras"]
    # ... and version 1 still serves.
    assert _served_sampling(export_dir / "1")["short_side"] == 32


def test_write_failure_removes_the_folders_it_created(trained_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(tf.saved_model, "save",
                        _failing_save(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(export_lib.ExportWriteError) as info:
        export_lib.export_model(trained_model_dir, tmp_path / "new" / "export", short_side=32,
                                num_clips=2)
    assert info.value.filename == str(tmp_path / "new" / "export")
    assert info.value.reason == "No space left on device" and info.value.exit_code == 1
    assert list(tmp_path.iterdir()) == []


def test_export_uses_the_runs_evaluation_sampling_and_flags_override_it(run_dir, tmp_path,
                                                                         capsys):
    export_dir = tmp_path / "export"
    record = run_dir / "run.json"
    code, out, err = _run(capsys, f"--model_dir={run_dir}", f"--export_dir={export_dir}")
    assert code == 0, err
    expected = {"model": "3d", "num_frames": NUM_FRAMES, "num_segments": 3, "num_clips": 2,
                "num_crops": 1, "short_side": 32, "temporal_stride": 2, "short_video": "pad"}
    assert _served_sampling(export_dir / "1") == expected
    assert classifier.load_classifier(export_dir).sampling == module.Sampling(**expected)
    assert (f"sampling: 2 clips x 1 crop of {NUM_FRAMES} frames, short side 32, stride 2, pad "
            f"(from {record})") in out.splitlines()

    code, out, err = _run(capsys, f"--model_dir={run_dir}", f"--export_dir={export_dir}",
                          "--version=2", "--num_clips=3", "--short_video=loop")
    assert code == 0, err
    assert _served_sampling(export_dir / "2") == {**expected, "num_clips": 3,
                                                  "short_video": "loop"}
    assert (f"sampling: 3 clips x 1 crop of {NUM_FRAMES} frames, short side 32, stride 2, "
            f"loop (from {record}; --num_clips, --short_video override)") in out.splitlines()
    assert _served_sampling(export_dir / "1") == expected  # version 1 untouched
    # The export's model.keras scores what the latest export recorded.
    assert classifier.load_classifier(export_dir / "model.keras").sampling == module.Sampling(
        **{**expected, "num_clips": 3, "short_video": "loop"})


def test_the_stage_file_of_a_run_carries_the_runs_sampling(run_dir, tmp_path, capsys):
    code, out, err = _run(capsys, f"--model_dir={run_dir / 'stage2.keras'}",
                          f"--export_dir={tmp_path / 'export'}")
    assert code == 0, err
    sampling = _served_sampling(tmp_path / "export" / "1")
    assert (sampling["num_clips"], sampling["short_side"], sampling["temporal_stride"],
            sampling["short_video"]) == (2, 32, 2, "pad")
    assert f"(from the config of {run_dir / 'stage2.keras'})" in out.splitlines()[0]


@pytest.mark.parametrize("text", ["{\"class_names\": [", "[1, 2]\n"])  # cut short; no object
def test_a_bad_run_record_is_an_input_error(run_dir, tmp_path, capsys, text):
    (run_dir / "run.json").write_text(text)
    code, out, err = _run(capsys, f"--model_dir={run_dir}", f"--export_dir={tmp_path / 'e'}")
    assert code == 2 and "run.json" in _one_error_line(err)
    assert not (tmp_path / "e").exists()


def test_the_library_has_no_gin_and_no_flags_and_the_commands_re_export_it():
    folder = pathlib.Path(lgd_tf.serving.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in ("gin", "absl"), (path.name, name)
                assert not name.startswith("lgd_tf.cli"), (path.name, name)
    assert export.export_model is export_lib.export_model
    assert predict.predict_video is predict_lib.predict_video
