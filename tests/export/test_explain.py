"""Grad-CAM (lgd_tf.analysis.explain, python -m lgd_tf.explain): where a tiny LGD-3D trained on
the demo videos looks, the overlay video and PNG grid, and the one-line errors."""

import os
import time

import av
import keras
import numpy as np
import pytest
from PIL import Image

import lgd_tf
from lgd_tf import explain as explain_command
from lgd_tf.analysis import explain, grad_cam, rendering
from lgd_tf.cli import explain as explain_cli
from lgd_tf.data import demo
from tests.export.conftest import write_video
from tests.export.demo_model import NUM_FRAMES, train_demo_model
from tests.export.digit_box import peak_in_digit_box

TRAIN_STEPS = 150
BATCH = 16
# Where the Grad-CAM peak falls on 12 held-out demo videos (192 frames) for this model (150
# steps), as fractions of frames inside the digit's box: the frame's own box ("frame") or the
# union of the digit's boxes over the frames of the map's time step ("step": the 4 frames that
# one time step of x_L or res3 of an 8-frame clip stands for). Measured:
#   x_L 20.8 % frame / 32.3 % step; res3 49.0 % / 74.5 % (chance: 8.5 %);
# after 300 steps: x_L 28.1 / 42.2, res3 51.0 / 78.6. x_L cannot reach the 80 %: of an
# 8 x 64 x 64 clip it is 2 x 4 x 4 cells 16 pixels apart, each of which sees the whole frame and
# all 8 frames (the digit moves 21 pixels in them; no model in README, "Grad-CAM", gets it past
# 35 %). The thresholds keep a margin under the measured figures. Grad-CAM++ on res2 (16 x 16
# cells, 2 frames a step): 96.4 % frame's own box (95.8 % on 24 videos); the target,
# 80 %, is asserted there.
MIN_TIMES_CHANCE = 2.0  # x_L, frame's own box
MIN_RES3_FRAME = 0.4
MIN_RES3_STEP = 0.65
MIN_RES2_GRADCAM_PP = 0.8


def write_demo_model_dir(model_dir):
    """Writes model_dir (stage1.keras + class_names.txt) of a tiny stage-1 LGD-3D (4 base
    filters, one unit per stage, 8 frames of 64 x 64) trained with Adam for 150 steps on
    8-frame clips of 192 demo videos, then BN statistics recalibrated."""
    model = train_demo_model(TRAIN_STEPS, base_filters=4, batch_size=BATCH, learning_rate=3e-3,
                             seed=0)
    model.save(model_dir / "stage1.keras")
    (model_dir / "class_names.txt").write_text("\n".join(demo.CLASS_NAMES) + "\n")


@pytest.fixture(scope="module")
def demo_model_dir(tmp_path_factory):
    """The trained model_dir, trained once per test run: under pytest-xdist the first worker
    trains (in the run's shared temporary folder) and the others wait for it."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, shared by its workers
    model_dir = shared / "explain_demo_model"
    done, failed = model_dir / "done", model_dir / "failed"
    try:
        model_dir.mkdir()
    except FileExistsError:
        deadline = time.monotonic() + 1200
        while not done.exists():
            if failed.exists() or time.monotonic() > deadline:
                pytest.fail("training the demo model failed in another worker")
            time.sleep(1.0)
        return model_dir
    try:
        write_demo_model_dir(model_dir)
    except BaseException:
        failed.touch()
        raise
    done.touch()
    return model_dir


@pytest.fixture(scope="module")
def demo_model(demo_model_dir):
    return keras.saving.load_model(demo_model_dir / "stage1.keras", safe_mode=True)


CASES = {"local": ("local", "gradcam"), "res3": ("res3", "gradcam"),
         "res2 Grad-CAM++": ("res2", "gradcam++")}


def test_grad_cam_peak_falls_on_the_moving_digit(demo_model, record_property):
    hits = {(case, k): [] for case in CASES for k in ("frame", "step")}
    chance = []
    for frames, label, mask, motion, start in demo.labelled_videos("eval", 1, seed=2):
        for case, (layer, method) in CASES.items():
            result = explain.explain_frames(demo_model, frames, demo.CLASS_NAMES,
                                            class_name=demo.CLASS_NAMES[label], layer=layer,
                                            method=method)
            assert result.heatmaps.shape == frames.shape[:3]
            assert result.frames_per_step == (2 if layer == "res2" else 4)
            peaks = result.peaks()
            hits[case, "frame"].append(peak_in_digit_box(peaks, mask, motion, start))
            hits[case, "step"].append(peak_in_digit_box(
                peaks, mask, motion, start, frames_per_step=result.frames_per_step))
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        chance.append((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1) / frames[0, ..., 0].size)
    fraction = {key: float(np.mean(value)) for key, value in hits.items()}
    chance = float(np.mean(chance))
    for (case, kind), value in fraction.items():
        record_property(f"peak_in_digit_box_{case.replace(' ', '_')}_{kind}", value)
    print("Grad-CAM peak inside the digit's box (frame's own / its step's boxes): " + ", ".join(
        f"{case} {fraction[case, 'frame']:.1%} / {fraction[case, 'step']:.1%}"
        for case in CASES) + f" (chance {chance:.1%})")
    assert fraction["local", "frame"] >= MIN_TIMES_CHANCE * chance
    assert fraction["res3", "frame"] >= MIN_RES3_FRAME
    assert fraction["res3", "step"] >= MIN_RES3_STEP
    assert fraction["res2 Grad-CAM++", "frame"] >= MIN_RES2_GRADCAM_PP


def numpy_cam(maps, grads, method):
    """Grad-CAM (Selvaraju et al. Eq. 1-2) and Grad-CAM++ (Chattopadhay et al. Eq. 19 with
    the exponential score: alpha = g^2 / (2 g^2 + sum A g^3)) in float64, loop over channels."""
    maps, grads = maps.astype(np.float64), grads.astype(np.float64)
    cam = np.zeros(maps.shape[:-1])
    for v in range(maps.shape[0]):
        for c in range(maps.shape[-1]):
            a, g = maps[v, ..., c], grads[v, ..., c]
            if method == "gradcam":
                weight = g.mean()
            else:
                denominator = 2 * g**2 + a.sum() * g**3
                alpha = np.divide(g**2, denominator, out=np.zeros_like(g),
                                  where=denominator != 0)
                weight = (alpha * np.maximum(g, 0)).sum()
            cam[v] += weight * a
    return np.maximum(cam, 0)


@pytest.mark.parametrize("method", grad_cam.METHODS)
def test_cam_from_gradients_matches_numpy(method):
    rng = np.random.default_rng(7)
    maps = np.maximum(rng.normal(size=(2, 2, 3, 4, 5)), 0).astype(np.float32)
    grads = rng.normal(size=maps.shape).astype(np.float32)
    grads[0, ..., 1] = 0.0  # a channel without gradient: Grad-CAM++'s 0 / 0 is 0
    cam = grad_cam.cam_from_gradients(maps, grads, method).numpy()
    expected = numpy_cam(maps, grads, method)
    assert cam.shape == (2, 2, 3, 4) and expected.max() > 0
    if method == "gradcam":  # negative mean gradients: the ReLU clips some positions
        assert (expected == 0).any()
    np.testing.assert_allclose(cam, expected, rtol=1e-5, atol=1e-6)
    assert explain_cli.METHODS == grad_cam.METHODS


def test_grad_cam_of_one_clip_is_a_map_in_0_1_per_frame(demo_model):
    clip = demo.labelled_videos("eval", 1, seed=3)[0][0][:NUM_FRAMES]
    for layer in ("local", "res3"):
        cam = grad_cam.grad_cam(demo_model, clip, 0, layer=layer)
        assert cam.shape == (NUM_FRAMES, 64, 64) and cam.dtype == np.float32
        assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)


def test_grad_cam_of_a_stage2_model_differentiates_the_combined_logit():
    keras.utils.set_random_seed(1)
    model = lgd_tf.models.lgd3d(num_classes=3, head="stage2", num_frames=8,
                                stage_blocks=(1, 1, 1, 1), base_filters=4, sketch_dim=32)
    clips = np.random.default_rng(0).integers(0, 256, (2, 8, 40, 48, 3)).astype(np.uint8)
    cams, logits = grad_cam.grad_cam_views(model, clips, [0, 2], layer="res4")
    assert cams.shape == (2, 8, 40, 48) and logits.shape == (2, 3)
    assert np.all((cams >= 0) & (cams <= 1))
    assert grad_cam.explained_head(model)[0].startswith("combined logit")


# Central differences in float32 across ReLU kinks: ~0.1 % off at x_L, ~2.5 % at res3 (the
# gradient without the g_l paths is 3 % off at x_L, 4 % at res3).
@pytest.mark.parametrize("layer, rel", [("local", 0.01), ("res3", 0.035)])
def test_grad_cam_gradient_is_the_total_derivative_through_the_global_path(layer, rel):
    """d y / d A includes the paths through g_l (Eq. 3), which the LGD block computes in one
    fused op with x_l: checked against central differences of y(A + eps d) along a random d."""
    import tensorflow as tf

    keras.utils.set_random_seed(2)
    model = lgd_tf.models.lgd3d(num_classes=3, head="stage2", num_frames=8,
                                stage_blocks=(1, 1, 1, 1), base_filters=4, sketch_dim=32)
    backbone, (_, head) = model.get_layer("backbone"), grad_cam.explained_head(model)
    clips = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, 8, 32, 32, 3)), tf.float32)
    with tf.GradientTape() as tape:
        features, maps = grad_cam.backbone_features(backbone, clips, layer, watch=tape.watch)
        score = head(features)[0, 1]
    direction = tf.constant(np.random.default_rng(1).normal(size=maps.shape), tf.float32)
    analytic = float(tf.reduce_sum(tape.gradient(score, maps) * direction))
    plain = backbone(clips, training=False)
    assert np.allclose(features["global"], plain["global"], rtol=1e-5, atol=1e-5)
    eps = 3e-3 * float(tf.reduce_mean(tf.abs(maps)))

    def score_at(step):
        moved, _ = grad_cam.backbone_features(backbone, clips, layer,
                                             perturb=lambda a: a + step * direction)
        return float(head(moved)[0, 1])

    numeric = (score_at(eps) - score_at(-eps)) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=rel)


def test_upsampling_puts_cell_i_on_pixel_stride_times_i():
    cams = np.zeros((1, 2, 4, 4), np.float32)
    cams[0, :, 1, 2] = 1.0
    up = grad_cam.upsample(cams, (8, 64, 64))
    assert up.shape == (1, 8, 64, 64)
    assert np.unravel_index(up[0, 0].argmax(), (64, 64)) == (16, 32)


def test_command_writes_a_decodable_overlay_video_and_a_png_grid(demo_model_dir, tmp_path,
                                                                  capsys):
    frames, label = demo.labelled_videos("eval", 1, seed=4)[5][:2]
    video = write_video(tmp_path / "digit.mp4", frames)
    output = tmp_path / "out" / "digit_cam.mp4"
    output.parent.mkdir()  # the output's folder must exist (checked before the work)
    code = explain_command.run(["lgd_tf.explain", f"--model={demo_model_dir}",
                                f"--video={video}", f"--output={output}", "--short_side=64",
                                f"--class_name={demo.CLASS_NAMES[label]}"])
    assert code == 0, capsys.readouterr().err
    assert demo.CLASS_NAMES[label] in capsys.readouterr().out
    with av.open(str(output)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # 64 x 64 frames upscaled by 4 (--min_side=256), every frame of the video.
    assert len(decoded) == len(frames)
    assert decoded[0].shape == (256, 256, 3)
    with Image.open(output.with_suffix(".png")) as grid:
        assert grid.format == "PNG" and grid.width > 400


def test_gif_output(demo_model_dir, tmp_path):
    model, names, _ = lgd_tf.serving.loading.load_keras_model(demo_model_dir)
    frames = demo.labelled_videos("eval", 1, seed=5)[0][0][:10]
    result = explain.explain_frames(model, frames, names, layer="res2", method="gradcam++")
    assert result.class_name == names[int(np.argmax(result.probabilities))]
    assert result.method == "gradcam++" and result.frames_per_step == 2
    gif, png = rendering.write_explanation(result, tmp_path / "a.gif", min_side=100)
    with av.open(str(gif)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 10 and decoded[0].shape == (128, 128, 3)
    assert png.is_file()


def test_model_paths(demo_model_dir, tmp_path):
    assert explain.find_model(demo_model_dir) == demo_model_dir / "stage1.keras"
    export_dir = tmp_path / "export"
    (export_dir / "1").mkdir(parents=True)
    (export_dir / "1" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ValueError, match="is a SavedModel, which keeps no gradients"):
        explain.find_model(export_dir)
    (export_dir / "model.keras").write_bytes(b"")
    assert explain.find_model(export_dir) == export_dir / "model.keras"


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_inputs_exit_2_with_one_line(demo_model_dir, tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", demo.labelled_videos("eval", 1, seed=6)[0][0])
    base = ["lgd_tf.explain", f"--model={demo_model_dir}", f"--output={tmp_path / 'o.mp4'}"]

    assert explain_command.run(base + [f"--video={tmp_path / 'missing.mp4'}"]) == 2
    assert _error_line(capsys) == (
        f"lgd_tf.explain: error: --video={tmp_path / 'missing.mp4'}: no such file")

    assert explain_command.run(base + [f"--video={video}", "--class_name=digit9_left"]) == 2
    line = _error_line(capsys)
    assert "digit9_left" in line and "digit0_left, digit0_right" in line

    saved_model = tmp_path / "export"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"")
    assert explain_command.run(["lgd_tf.explain", f"--model={saved_model}", f"--video={video}",
                                f"--output={tmp_path / 'o.mp4'}"]) == 2
    assert "keeps no gradients" in _error_line(capsys)

    assert explain_command.run(base + [f"--video={video}", "--stage=res9"]) == 2
    assert "res9" in _error_line(capsys)
    assert explain_command.run(base + [f"--video={video}", "--method=cam"]) == 2
    assert "gradcam++" in _error_line(capsys)
    assert explain_command.run(base[:2] + [f"--video={video}", "--output=o.avi"]) == 2
    assert ".mp4 or .gif" in _error_line(capsys)
