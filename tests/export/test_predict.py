"""`lgd_tf.inference.predict.predict_video` and `python -m lgd_tf.predict`: evaluation sampling,
right labels, late fusion, clean errors."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import lgd_tf
import lgd_tf.data
from lgd_tf import predict
from lgd_tf.inference import classifier
from lgd_tf.inference import predict as predict_lib
from tests.export.conftest import (
    GRAPH_TOL,
    NUM_CLIPS,
    NUM_FRAMES,
    SHORT_SIDE,
    tiny_lgd3d,
    write_video,
)

KERAS_SAMPLING = [f"--short_side={SHORT_SIDE}", f"--num_clips={NUM_CLIPS}"]
# Without oneDNN's start-up notice TensorFlow prints nothing on stderr, so the command's own
# stderr can be checked line by line.
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}
CLASS_ORDER = ["dark", "bright"]


def _run(capsys, *args):
    code = predict.run(["predict", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _reference_probabilities(model, video):
    """Scores of `video` computed step by step: decode, eval_views, Keras model, mean."""
    frames = lgd_tf.data.decode_video(video, short_side=SHORT_SIDE)
    views = lgd_tf.data.eval_views(frames, model="3d", num_frames=NUM_FRAMES,
                                   num_clips=NUM_CLIPS, num_crops=1, short_side=SHORT_SIDE)
    per_view = lgd_tf.models.class_probabilities(model(keras.ops.cast(views, "float32")))
    return keras.ops.convert_to_numpy(per_view).mean(axis=0)


@pytest.mark.subprocess
def test_predict_command_on_the_savedmodel_prints_the_right_label(exported, videos):
    export_dir, _ = exported
    result = subprocess.run(
        [sys.executable, "-m", "lgd_tf.predict", f"--model={export_dir}",
         f"--video={videos['bright']}", "--json", "--top_k=2"],
        capture_output=True, text=True, timeout=120, env={**os.environ, **QUIET_TF},
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert [entry["label"] for entry in output["top_k"]] == ["bright", "dark"]
    # The tiny model's scores after 24 steps (with the Eq. 5 features signed-sqrt + L2
    # normalised, the builders' default) are about 0.83 for this video.
    assert output["top_k"][0]["score"] > 0.75
    assert output["models"] == [{
        "path": str(export_dir / "1"), "modality": "rgb",
        "sampling": f"{NUM_CLIPS} clips x 1 crop of {NUM_FRAMES} frames, short side "
                    f"{SHORT_SIDE}, stride 1, loop",
        "sampling_from": f"fixed at export in {export_dir / '1'}"}]


def test_predict_keras_file_and_savedmodel_agree_with_evaluation_sampling(
        exported, trained_model_dir, trained_model, videos, capsys):
    export_dir, _ = exported
    for name in ("dark", "bright"):
        expected = _reference_probabilities(trained_model, videos[name])
        assert CLASS_ORDER[int(np.argmax(expected))] == name
        from_keras = predict_lib.predict_video(trained_model_dir / "stage2.keras", videos[name],
                                           num_clips=NUM_CLIPS, short_side=SHORT_SIDE)
        from_export = predict_lib.predict_video(export_dir / "1", videos[name])
        np.testing.assert_allclose(from_keras.probabilities, expected, **GRAPH_TOL)
        np.testing.assert_allclose(from_export.probabilities, expected, **GRAPH_TOL)

    code, out, err = _run(capsys, f"--model={trained_model_dir / 'stage2.keras'}",
                          f"--video={videos['dark']}", *KERAS_SAMPLING)
    assert code == 0, err
    sampling, *lines = out.strip().splitlines()
    assert sampling == (f"sampling: {NUM_CLIPS} clips x 1 crop of {NUM_FRAMES} frames, short "
                        f"side {SHORT_SIDE}, stride 1, loop (Sec. 5.2 defaults: "
                        f"{trained_model_dir / 'stage2.keras'} records no input spec; "
                        "--num_clips, --short_side override)")
    assert lines[0].endswith("top 2 of 2 classes")
    assert lines[1].split()[-1] == "dark" and lines[2].split()[-1] == "bright"
    assert float(lines[1].split()[1]) > float(lines[2].split()[1])


@pytest.fixture(scope="module")
def second_model_path(tmp_path_factory):
    """An untrained tiny model with the same classes (its scores are far from one-hot)."""
    keras.utils.set_random_seed(5)
    folder = tmp_path_factory.mktemp("second")
    tiny_lgd3d(head="stage1").save(folder / "model.keras")
    (folder / "class_names.txt").write_text("dark\nbright\n")
    return folder / "model.keras"


def test_fused_prediction_equals_hand_computed_late_fusion(
        trained_model_dir, second_model_path, videos, capsys):
    first = classifier.load_classifier(trained_model_dir / "stage2.keras",
                                       num_clips=NUM_CLIPS, short_side=SHORT_SIDE)
    second = classifier.load_classifier(second_model_path, num_clips=NUM_CLIPS,
                                        short_side=SHORT_SIDE)
    p1 = predict_lib.predict_video(first, videos["dark"]).probabilities
    p2 = predict_lib.predict_video(second, videos["dark"]).probabilities
    fused = predict_lib.predict_video(first, videos["dark"], fuse_with=second, fusion_weight=0.3)
    np.testing.assert_allclose(fused.probabilities, 0.7 * p1 + 0.3 * p2, rtol=1e-6)
    assert fused.fusion_weight == pytest.approx(0.3)

    code, out, err = _run(capsys, f"--model={trained_model_dir / 'stage2.keras'}",
                          f"--fuse_with={second_model_path}", "--fusion_weight=0.8",
                          f"--video={videos['dark']}", "--json", *KERAS_SAMPLING)
    assert code == 0, err
    scores = {e["label"]: e["score"] for e in json.loads(out)["top_k"]}
    expected = 0.2 * p1 + 0.8 * p2
    assert scores == pytest.approx({"dark": expected[0], "bright": expected[1]}, rel=1e-5)


def _one_error_line(err):
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("lgd_tf.predict: error: ")
    return lines[0]


def test_bad_inputs_exit_2_with_one_line(trained_model_dir, videos, tmp_path, capsys):
    keras_file = trained_model_dir / "stage2.keras"
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("this is not a video")
    empty_video = write_video(tmp_path / "empty.mp4", np.zeros((0, 16, 16, 3), np.uint8))
    corrupt_model = tmp_path / "broken.keras"
    corrupt_model.write_bytes(b"PK\x03\x04 not really a zip")
    corrupt_export = tmp_path / "corrupt_export"
    (corrupt_export / "1").mkdir(parents=True)
    (corrupt_export / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    cases = {
        "missing model": ([f"--model={tmp_path / 'nope'}", f"--video={videos['dark']}"],
                          "nope"),
        "dir without a model": ([f"--model={tmp_path}", f"--video={videos['dark']}"],
                                str(tmp_path)),
        "corrupt .keras": ([f"--model={corrupt_model}", f"--video={videos['dark']}"],
                           "broken.keras"),
        "missing video": ([f"--model={keras_file}", f"--video={tmp_path / 'none.mp4'}"],
                          "none.mp4"),
        "not a video": ([f"--model={keras_file}", f"--video={not_a_video}"], "notes.mp4"),
        "empty video": ([f"--model={keras_file}", f"--video={empty_video}"], "empty.mp4"),
        "bad weight": ([f"--model={keras_file}", f"--fuse_with={keras_file}",
                        "--fusion_weight=1.5", f"--video={videos['dark']}"], "fusion_weight"),
        "no video flag": ([f"--model={keras_file}"], "--video"),
        "unknown flag": ([f"--model={keras_file}", f"--video={videos['dark']}", "--topk=3"],
                         "topk"),
        "bad top_k": ([f"--model={keras_file}", f"--video={videos['dark']}", "--top_k=0"],
                      "--top_k"),
        "bad num_crops": ([f"--model={keras_file}", f"--video={videos['dark']}",
                           "--num_crops=2"], "--num_crops"),
        "corrupt SavedModel": ([f"--model={corrupt_export}", f"--video={videos['dark']}"],
                               "corrupt_export"),
    }
    for case, (args, expected_text) in cases.items():
        sampling = [] if case == "corrupt SavedModel" else KERAS_SAMPLING
        code, out, err = _run(capsys, *args, *sampling)
        assert code == 2, case
        assert out == "", case
        assert expected_text in _one_error_line(err), (case, err)


@pytest.mark.subprocess
def test_predict_command_error_has_no_traceback(trained_model_dir, tmp_path):
    not_a_video = tmp_path / "clip.mp4"
    not_a_video.write_bytes(os.urandom(256))
    result = subprocess.run(
        [sys.executable, "-m", "lgd_tf.predict", f"--model={trained_model_dir}",
         f"--video={not_a_video}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, **QUIET_TF},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "clip.mp4" in _one_error_line(result.stderr)


def test_two_stream_fusion_weighs_the_flow_model(trained_model_dir, videos, tmp_path, capsys):
    """RGB + flow (Sec. 5.5): fused = (1 - w) rgb + w flow, whichever model is given first;
    the flow stream scores quantised TV-L1 flow of the decoded frames."""
    from lgd_tf.data import flow

    keras.utils.set_random_seed(9)
    flow_model = tiny_lgd3d(head="stage1", input_channels=2)
    flow_path = tmp_path / "flow.keras"
    flow_model.save(flow_path)
    (tmp_path / "class_names.txt").write_text("dark\nbright\n")

    rgb_path = trained_model_dir / "stage2.keras"
    frames = lgd_tf.data.decode_video(videos["bright"], short_side=SHORT_SIDE)
    flow_frames = flow.quantize_flow(flow.tvl1_flow(frames))[..., :2]
    assert flow_frames.shape == (len(frames) - 1, *frames.shape[1:3], 2)
    views = lgd_tf.data.eval_views(flow_frames, model="3d", num_frames=NUM_FRAMES,
                                   num_clips=NUM_CLIPS, num_crops=1, short_side=SHORT_SIDE)
    p_flow = keras.ops.convert_to_numpy(lgd_tf.models.class_probabilities(
        flow_model(keras.ops.cast(views, "float32")))).mean(axis=0)
    p_rgb = _reference_probabilities(keras.saving.load_model(rgb_path), videos["bright"])
    expected = 0.75 * p_rgb + 0.25 * p_flow

    for first, second in ((rgb_path, flow_path), (flow_path, rgb_path)):
        code, out, err = _run(capsys, f"--model={first}", f"--fuse_with={second}",
                              "--fusion_weight=0.25", f"--video={videos['bright']}", "--json",
                              *KERAS_SAMPLING)
        assert code == 0, err
        result = json.loads(out)
        scores = {e["label"]: e["score"] for e in result["top_k"]}
        assert scores == pytest.approx({"dark": expected[0], "bright": expected[1]}, rel=1e-4)
        assert sorted(m["modality"] for m in result["models"]) == ["flow", "rgb"]


def test_repeated_predictions_reuse_the_loaded_model_until_the_file_changes(
        second_model_path, videos):
    sampling = {"num_clips": NUM_CLIPS, "short_side": SHORT_SIDE}
    predict_lib._load_cached.cache_clear()
    first = predict_lib.predict_video(second_model_path, videos["dark"], **sampling)
    again = predict_lib.predict_video(second_model_path, videos["dark"], **sampling)
    info = predict_lib._load_cached.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    np.testing.assert_array_equal(first.probabilities, again.probabilities)
    stat = second_model_path.stat()
    os.utime(second_model_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    predict_lib.predict_video(second_model_path, videos["dark"], **sampling)
    assert predict_lib._load_cached.cache_info().misses == 2


def test_predict_lgd2d_uses_tsn_evaluation_sampling(videos, tmp_path):
    """LGD-2D: frame triples (Sec. 5.2: 10 per video by default; 2 here) over the video."""
    keras.utils.set_random_seed(3)
    tiny_2d = {"stage_blocks": (1, 1, 1, 1), "base_filters": 8, "sketch_dim": 64}
    model = lgd_tf.models.lgd2d(num_classes=2, num_segments=3, **tiny_2d)
    model.save(tmp_path / "lgd2d.keras")
    prediction = predict_lib.predict_video(tmp_path / "lgd2d.keras", videos["bright"],
                                       num_clips=NUM_CLIPS, short_side=SHORT_SIDE)
    frames = lgd_tf.data.decode_video(videos["bright"], short_side=SHORT_SIDE)
    views = lgd_tf.data.eval_views(frames, model="2d", num_segments=3, num_clips=NUM_CLIPS,
                                   short_side=SHORT_SIDE)
    assert views.shape[:2] == (NUM_CLIPS, 3)
    expected = keras.ops.convert_to_numpy(lgd_tf.models.class_probabilities(
        model(keras.ops.cast(views, "float32")))).mean(axis=0)
    np.testing.assert_allclose(prediction.probabilities, expected, **GRAPH_TOL)
    assert prediction.class_names == ["0", "1"]  # no class_names.txt next to the file
