"""Heads (Eq. 4-6), class_probabilities, weights loading, and the task checks of every head
(run_task_test: shapes, round trips, SavedModel, mixed precision)."""

import numpy as np
import pytest

import lgd_tf
from lgd_tf.models import class_probabilities
from tests.test_case import run_task_test, to_numpy

RNG = np.random.default_rng(4)
TINY = {"stage_blocks": (1, 1, 1, 1), "base_filters": 8, "num_frames": 4}
TINY_2D = {"stage_blocks": (1, 1, 1, 1), "base_filters": 8}


def clip(batch=2):
    return RNG.integers(0, 256, (batch, 4, 32, 32, 3)).astype("uint8")


def softmax(v):
    e = np.exp(v - v.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_sketch(v, layer):
    """TS via NumPy's FFT: count sketches with np.add.at, product of the spectra."""
    d = layer.output_dim
    out = []
    for h, s in ((layer.hash1, layer.sign1), (layer.hash2, layer.sign2)):
        sketch = np.zeros(v.shape[:-1] + (d,))
        np.add.at(np.moveaxis(sketch, -1, 0), h.numpy(), np.moveaxis(v * s.numpy(), -1, 0))
        out.append(np.fft.rfft(sketch, axis=-1))
    return np.fft.irfft(out[0] * out[1], n=d, axis=-1)


@pytest.mark.parametrize("normalised", [False, True], ids=["bare_eq5", "signed_sqrt_l2"])
def test_stage2_head_is_eq_4_5(normalised):
    model = lgd_tf.models.lgd3d(num_classes=5, sketch_dim=32, sketch_signed_sqrt_l2=normalised,
                                **TINY)
    x = clip()
    logits = to_numpy(model(x)["combined"])
    features = model.get_layer("backbone")(x)
    local, glob = to_numpy(features["local"]).astype("float64"), to_numpy(features["global"])
    sketch = model.get_layer("local_global_sketch").sketch
    phi = np.concatenate([numpy_sketch(local, sketch).mean(axis=(1, 2, 3)),
                          numpy_sketch(glob.astype("float64"), sketch)], axis=-1)
    if normalised:  # Gao et al. 2016: signed square root, then L2 normalisation
        phi = np.sign(phi) * np.sqrt(np.abs(phi))
        phi /= np.linalg.norm(phi, axis=-1, keepdims=True)
    kernel, bias = model.get_layer("combined_logits").get_weights()
    np.testing.assert_allclose(logits, phi @ kernel + bias, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(class_probabilities(model(x)), softmax(logits), rtol=1e-5)


def test_stage1_heads_are_eq_6():
    model = lgd_tf.models.lgd2d(num_classes=4, head="stage1", num_segments=3,
                                stage_blocks=(1, 1, 1, 1), base_filters=8)
    x = RNG.integers(0, 256, (2, 3, 32, 32, 3)).astype("uint8")
    out = model(x)
    features = model.get_layer("backbone")(x)
    wg, bg = model.get_layer("global_logits").get_weights()
    wl, bl = model.get_layer("local_logits").get_weights()
    np.testing.assert_allclose(out["global"], to_numpy(features["global"]) @ wg + bg, rtol=1e-4,
                               atol=1e-5)
    pooled = to_numpy(features["local"]).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(out["local"], pooled @ wl + bl, rtol=1e-4, atol=1e-5)
    expected = 0.5 * (softmax(to_numpy(out["global"])) + softmax(to_numpy(out["local"])))
    np.testing.assert_allclose(class_probabilities(out), expected, rtol=1e-5)


def test_class_probabilities_rejects_other_dicts():
    with pytest.raises(ValueError, match="Received keys"):
        class_probabilities({"local": np.zeros((1, 2)), "global": np.zeros((1, 2)),
                             "res5": np.zeros((1, 2))})
    with pytest.raises(ValueError, match="dict"):
        class_probabilities(np.zeros((1, 2)))


# (builder, builder arguments, clip (B, T, S, S, C), SavedModel routes or None to leave it
# out: its tracing costs seconds, so each head is saved once and both routes once).
TASK_CASES = {
    "lgd3d_stage1": (lgd_tf.models.lgd3d, {"head": "stage1", "variant": "v2", **TINY},
                     (2, 4, 32, 32, 3), ("export",)),
    "lgd3d_stage2": (lgd_tf.models.lgd3d, {"head": "stage2", "sketch_dim": 16, **TINY},
                     (2, 4, 32, 32, 3), None),
    "lgd2d_stage1_flow": (lgd_tf.models.lgd2d, {"head": "stage1", "num_segments": 2,
                                                 "input_channels": 2, **TINY_2D},
                          (2, 2, 32, 32, 2), None),
    "lgd2d_stage2": (lgd_tf.models.lgd2d, {"head": "stage2", "num_segments": 2,
                                            "sketch_dim": 16, **TINY_2D},
                     (2, 2, 32, 32, 3), ("export", "tf.saved_model.save")),
}


@pytest.mark.parametrize("case", sorted(TASK_CASES))
def test_task(case):
    """Logits (B, K) per head, float32 under mixed_float16 / mixed_bfloat16, round trips."""
    builder, kwargs, shape, routes = TASK_CASES[case]
    x = np.random.default_rng(0).integers(0, 256, shape).astype("uint8")  # whatever ran before
    heads = ("global", "local") if kwargs["head"] == "stage1" else ("combined",)
    backbone_cls = (lgd_tf.models.LGD3DBackbone if builder is lgd_tf.models.lgd3d
                    else lgd_tf.models.LGD2DBackbone)
    model = run_task_test(builder, {"num_classes": 3, **kwargs}, x,
                          {head: (shape[0], 3) for head in heads}, backbone_cls=backbone_cls,
                          run_saved_model=None if routes else False,
                          saved_model_routes=routes or ("export",),
                          # The signed square root of Eq. 5's sketch magnifies the rounding of
                          # its entries near 0: bfloat16 logits are off by up to 4% of their
                          # scale on 12 random clips (float16: 0.4%), stage-1 ones by < 1%.
                          mixed_precision_tolerance=0.1 if kwargs["head"] == "stage2" else 0.05)
    assert model.head == kwargs["head"]


def test_weights_keep_backbone_and_matching_head(tmp_path):
    source = lgd_tf.models.lgd3d(num_classes=5, head="stage1", **TINY)
    x = clip()
    source(x)
    path = str(tmp_path / "stage1.keras")
    source.save(path)
    same = lgd_tf.models.lgd3d(num_classes=5, head="stage1", weights=path, **TINY)
    for key, value in source(x).items():
        np.testing.assert_allclose(same(x)[key], value, rtol=1e-6)
    finetune = lgd_tf.models.lgd3d(num_classes=7, head="stage1", weights=path, **TINY)
    np.testing.assert_allclose(finetune.get_layer("backbone")(x)["global"],
                               source.get_layer("backbone")(x)["global"], rtol=1e-6)
    assert finetune(x)["global"].shape == (2, 7)
    stage2 = lgd_tf.models.lgd3d(num_classes=5, sketch_dim=16, weights=path, **TINY)
    np.testing.assert_allclose(stage2.get_layer("backbone")(x)["local"],
                               source.get_layer("backbone")(x)["local"], rtol=1e-6)
    weights_path = str(tmp_path / "stage1.weights.h5")
    source.save_weights(weights_path)
    other = lgd_tf.models.lgd3d(num_classes=7, head="stage1", weights=weights_path, **TINY)
    np.testing.assert_allclose(other.get_layer("backbone")(x)["global"],
                               source.get_layer("backbone")(x)["global"], rtol=1e-6)


def test_stage1_to_stage2_backbone_copy():
    s1 = lgd_tf.models.lgd3d(num_classes=3, head="stage1", **TINY)
    s2 = lgd_tf.models.lgd3d(num_classes=3, head="stage2", sketch_dim=16, **TINY)
    s2.get_layer("backbone").set_weights(s1.get_layer("backbone").get_weights())
    x = clip(1)
    np.testing.assert_allclose(s2.get_layer("backbone")(x)["global"],
                               s1.get_layer("backbone")(x)["global"], rtol=1e-6)


def test_builder_defaults_normalise_the_eq5_features():
    assert lgd_tf.models.lgd3d(num_classes=3, sketch_dim=16, **TINY).sketch_signed_sqrt_l2
    model = lgd_tf.models.lgd2d(num_classes=3, num_segments=2, stage_blocks=(1, 1, 1, 1),
                                base_filters=8, sketch_dim=16)
    assert model.get_layer("local_global_sketch").signed_sqrt_l2


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="head"):
        lgd_tf.models.lgd3d(head="stage3", **TINY)
    with pytest.raises(ValueError, match="num_classes"):
        lgd_tf.models.lgd3d(num_classes=0, **TINY)
    with pytest.raises(ValueError, match="weights"):
        lgd_tf.models.lgd3d(weights=str(tmp_path / "m.ckpt"), **TINY)
    small = lgd_tf.models.lgd3d(head="stage1", **TINY)
    small.save(str(tmp_path / "small.keras"))
    with pytest.raises(ValueError, match="backbone"):
        lgd_tf.models.lgd3d(head="stage1", weights=str(tmp_path / "small.keras"),
                            **{**TINY, "base_filters": 4})
