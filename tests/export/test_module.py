"""Evaluation sampling defaults of the serving module (Sec. 5.2) and argument checks."""

import pytest

import lgd_tf
from lgd_tf.serving import module
from tests.export.conftest import TINY


def test_default_sampling_follows_sec_5_2_for_lgd3d_and_lgd2d():
    model_3d = lgd_tf.models.lgd3d(num_classes=3, **TINY)
    sampling = module.default_sampling(model_3d)
    assert (sampling.model, sampling.num_frames) == ("3d", TINY["num_frames"])
    assert (sampling.num_clips, sampling.short_side, sampling.num_crops) == (15, 120, 1)

    tiny_2d = {k: v for k, v in TINY.items() if k != "num_frames"}
    model_2d = lgd_tf.models.lgd2d(num_classes=3, num_segments=5, **tiny_2d)
    sampling = module.default_sampling(model_2d, num_crops=3)
    assert (sampling.model, sampling.num_segments) == ("2d", 5)
    assert (sampling.num_clips, sampling.short_side, sampling.num_crops) == (10, 240, 3)

    overridden = module.default_sampling(model_2d, num_clips=2, short_side=64)
    assert (overridden.num_clips, overridden.short_side) == (2, 64)


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "4d"}, "'3d' or '2d'"),
    ({"num_crops": 2}, "num_crops"),
    ({"short_side": 0}, "short_side"),
])
def test_sampling_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        module.Sampling(**kwargs)


def test_top_k_is_clipped_to_the_number_of_classes():
    model = lgd_tf.models.lgd3d(num_classes=3, **TINY)
    assert module.VideoClassifierModule(model, ["a", "b", "c"], top_k=10).top_k == 3
    with pytest.raises(ValueError, match="top_k"):
        module.VideoClassifierModule(model, ["a", "b", "c"], top_k=0)


def test_find_saved_model_takes_the_highest_numeric_version(tmp_path):
    from lgd_tf.serving import loading

    for version in ("1", "2", "10", "latest"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "saved_model.pb").write_bytes(b"")
    (tmp_path / "11").mkdir()  # a version directory still being written: no saved_model.pb
    assert loading.find_saved_model(tmp_path) == tmp_path / "10"
    assert loading.find_saved_model(tmp_path / "2") == tmp_path / "2"
    assert loading.find_saved_model(tmp_path / "11") is None
    assert loading.find_saved_model(tmp_path / "missing") is None


def test_find_keras_file_prefers_stage2(tmp_path):
    from lgd_tf.serving import loading

    with pytest.raises(ValueError, match="stage2.keras or stage1.keras"):
        loading.find_keras_file(tmp_path)
    (tmp_path / "stage1.keras").write_bytes(b"")
    assert loading.find_keras_file(tmp_path) == tmp_path / "stage1.keras"
    (tmp_path / "stage2.keras").write_bytes(b"")
    assert loading.find_keras_file(tmp_path) == tmp_path / "stage2.keras"
    with pytest.raises(ValueError, match="existing .keras file"):
        loading.find_keras_file(tmp_path / "model.h5")


def test_features_of_lgd2d_are_g_L_the_pooled_local_map_and_the_embedding():
    import keras
    import numpy as np

    tiny_2d = {k: v for k, v in TINY.items() if k != "num_frames"}
    model = lgd_tf.models.lgd2d(num_classes=3, num_segments=3, head="stage1", **tiny_2d)
    serving = module.VideoClassifierModule(model, ["a", "b", "c"])
    clips = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 40, 3)).astype(np.uint8)
    got = {k: v.numpy() for k, v in serving.features(clips).items()}
    backbone = model.get_layer("backbone")(clips.astype("float32"))
    local = keras.ops.convert_to_numpy(backbone["local"])
    assert local.ndim == 5
    np.testing.assert_allclose(got["global_features"],
                               keras.ops.convert_to_numpy(backbone["global"]), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(got["local_features"], local.mean(axis=(1, 2, 3)), rtol=1e-4,
                               atol=1e-5)
    # The retrieval embedding: g_L over its L2 norm, alongside the existing outputs.
    assert set(got) == {"global_features", "local_features", module.EMBEDDING}
    g = got["global_features"]
    np.testing.assert_allclose(got[module.EMBEDDING], g / np.linalg.norm(g, axis=1,
                                                                          keepdims=True),
                               rtol=1e-5, atol=1e-6)
