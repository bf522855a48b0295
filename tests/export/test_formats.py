"""One run, one answer: predict given the run folder, its `.keras`, its SavedModel, the export's
model.keras, and its LiteRT / ONNX files scores the run's evaluation views, and says so."""

import json
import sys

import keras
import numpy as np
import pytest

import lgd_tf
import lgd_tf.data
from lgd_tf import explain, export, predict
from lgd_tf.inference import predict as predict_lib
from lgd_tf.serving import litert
from tests.export.conftest import NUM_CLIPS, NUM_FRAMES, RUN_CROP, SHORT_SIDE

FORMAT_TOL = 1e-4  # the bound between formats of one run


def _run(command, capsys, *args):
    code = command.run(["command", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _predict_json(capsys, model, video, *args):
    code, out, err = _run(predict, capsys, f"--model={model}", f"--video={video}", "--json",
                          "--top_k=2", *args)
    assert code == 0, err
    result = json.loads(out)
    scores = {entry["label"]: entry["score"] for entry in result["top_k"]}
    return result, np.array([scores["dark"], scores["bright"]])


def _run_views(video):
    """The run's evaluation views, by hand: decode at the run's short side, eval_views."""
    frames = lgd_tf.data.decode_video(video, short_side=SHORT_SIDE)
    return lgd_tf.data.eval_views(frames, model="3d", num_frames=NUM_FRAMES,
                                  num_clips=NUM_CLIPS, num_crops=1, short_side=SHORT_SIDE)


def _keras_mean(model, views):
    per_view = lgd_tf.models.class_probabilities(model(keras.ops.cast(views, "float32")))
    return keras.ops.convert_to_numpy(per_view).mean(axis=0)


@pytest.fixture(scope="module")
def run_export(recorded_run, tmp_path_factory):
    """The recorded run exported as a SavedModel, then LiteRT and ONNX, into one folder
    (no sampling flags: the run's own)."""
    export_dir = tmp_path_factory.mktemp("formats") / "export"
    for args in ([], ["--format=litert"], ["--format=onnx"]):
        assert export.run(["export", f"--model_dir={recorded_run}",
                           f"--export_dir={export_dir}", *args]) == 0
    return export_dir


def test_run_folder_keras_and_savedmodel_score_the_runs_views(
        recorded_run, run_export, trained_model, videos, capsys, record_property):
    """Run folder, its stage2.keras, the SavedModel and the export's model.keras: the same
    views (the run's 2 clips at short side 32, not the 15 at 120 of Sec. 5.2), the same
    top-k and probabilities within 1e-4, each saying where the sampling came from."""
    worst = 0.0
    for name in ("dark", "bright"):
        expected = _keras_mean(trained_model, _run_views(videos[name]))
        forms = {"run": recorded_run, "keras": recorded_run / "stage2.keras",
                 "saved_model": run_export, "export_keras": run_export / "model.keras"}
        labels = set()
        for form, path in forms.items():
            result, probabilities = _predict_json(capsys, path, videos[name])
            worst = max(worst, float(np.abs(probabilities - expected).max()))
            np.testing.assert_allclose(probabilities, expected, atol=FORMAT_TOL, err_msg=form)
            labels.add(tuple(entry["label"] for entry in result["top_k"]))
            model = result["models"][0]
            assert model["sampling"].startswith(f"{NUM_CLIPS} clips x 1 crop of {NUM_FRAMES} "
                                                f"frames, short side {SHORT_SIDE}"), form
        assert labels == {(name, "bright" if name == "dark" else "dark")}
    record_property("max_abs_difference", worst)

    code, out, err = _run(predict, capsys, f"--model={recorded_run}",
                          f"--video={videos['dark']}")
    assert code == 0, err
    assert out.splitlines()[0] == (f"sampling: {NUM_CLIPS} clips x 1 crop of {NUM_FRAMES} "
                                   f"frames, short side {SHORT_SIDE}, stride 1, loop (from "
                                   f"{recorded_run / 'run.json'})")
    # A flag overrides the record, and the line says so.
    code, out, err = _run(predict, capsys, f"--model={recorded_run}",
                          f"--video={videos['dark']}", "--num_clips=3")
    assert code == 0, err
    assert out.splitlines()[0].startswith("sampling: 3 clips x 1 crop")
    assert out.splitlines()[0].endswith("; --num_clips overrides)")


@pytest.mark.parametrize("name", ["model.tflite", "model.onnx"])
def test_litert_and_onnx_match_keras_on_their_clip(name, run_export, trained_model, videos,
                                                    capsys, record_property):
    """predict runs the edge file in its runtime on the run's views, each centre-cropped to
    the training crop (28 x 28): the Keras model on the same clips gives the same
    probabilities within 1e-4."""
    worst = 0.0
    for video in videos.values():
        clips = litert.fit_views(_run_views(video), RUN_CROP, RUN_CROP)
        assert clips.shape == (NUM_CLIPS, NUM_FRAMES, RUN_CROP, RUN_CROP, 3)
        expected = _keras_mean(trained_model, clips)
        result, probabilities = _predict_json(capsys, run_export / name, video)
        worst = max(worst, float(np.abs(probabilities - expected).max()))
        np.testing.assert_allclose(probabilities, expected, atol=FORMAT_TOL)
        model = result["models"][0]
        assert model["sampling"].endswith(f"each view centre-cropped to {RUN_CROP}x"
                                          f"{RUN_CROP}, the input of {name}")
        assert model["sampling_from"] == f"from {run_export / 'export.json'}"
    record_property(f"max_abs_difference_{name}", worst)


def test_an_edge_export_folder_runs_its_model_file(run_export, tmp_path, videos, capsys):
    """A LiteRT export folder (no SavedModel) is scored with its model.tflite, not refused
    for lacking stage2.keras."""
    folder = tmp_path / "edge"
    folder.mkdir()
    for name in ("model.tflite", "model.keras", "class_names.txt", "export.json"):
        (folder / name).write_bytes((run_export / name).read_bytes())
    code, out, err = _run(predict, capsys, f"--model={folder}", f"--video={videos['dark']}")
    assert code == 0, err
    assert "the input of model.tflite" in out.splitlines()[0]
    assert out.splitlines()[2].split()[-1] == "dark"


def test_a_missing_onnx_runtime_is_one_line_naming_the_package(run_export, videos, capsys,
                                                               monkeypatch):
    predict_lib._load_cached.cache_clear()  # forget the models earlier tests loaded
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    code, out, err = _run(predict, capsys, f"--model={run_export / 'model.onnx'}",
                          f"--video={videos['dark']}")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"lgd_tf.predict: error: {run_export / 'model.onnx'} is an ONNX model: running it "
        "needs onnxruntime (pip install onnxruntime)"]


@pytest.mark.parametrize("name", ["model.tflite", "model.onnx", "1"])
def test_explain_refuses_formats_without_gradients(name, run_export, videos, tmp_path, capsys):
    output = tmp_path / "cam.mp4"
    code, out, err = _run(explain, capsys, f"--model={run_export / name}",
                          f"--video={videos['dark']}", f"--output={output}")
    kind = {"model.tflite": "a LiteRT file", "model.onnx": "an ONNX file",
            "1": "a SavedModel"}[name]
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"lgd_tf.explain: error: --model={run_export / name} is {kind}, which keeps no "
        "gradients; give the run folder or a .keras file"]
    assert list(tmp_path.iterdir()) == []


def test_explain_uses_the_runs_short_side(recorded_run, videos, tmp_path, capsys):
    output = tmp_path / "cam.gif"
    code, out, err = _run(explain, capsys, f"--model={recorded_run}",
                          f"--video={videos['bright']}", f"--output={output}")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (f"sampling: {NUM_CLIPS} clips x 1 crop of {NUM_FRAMES} frames, short "
                        f"side {SHORT_SIDE}, stride 1, loop (from "
                        f"{recorded_run / 'run.json'})")
    from PIL import Image

    height, width = lgd_tf.data.decode_video(videos["bright"], short_side=SHORT_SIDE).shape[1:3]
    assert min(height, width) == SHORT_SIDE
    with Image.open(output) as gif:
        # The frames at the run's short side, upscaled x8 to reach --min_side 256.
        assert gif.size == (width * 8, height * 8)
