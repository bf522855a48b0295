"""Use from other projects: `.keras` loading with safe_mode, fine-tuning with `weights=`."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.export.conftest import tiny_lgd3d

LOAD_SCRIPT = """
import sys
import keras
import numpy as np
path, clips = sys.argv[1], np.load(sys.argv[2])
try:
    keras.saving.load_model(path, safe_mode=True)
    raise SystemExit("loaded without the lgd_tf classes registered")
except Exception as error:
    assert "lgd_tf" in str(error), error
import lgd_tf
model = keras.saving.load_model(path, safe_mode=True)
probabilities = lgd_tf.models.class_probabilities(model(clips.astype("float32")))
np.save(sys.argv[3], keras.ops.convert_to_numpy(probabilities))
"""


@pytest.mark.subprocess
def test_keras_file_loads_with_safe_mode_after_import_lgd_tf(trained_model_dir, trained_model,
                                                            tmp_path):
    import lgd_tf

    clips = np.random.default_rng(4).integers(0, 256, (2, 4, 32, 32, 3)).astype(np.uint8)
    np.save(tmp_path / "clips.npy", clips)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(trained_model_dir / "stage2.keras"),
         str(tmp_path / "clips.npy"), str(tmp_path / "out.npy")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    expected = lgd_tf.models.class_probabilities(trained_model(clips.astype("float32")))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"),
                               keras.ops.convert_to_numpy(expected), rtol=1e-6, atol=1e-7)


def test_fine_tuning_with_new_num_classes_keeps_the_backbone(trained_model_dir, trained_model):
    """Table 6 transfer: a new classifier on the trained backbone."""
    path = trained_model_dir / "stage2.keras"
    transfer = tiny_lgd3d(num_classes=5, weights=path)
    trained_backbone = trained_model.get_layer("backbone").get_weights()
    new_backbone = transfer.get_layer("backbone").get_weights()
    assert len(new_backbone) == len(trained_backbone)
    for got, expected in zip(new_backbone, trained_backbone, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert transfer.get_layer("combined_logits").get_weights()[0].shape[-1] == 5

    # Same classes: the whole model, head included, is the trained one.
    same = tiny_lgd3d(num_classes=2, weights=path)
    clips = np.random.default_rng(6).integers(0, 256, (1, 4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(same(clips)["combined"]),
        keras.ops.convert_to_numpy(trained_model(clips)["combined"]), rtol=1e-6, atol=1e-6)


def test_keras_loading_stays_safe_after_unsafe_deserialization_was_enabled(tmp_path):
    """Another library may have called `keras.config.enable_unsafe_deserialization()`:
    export / predict still refuse a `.keras` file whose Lambda layer would run code."""
    from keras.src.saving.serialization_lib import in_safe_mode

    from lgd_tf.serving import loading

    marker = tmp_path / "code_ran.txt"
    marker_name = str(marker)
    inputs = keras.Input((4, 8, 8, 3))
    payload = keras.layers.Lambda(lambda x: (open(marker_name, "a").write("ran"), x)[1])(inputs)
    pooled = keras.layers.GlobalAveragePooling3D()(payload)
    keras.Model(inputs, {"combined": keras.layers.Dense(2)(pooled)}).save(tmp_path / "m.keras")
    marker.unlink()

    previous = in_safe_mode()
    keras.config.enable_unsafe_deserialization()
    try:
        with pytest.raises(ValueError, match="Lambda"):
            loading.load_keras_model(tmp_path / "m.keras")
        assert in_safe_mode() is False  # the process-wide setting is left as it was
    finally:
        from keras.src.backend.common import global_state

        global_state.set_global_attribute("safe_mode_saving", previous)
    assert not marker.exists()
