"""Export for TF Serving: the SavedModel runs without lgd_tf and matches the Keras model."""

import json
import subprocess
import sys
import sysconfig

import keras
import numpy as np
import pytest
import tensorflow as tf

import lgd_tf
import lgd_tf.data
from lgd_tf import export
from lgd_tf.serving import export as export_lib
from lgd_tf.serving import module
from tests.export.conftest import (
    CLASS_NAMES,
    GRAPH_TOL,
    NUM_CLIPS,
    NUM_FRAMES,
    SHORT_SIDE,
    tiny_lgd3d,
)

SIGNATURES = ("serving_default", "serve_encoded", "serve_frames", "features")

# Runs with `python -I -S`: no site-packages processing (so no editable-install finder for
# lgd_tf), no user site, no PYTHONPATH, no current directory; only TF's own site-packages dir
# is added back, and an import hook hides lgd_tf in case it is installed there (non-editable).
NO_LGD_TF_SCRIPT = """
import sys


class HideLgdTf:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "lgd_tf":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, HideLgdTf())
sys.path.append(sys.argv[1])
try:
    import lgd_tf  # noqa: F401
    raise SystemExit("lgd_tf is importable in the serving process")
except ModuleNotFoundError:
    pass
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[2])
clips = tf.constant(np.load(sys.argv[3]))
out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](clips=clips).items()}
out.update({k: v.numpy() for k, v in loaded.signatures["features"](clips=clips).items()})
out["top_k_labels"] = np.char.decode(out["top_k_labels"].astype(bytes), "utf-8")
np.savez(sys.argv[4], **out)
print("lgd_tf" in sys.modules, sorted(loaded.signatures.keys()))
"""


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(7)
    # Two clips of another spatial size than training: the signature is (None, T, None, None, 3).
    return rng.integers(0, 256, (2, NUM_FRAMES, 36, 44, 3)).astype(np.uint8)


def _keras_reference(model, clips):
    probabilities = keras.ops.convert_to_numpy(
        lgd_tf.models.class_probabilities(model(clips.astype("float32"))))
    features = model.get_layer("backbone")(clips.astype("float32"))
    return {
        "probabilities": probabilities,
        "global_features": keras.ops.convert_to_numpy(features["global"]),
        # P(x_L): global average pooling of the final local map (Sec. 3.1), in NumPy.
        "local_features": keras.ops.convert_to_numpy(features["local"]).mean(axis=(1, 2, 3)),
    }


@pytest.mark.subprocess
def test_savedmodel_runs_without_lgd_tf_and_matches_keras(exported, trained_model, clips,
                                                         trained_model_dir, tmp_path):
    export_dir, stdout = exported
    assert (export_dir / "1" / "saved_model.pb").is_file()
    assert "serve_encoded" in stdout
    # No training run behind the model_dir: the flags and Sec. 5.2's defaults, said so.
    assert (f"sampling: {NUM_CLIPS} clips x 1 crop of {NUM_FRAMES} frames, short side "
            f"{SHORT_SIDE}, stride 1, loop (Sec. 5.2 defaults: {trained_model_dir} "
            "/ stage2.keras records no input spec; --num_clips, --short_side "
            "override)").replace(" / ", "/") in stdout.splitlines()
    np.save(tmp_path / "clips.npy", clips)
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", NO_LGD_TF_SCRIPT, sysconfig.get_paths()["purelib"],
         str(export_dir / "1"), str(tmp_path / "clips.npy"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "False"  # lgd_tf never imported there
    out = dict(np.load(tmp_path / "out.npz"))
    reference = _keras_reference(trained_model, clips)
    for key, expected in reference.items():
        np.testing.assert_allclose(out[key], expected, **GRAPH_TOL, err_msg=key)
    expected_order = np.argsort(-reference["probabilities"], axis=1, kind="stable")
    np.testing.assert_array_equal(out["top_k_indices"], expected_order[:, :2])
    np.testing.assert_allclose(
        out["top_k_scores"], np.take_along_axis(reference["probabilities"], expected_order[:, :2],
                                                axis=1), **GRAPH_TOL)
    labels = np.array(CLASS_NAMES, dtype=object)[expected_order[:, :2]]
    assert out["top_k_labels"].tolist() == labels.tolist()
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.subprocess
def test_saved_model_cli_lists_the_signatures(exported):
    export_dir, _ = exported
    cli = (sys.executable.rsplit("/", 1)[0]) + "/saved_model_cli"
    result = subprocess.run([cli, "show", "--dir", str(export_dir / "1"), "--all"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    shown = result.stdout
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in shown
    # serving_default: uint8 clips (None, T, None, None, 3) -> the three outputs + scores.
    serving = shown.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "dtype: DT_UINT8" in serving and f"shape: (-1, {NUM_FRAMES}, -1, -1, 3)" in serving
    for output in ("probabilities", "top_k_indices", "top_k_labels"):
        assert f"outputs['{output}']" in serving
    encoded = shown.split("signature_def['serve_encoded']")[1].split("signature_def[")[0]
    assert "dtype: DT_STRING" in encoded and "shape: (-1)" in encoded


def test_serve_encoded_equals_serving_default_on_the_eval_views(exported, trained_model):
    export_dir, _ = exported
    loaded = tf.saved_model.load(str(export_dir / "1"))
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (9, 30, 50, 3)).astype(np.uint8)
    jpegs = tf.stack([tf.io.encode_jpeg(f) for f in frames])
    encoded_out = loaded.signatures["serve_encoded"](encoded_frames=jpegs)

    decoded = tf.stack([tf.io.decode_jpeg(j, channels=3) for j in jpegs])
    views = lgd_tf.data.eval_views(decoded, model="3d", num_frames=NUM_FRAMES,
                                   num_clips=NUM_CLIPS, num_crops=1, short_side=SHORT_SIDE)
    assert views.shape[:2] == (NUM_CLIPS, NUM_FRAMES) and min(views.shape[2:4]) == SHORT_SIDE
    per_view = loaded.signatures["serving_default"](clips=views)["probabilities"].numpy()
    expected = per_view.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(encoded_out["probabilities"].numpy(), expected, **GRAPH_TOL)
    # ... and serve_frames on the decoded frames is the same computation.
    frames_out = loaded.signatures["serve_frames"](frames=decoded)
    np.testing.assert_allclose(frames_out["probabilities"].numpy(), expected, **GRAPH_TOL)
    keras_views = keras.ops.convert_to_numpy(lgd_tf.models.class_probabilities(
        trained_model(tf.cast(views, tf.float32))))
    np.testing.assert_allclose(keras_views.mean(axis=0, keepdims=True), expected, **GRAPH_TOL)
    assert json.loads(loaded.sampling_json.numpy()) == {
        "model": "3d", "num_frames": NUM_FRAMES, "num_segments": 3, "num_clips": NUM_CLIPS,
        "num_crops": 1, "short_side": SHORT_SIDE, "temporal_stride": 1, "short_video": "loop"}


def test_serve_encoded_scores_the_views_eval_dataset_builds(exported, tmp_path):
    """The same JPEGs as a TFRecord through `eval_dataset` (what `evaluate` scores) and as a
    list through `serve_encoded`: identical views, so the same video score."""
    from lgd_tf.data import writer

    export_dir, _ = exported
    loaded = tf.saved_model.load(str(export_dir / "1"))
    frames = np.random.default_rng(8).integers(0, 256, (7, 26, 34, 3)).astype(np.uint8)
    jpegs = [writer.encode_jpeg(f) for f in frames]
    record = writer.make_sequence_example(jpegs, 1, media_id="v0").SerializeToString()
    writer.write_shard(str(tmp_path / "eval.tfrecord"), [record])
    dataset = lgd_tf.data.eval_dataset(str(tmp_path / "eval.tfrecord"), 1, num_clips=NUM_CLIPS,
                                       num_frames=NUM_FRAMES, short_side=SHORT_SIDE)
    (views, labels, media_ids), = list(dataset)
    assert labels.numpy().tolist() == [1] and media_ids.numpy().tolist() == [b"v0"]

    decoded = tf.stack([tf.io.decode_jpeg(j, channels=3) for j in jpegs])
    served_views = lgd_tf.data.eval_views(decoded, model="3d", num_frames=NUM_FRAMES,
                                          num_clips=NUM_CLIPS, short_side=SHORT_SIDE)
    np.testing.assert_array_equal(served_views.numpy(), views.numpy()[0])
    per_view = loaded.signatures["serving_default"](clips=views[0])["probabilities"].numpy()
    np.testing.assert_allclose(
        loaded.signatures["serve_encoded"](encoded_frames=tf.constant(jpegs))[
            "probabilities"].numpy(), per_view.mean(axis=0, keepdims=True), **GRAPH_TOL)


def test_exported_keras_file_loads_safely_with_the_same_outputs(exported, trained_model, clips):
    export_dir, _ = exported
    reloaded = keras.saving.load_model(export_dir / "model.keras", safe_mode=True)
    expected = _keras_reference(trained_model, clips)
    got = _keras_reference(reloaded, clips)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-7)
    assert (export_dir / "class_names.txt").read_text().split() == CLASS_NAMES


def test_export_refuses_to_overwrite_a_version(exported):
    export_dir, _ = exported
    before = sorted(p.relative_to(export_dir) for p in export_dir.rglob("*"))
    with pytest.raises(ValueError, match="already exists"):
        export_lib.export_model(export_dir / "model.keras", export_dir, version=1)
    assert sorted(p.relative_to(export_dir) for p in export_dir.rglob("*")) == before


def test_export_command_bad_model_dir_exits_2(tmp_path, capsys):
    code = export.run(["export", f"--model_dir={tmp_path}", f"--export_dir={tmp_path}/out"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model there; expected a run folder" in err[0]
    assert not (tmp_path / "out").exists()


def test_class_names_must_match_the_model(trained_model):
    with pytest.raises(ValueError, match="one class name per model output"):
        module.VideoClassifierModule(trained_model, ["only one"])


def test_stage1_flow_model_export_averages_the_two_heads(tmp_path):
    """A stage-1 (Eq. 6 heads) flow model (C = 2): probabilities are the mean of the two heads'
    softmax, and serve_encoded reads x, y flow from channels 0, 1 of each JPEG (3 crops)."""
    keras.utils.set_random_seed(11)
    model = tiny_lgd3d(num_classes=3, head="stage1", input_channels=2)
    result = export_lib.export_model(model, tmp_path / "flow", top_k=3, short_side=SHORT_SIDE,
                                 num_clips=NUM_CLIPS, num_crops=3)
    assert result.class_names == ("0", "1", "2")
    assert sorted(p.name for p in (tmp_path / "flow").iterdir()) == [
        ".lock", "1", "class_names.txt", "export.json", "model.keras"]  # no staging names
    loaded = tf.saved_model.load(str(result.saved_model_dir))

    rng = np.random.default_rng(2)
    clips = rng.integers(0, 256, (2, NUM_FRAMES, 32, 32, 2)).astype(np.uint8)
    logits = {k: keras.ops.convert_to_numpy(v) for k, v in model(clips.astype("float32")).items()}

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    expected = 0.5 * (softmax(logits["global"]) + softmax(logits["local"]))
    got = loaded.signatures["serving_default"](clips=clips)
    np.testing.assert_allclose(got["probabilities"].numpy(), expected, **GRAPH_TOL)
    assert got["top_k_labels"].numpy()[0, 0].decode() == str(np.argmax(expected[0]))

    flow = rng.integers(0, 256, (6, 24, 30, 2)).astype(np.uint8)
    jpegs = tf.stack([tf.io.encode_jpeg(np.concatenate([f, np.full_like(f[..., :1], 128)], -1))
                      for f in flow])
    decoded = tf.stack([tf.io.decode_jpeg(j, channels=3)[..., :2] for j in jpegs])
    views = lgd_tf.data.eval_views(decoded, model="3d", num_frames=NUM_FRAMES,
                                   num_clips=NUM_CLIPS, num_crops=3, short_side=SHORT_SIDE)
    assert views.shape == (NUM_CLIPS * 3, NUM_FRAMES, SHORT_SIDE, SHORT_SIDE, 2)
    per_view = loaded.signatures["serving_default"](clips=views)["probabilities"].numpy()
    np.testing.assert_allclose(
        loaded.signatures["serve_encoded"](encoded_frames=jpegs)["probabilities"].numpy(),
        per_view.mean(axis=0, keepdims=True), **GRAPH_TOL)
