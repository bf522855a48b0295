"""Untrusted model files: `.keras` loading keeps Keras safe_mode on everywhere.

A `.keras` file whose Lambda layer would run code when the model is rebuilt is refused by
predict, export and `lgd3d(weights=...)`, and its code never runs. The control loads the same
file with safe_mode=False and sees the code run, so the payload is live.
"""

import keras
import pytest

import lgd_tf
from lgd_tf import export, predict
from lgd_tf.inference import predict as predict_lib
from tests.data import helpers


def _payload_model(marker):
    marker = str(marker)
    inputs = keras.Input((4, 32, 32, 3))
    # Runs when the layer is called, i.e. when a loader rebuilds the model.
    touched = keras.layers.Lambda(lambda x: (open(marker, "a").write("ran\n"), x)[1])(inputs)
    pooled = keras.layers.GlobalAveragePooling3D()(touched)
    return keras.Model(inputs, {"combined": keras.layers.Dense(2)(pooled)})


@pytest.fixture
def untrusted(tmp_path):
    """model_dir/stage2.keras with a code-running Lambda, class_names.txt, a video."""
    marker = tmp_path / "code_ran.txt"
    model_dir = tmp_path / "model_dir"
    model_dir.mkdir()
    model = _payload_model(marker)
    model.save(model_dir / "stage2.keras")
    (model_dir / "class_names.txt").write_text("a\nb\n")
    marker.unlink(missing_ok=True)  # building the model above called the Lambda once
    video = helpers.write_video(tmp_path / "v.mp4", helpers.indexed_frames(4, 32, 32), "libx264")
    return model_dir, marker, video


def test_control_the_payload_runs_without_safe_mode(untrusted):
    model_dir, marker, _ = untrusted
    keras.saving.load_model(model_dir / "stage2.keras", safe_mode=False)
    assert marker.read_text().startswith("ran")


def test_predict_refuses_it_with_exit_2(untrusted, capsys):
    model_dir, marker, video = untrusted
    code = predict.run(["predict", f"--model={model_dir / 'stage2.keras'}", f"--video={video}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("lgd_tf.predict: error: Could not load ") and "Traceback" not in err
    assert "stage2.keras" in err and "Lambda" in err
    assert not marker.exists()


def test_export_refuses_it_with_exit_2(untrusted, tmp_path, capsys):
    model_dir, marker, _ = untrusted
    code = export.run(["export", f"--model_dir={model_dir}",
                       f"--export_dir={tmp_path / 'export'}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("lgd_tf.export: error: Could not load ") and "Traceback" not in err
    assert "stage2.keras" in err and "Lambda" in err
    assert not marker.exists() and not (tmp_path / "export").exists()


def test_lgd3d_weights_refuses_it(untrusted):
    model_dir, marker, _ = untrusted
    with pytest.raises(ValueError, match="Lambda"):
        lgd_tf.models.lgd3d(num_classes=2, stage_blocks=(1, 1, 1, 1), base_filters=8,
                            num_frames=4, sketch_dim=64, weights=str(model_dir / "stage2.keras"))
    assert not marker.exists()


def test_safe_mode_holds_after_unsafe_deserialization_was_enabled(untrusted):
    """Another library in the process may call enable_unsafe_deserialization() (Keras 3.15
    then prefers that global flag over load_model's safe_mode=True); predict pins safe mode
    for its load, so it still refuses the file and runs none of its code."""
    from keras.src.backend.common import global_state

    model_dir, marker, video = untrusted
    previous = global_state.get_global_attribute("safe_mode_saving")
    keras.config.enable_unsafe_deserialization()
    try:
        with pytest.raises(ValueError) as info:
            predict_lib.predict_video(model_dir / "stage2.keras", video)
    finally:
        global_state.set_global_attribute("safe_mode_saving", previous)
    assert not marker.exists(), "the Lambda's code ran"
    assert "Lambda" in str(info.value)


def test_lgd3d_weights_refuses_it_after_unsafe_deserialization_was_enabled(untrusted):
    from keras.src.backend.common import global_state

    model_dir, marker, _ = untrusted
    previous = global_state.get_global_attribute("safe_mode_saving")
    keras.config.enable_unsafe_deserialization()
    try:
        with pytest.raises(ValueError) as info:
            lgd_tf.models.lgd3d(num_classes=2, stage_blocks=(1, 1, 1, 1), base_filters=8,
                                num_frames=4, sketch_dim=64,
                                weights=str(model_dir / "stage2.keras"))
    finally:
        global_state.set_global_attribute("safe_mode_saving", previous)
    assert not marker.exists(), "the Lambda's code ran"
    assert "Lambda" in str(info.value)


def test_evaluate_refuses_it_with_exit_2(untrusted, tmp_path, capsys):
    """The run record points evaluate at the file; loading it is refused in one line (before:
    a Keras ValueError that the command layer mapped wholesale)."""
    import json

    import numpy as np

    from lgd_tf import evaluate

    model_dir, marker, _ = untrusted
    pattern = helpers.write_records(tmp_path / "eval-00000-of-00001.tfrecord", [
        (np.zeros((4, 32, 32, 3), np.uint8), 0, "v0")])
    (model_dir / "run.json").write_text(json.dumps({
        "class_names": ["a", "b"], "finished_stages": ["stage2"],
        "models": {"stage2": {"backbone.class": "LGD3DBackbone", "backbone.num_frames": 4}},
        "data": {"train_pattern": None, "eval_pattern": pattern},
        "video_spec": {"model_type": "lgd3d", "num_frames": 4, "crop_size": 32,
                       "modality": "rgb", "eval": {"num_clips": 1, "num_crops": 1,
                                                   "short_side": 32, "temporal_stride": 1,
                                                   "short_video": "loop"}}}))
    code = evaluate.run(["evaluate", f"--model_dir={model_dir}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"lgd_tf.evaluate: error: cannot load {model_dir / 'stage2.keras'} "
                          "(--model_dir): ") and "Lambda" in err
    assert not marker.exists()
