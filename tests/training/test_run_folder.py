"""The run folder: lock, checks of a rerun against run.json, atomic writes that fail cleanly."""

import errno
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from lgd_tf import models
from lgd_tf.runs import run_folder
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


SPEC = {"model_type": "lgd3d", "num_frames": 8, "crop_size": 28, "modality": "rgb",
        "eval": {"num_clips": 2, "num_crops": 1, "short_side": 32, "temporal_stride": 1,
                 "short_video": "loop"}}


def test_video_spec_of_an_architecture_takes_the_settings_given_and_the_defaults():
    arch = run_folder.model_architecture(_tiny())
    spec = run_folder.video_spec(arch, 28, {"num_clips": 2, "short_side": 32, "model": "3d"})
    assert spec == SPEC
    # Unset settings: the pipelines' defaults (Sec. 5.2: 15 clips at short side 120, crop 112).
    assert run_folder.video_spec(arch)["eval"]["num_clips"] == 15
    assert run_folder.video_spec(arch)["crop_size"] == 112
    flow2d = run_folder.model_architecture(models.lgd2d(
        num_classes=3, head="stage1", stage_blocks=(1, 1, 1, 1), base_filters=4,
        input_channels=2, num_segments=3))
    spec = run_folder.video_spec(flow2d)
    assert (spec["model_type"], spec["modality"], spec["num_frames"], spec["crop_size"],
            spec["eval"]["num_clips"], spec["eval"]["short_side"]) == (
                "lgd2d", "flow", 3, 224, 10, 240)


def test_run_record_holds_spec_data_and_finished_stages(tmp_path):
    run = run_folder.RunFolder(tmp_path / "run")
    arch = {"stage1": run_folder.model_architecture(_tiny()),
            "stage2": run_folder.model_architecture(_tiny(head="stage2"))}
    data = {"train_pattern": "/d/train-*", "eval_pattern": "/d/eval-*"}
    run.record(NAMES, arch, video_spec=SPEC, data=data)
    record = run.read_run()
    assert (record.class_names, record.video_spec, record.data) == (NAMES, SPEC, data)
    assert record.finished_stages == [] and record.final_model_path() is None
    run.finish_stage("stage1")
    assert run.read_run().final_model_path() == str(tmp_path / "run" / "stage1.keras")
    run.finish_stage("stage2")
    run.finish_stage("stage1")  # a rerun of stage 1 keeps the order
    record = run.read_run()
    assert record.finished_stages == ["stage1", "stage2"]
    assert record.final_model_path() == str(tmp_path / "run" / "stage2.keras")
    with pytest.raises(AttributeError):
        record.class_names = ["x"]  # frozen


def test_read_run_refuses_what_is_not_a_run_folder(tmp_path):
    with pytest.raises(TrainingError, match=r"missing is not a run folder \(no such folder\)"):
        run_folder.RunFolder(tmp_path / "missing").read_run()
    with pytest.raises(TrainingError, match=r"is not a run folder: it has no run.json; give "
                                            r"the --model_dir a training run wrote"):
        run_folder.RunFolder(tmp_path).read_run()
    (tmp_path / "run.json").write_text("[1, 2")
    with pytest.raises(TrainingError, match="run.json is not a valid run record"):
        run_folder.RunFolder(tmp_path).read_run()
    (tmp_path / "run.json").write_text('{"lgd_tf_version": "0.1.0"}')
    with pytest.raises(TrainingError, match="holds no class names or models"):
        run_folder.RunFolder(tmp_path).read_run()


OPERATIVE = """# Macros:
# ==============================================================================
CLIPS = 2

# Parameters for eval_dataset:
# ==============================================================================
eval_dataset.model = '3d'
eval_dataset.num_clips = %CLIPS
stage2/lgd_tf.data.eval_dataset.short_side = 32
eval_dataset.short_side = 64

# Parameters for stage1/train_dataset:
# ==============================================================================
stage1/train_dataset.crop_size = 28
stage1/train_dataset.resize = (32, 32)

# Parameters for data_sources:
# ==============================================================================
data_sources.eval_pattern = '/d/eval-*'
"""


def test_an_older_run_gets_its_spec_from_the_operative_config(tmp_path):
    """run.json written before it held the video spec: the spec comes from the last stage's
    architecture and operative_config.gin (stage scope first, macros resolved); the finished
    stages are the stage files present."""
    arch = {"stage1": run_folder.model_architecture(_tiny()),
            "stage2": run_folder.model_architecture(_tiny(head="stage2"))}
    (tmp_path / "run.json").write_text(json.dumps({"class_names": NAMES, "models": arch}))
    with pytest.raises(TrainingError, match="has no operative_config.gin to derive it from; "
                                            "retrain it into a new --model_dir, or give"):
        run_folder.RunFolder(tmp_path).read_run()
    (tmp_path / "operative_config.gin").write_text(OPERATIVE)
    (tmp_path / "stage1.keras").write_bytes(b"")
    record = run_folder.RunFolder(tmp_path).read_run()
    # crop_size 28 is bound in stage1's scope only: stage 2 (the last) trains at the default.
    assert record.video_spec == dict(SPEC, crop_size=112)
    assert record.data == {"train_pattern": None, "eval_pattern": "/d/eval-*"}
    assert record.finished_stages == ["stage1"]


def test_read_class_names_of_a_file_or_a_folder(tmp_path):
    assert run_folder.read_class_names(tmp_path) is None
    (tmp_path / "class_names.txt").write_text("a\n\nb\nc\n")
    assert run_folder.read_class_names(tmp_path) == NAMES
    assert run_folder.read_class_names(tmp_path / "class_names.txt", 3) == NAMES
    with pytest.raises(TrainingError, match=r"class_names.txt lists 3 classes, 4 expected"):
        run_folder.read_class_names(tmp_path, 4)


def test_a_keras_file_carries_the_video_spec_and_older_files_still_load(tmp_path):
    import zipfile

    import keras

    model = _tiny()
    assert models.video_spec(model) is None
    model.video_spec = SPEC
    path = tmp_path / "stage1.keras"
    run_folder.save_model(model, path)
    loaded = keras.saving.load_model(path, compile=False)
    assert models.video_spec(loaded) == SPEC
    assert run_folder.model_architecture(loaded) == run_folder.model_architecture(_tiny())
    # A file saved before the spec existed: its config has no "video_spec" key.
    with zipfile.ZipFile(path) as source:
        entries = {name: source.read(name) for name in source.namelist()}
    config = json.loads(entries["config.json"])
    del config["config"]["video_spec"]
    entries["config.json"] = json.dumps(config).encode()
    older = tmp_path / "older.keras"
    with zipfile.ZipFile(older, "w") as target:
        for name, content in entries.items():
            target.writestr(name, content)
    loaded = keras.saving.load_model(older, compile=False)
    assert models.video_spec(loaded) is None
    x = np.random.default_rng(0).uniform(size=(1, 8, 28, 28, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x)["global"], model(x)["global"], atol=1e-6)
