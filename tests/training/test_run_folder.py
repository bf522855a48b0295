"""The run folder: lock, checks of a rerun against run.json, atomic writes that fail cleanly."""

import errno
import json
import os

import pytest
import tensorflow as tf

from lgd_tf import models
from lgd_tf.training import run_folder
from lgd_tf.training.errors import RunFailure, TrainingError

NAMES = ["a", "b", "c"]


def _tiny(**kwargs):
    args = dict(depth=50, num_classes=3, head="stage1", num_frames=8, stage_blocks=(1, 1, 1, 1),
                base_filters=4, sketch_dim=64)
    args.update(kwargs)
    return models.lgd3d(**args)


def test_architecture_names_the_settings_that_define_the_weights():
    arch = run_folder.model_architecture(_tiny())
    assert arch["backbone.base_filters"] == 4 and arch["num_classes"] == 3
    assert arch["backbone.stage_blocks"] == [1, 1, 1, 1] and arch["head"] == "stage1"
    assert not [k for k in arch if k.endswith(".name") or "dtype" in k]
    # Initialisation-only settings: a restored checkpoint overwrites what they chose.
    assert not [k for k in arch if "zero_init" in k or "seed" in k]
    assert run_folder.model_architecture(_tiny(zero_init_global_residual=True)) == arch
    # A mixed-precision policy changes no weight: same architecture.
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        assert run_folder.model_architecture(_tiny()) == arch
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_rerun_with_another_model_or_other_classes_is_refused(tmp_path):
    run = run_folder.RunFolder(tmp_path / "run")
    first = {"stage1": run_folder.model_architecture(_tiny())}
    run.check(NAMES, first)
    run.record(NAMES, first)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["class_names"] == NAMES and set(record["models"]) == {"stage1"}
    assert (tmp_path / "run" / "class_names.txt").read_text() == "a\nb\nc\n"
    before = {p: p.read_bytes() for p in (tmp_path / "run").iterdir()}

    run.check(NAMES, first)  # the same run again: fine
    with pytest.raises(TrainingError, match=r"holds a stage1 model with base_filters=4, this "
                                            r"run has base_filters=8"):
        run.check(NAMES, {"stage1": run_folder.model_architecture(_tiny(base_filters=8))})
    with pytest.raises(TrainingError, match=r"class 1 is 'b' there and 'x' here"):
        run.check(["a", "x", "c"], first)
    with pytest.raises(TrainingError, match=r"3 classes there, 4 in this run's data"):
        run.check(NAMES + ["d"], first)
    # Stage 2 recorded later keeps stage 1's record; nothing rewritten by the refusals.
    assert {p: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    second = {"stage2": run_folder.model_architecture(_tiny(head="stage2"))}
    run.record(NAMES, second)
    assert set(run.read_record()["models"]) == {"stage1", "stage2"}
    with pytest.raises(TrainingError, match="stage2 model with sketch_dim=64, this run has "
                                            "sketch_dim=128"):
        run.check(NAMES, {"stage2": run_folder.model_architecture(
            _tiny(head="stage2", sketch_dim=128))})


def test_class_names_of_an_older_run_without_run_json_are_checked(tmp_path):
    (tmp_path / "class_names.txt").write_text("a\nb\nc\n")
    run = run_folder.RunFolder(tmp_path)
    with pytest.raises(TrainingError, match="trained on other classes"):
        run.check(["a", "b", "z"], {})


def test_lock_refuses_a_second_holder_and_takes_over_a_stale_one(tmp_path, capsys):
    run = run_folder.RunFolder(tmp_path / "run")
    with run.locked():
        text = (tmp_path / "run" / ".lock").read_text()
        assert text.startswith(f"pid {os.getpid()} on ")
        # flock locks belong to an open file: a second open in this process conflicts too.
        with pytest.raises(RunFailure, match=rf"run is in use by pid {os.getpid()} on .*; "
                                             "wait for that run to end"):
            with run_folder.RunFolder(tmp_path / "run").locked():
                pass
    assert (tmp_path / "run" / ".lock").read_text() == ""  # released, emptied
    # A lock file left by a killed process (its flock died with it) is taken over.
    (tmp_path / "run" / ".lock").write_text("pid 999999 on elsewhere (since yesterday)\n")
    # ... with the temporary file of a model it was writing, and a user's own dot file.
    (tmp_path / "run" / ".stage1.tmp-1a2b3c4d.keras").write_bytes(b"half a model")
    (tmp_path / "run" / ".notes").write_text("mine")
    with run.locked():
        pass
    assert "took over the lock left by pid 999999 on elsewhere" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock", ".notes"]


def test_a_failed_write_names_the_path_and_keeps_the_complete_file(tmp_path, monkeypatch):
    path = tmp_path / "eval_results.json"
    run_folder.write_json(path, {"top1": 0.5})
    real_replace = os.replace

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(RunFailure, match=rf"cannot write {path}: No space left on device"):
        run_folder.write_json(path, {"top1": 0.9})
    monkeypatch.setattr(os, "replace", real_replace)
    assert json.loads(path.read_text()) == {"top1": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_results.json"]  # no temp file


def test_failure_reason_of_a_tensorflow_write_error_is_short():
    error = tf.errors.ResourceExhaustedError(
        None, None, "{{function_node __wrapped__SaveV2_dtypes_238_device_/job:localhost/"
        "replica:0/task:0/device:CPU:0}} /x/ckpt-3_temp/part-00000-of-00001.data.tempstate1; "
        "No space left on device [Op:SaveV2]")
    assert run_folder.failure_reason(error) == "No space left on device"
