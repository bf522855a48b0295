"""Sec. 5.2 initialisation: from scratch every W Glorot; inflated from a 2-D ResNet, W^{x,g}
zero and LGD-3D on a static clip computing the 2-D ResNet per frame in inference mode."""

import keras
import numpy as np
import pytest

import lgd_tf
from lgd_tf.models import builders, inflation

RNG = np.random.default_rng(5)
LAST_UNIT = {2: 3, 3: 4, 4: 6, 5: 3}
TINY = {"stage_blocks": (1, 1, 1, 1), "base_filters": 4, "num_frames": 4}


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    """keras.applications.ResNet50 (random weights, random BatchNorm statistics and conv
    biases so that their folding is tested), saved as a weights file."""
    resnet = keras.applications.ResNet50(weights=None, include_top=False,
                                         input_shape=(None, None, 3))
    for layer in resnet.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([RNG.uniform(0.5, 1.0, n), RNG.normal(0, 0.1, n),
                               RNG.normal(0, 0.1, n), RNG.uniform(0.5, 1.5, n)])
        elif isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, RNG.normal(0, 0.1, bias.shape)])
    path = tmp_path_factory.mktemp("resnet") / "resnet50.weights.h5"
    resnet.save_weights(str(path))
    return resnet, str(path)


def stage_outputs(resnet):
    names = [f"conv{s}_block{n}_out" for s, n in LAST_UNIT.items()]
    return keras.Model(resnet.input, [resnet.get_layer(n).output for n in names])


def relative_error(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()


def w_xg(backbone):
    return [b.global_to_local.up.numpy() for b in backbone.layers
            if isinstance(b, lgd_tf.layers.LGDBlock)]


def test_inflated_lgd3d_matches_2d_resnet_per_frame_on_static_clip_in_inference_mode(resnet50):
    """Holds for training=False only: with training=True the temporal BatchNorms (identity by
    their moving statistics) renormalise with the batch's statistics, so the local path
    differs from the 2-D ResNet's even in training mode (which sees the same statistics in
    every copied BatchNorm): measured 0.56-0.97 relative per stage, < 1e-6 at inference."""
    resnet, path = resnet50
    backbone = lgd_tf.models.lgd3d(depth=50, head=None, num_frames=4, inflate_from=path)
    frame = RNG.integers(0, 256, (1, 64, 64, 3)).astype("float32")
    clip = np.repeat(frame[:, None], 4, axis=1)
    # Table 1 has no spatial max pool: the reference is the 2-D ResNet without pool1.
    reference = keras.models.clone_model(
        resnet, clone_function=lambda layer: keras.layers.Identity(name=layer.name)
        if layer.name in ("pool1_pad", "pool1_pool") else layer.__class__.from_config(
            layer.get_config()))
    reference.set_weights(resnet.get_weights())
    pixels = keras.applications.resnet50.preprocess_input(frame)
    for training, check in ((False, lambda e: e < 1e-4), (True, lambda e: e > 0.1)):
        out = backbone(clip, training=training)
        expected = stage_outputs(reference)(pixels, training=training)
        for stage, ref in zip((2, 3, 4, 5), expected, strict=True):
            local = out[f"res{stage}"].numpy()
            assert local.shape[2:] == tuple(ref.shape[1:])
            for t in range(local.shape[1]):
                error = relative_error(local[:, t], ref)
                assert check(error), (training, stage, t, error)
    assert len(w_xg(backbone)) == 16
    assert all(not np.any(w) for w in w_xg(backbone))


def test_w_xg_is_glorot_from_scratch_and_zero_when_inflated(monkeypatch):
    """Sec. 5.2: zero_init_global_residual=None means zero iff inflate_from is given; True /
    False given explicitly win (the real inflation is in the tests around this one)."""
    scratch = lgd_tf.models.lgd3d(head=None, **TINY)
    assert scratch.zero_init_global_residual is False
    assert all(np.abs(w).min() > 0 for w in w_xg(scratch))
    forced = lgd_tf.models.lgd3d(head=None, zero_init_global_residual=True, **TINY)
    assert all(not np.any(w) for w in w_xg(forced))
    calls = []
    monkeypatch.setattr(builders, "load_keras_resnet", lambda path, depth: "resnet")
    monkeypatch.setattr(builders, "inflate_backbone",
                        lambda backbone, resnet, zero_global_residual: calls.append(
                            (backbone.zero_init_global_residual, zero_global_residual)))
    for given, expected in ((None, True), (False, False), (True, True)):
        lgd_tf.models.lgd3d(head=None, inflate_from="r.h5", zero_init_global_residual=given,
                            **TINY)
        assert calls[-1] == (expected, expected), given


@pytest.mark.parametrize("source", ["imagenet", "/data/resnet101.h5"])
def test_inflate_from_imagenet_asks_keras_applications_for_imagenet(monkeypatch, source):
    """The download itself needs internet (not available to the tests): only the call into
    keras.applications is checked here."""
    calls = []

    def fake_resnet101(**kwargs):
        calls.append(kwargs)
        return "resnet"

    monkeypatch.setitem(inflation.KERAS_RESNETS, 101, fake_resnet101)
    assert inflation.load_keras_resnet(source, 101) == "resnet"
    assert calls[0]["weights"] == source and calls[0]["include_top"] is False


def test_inflated_lgd2d_matches_2d_resnet_per_frame(resnet50):
    resnet, path = resnet50
    backbone = lgd_tf.models.lgd2d(depth=50, head=None, num_segments=2, inflate_from=path)
    frames = RNG.integers(0, 256, (2, 64, 64, 3)).astype("float32")
    out = backbone(frames[None])
    expected = stage_outputs(resnet)(keras.applications.resnet50.preprocess_input(frames))
    for stage, ref in zip((2, 3, 4, 5), expected, strict=True):
        assert relative_error(out[f"res{stage}"][0], ref) < 1e-4, stage
    assert backbone.zero_init_global_residual is True
    assert len(w_xg(backbone)) == 16 and all(not np.any(w) for w in w_xg(backbone))


def test_flow_stem_uses_the_channel_mean(resnet50):
    resnet, path = resnet50
    backbone = lgd_tf.models.lgd2d(depth=50, head=None, num_segments=1, input_channels=2,
                                   use_lgd=False, inflate_from=path)
    kernel = resnet.get_layer("conv1_conv").get_weights()[0]
    inflated = backbone.get_layer("conv1_spatial").get_weights()[0][0]
    np.testing.assert_allclose(inflated, np.repeat(kernel.mean(2, keepdims=True), 2, axis=2),
                               rtol=1e-6)
    np.testing.assert_allclose(backbone.get_layer("normalization").offset.numpy(), [128, 128])


def test_mismatched_depth_is_refused(resnet50):
    _, path = resnet50
    with pytest.raises(ValueError, match="units"):
        lgd_tf.models.lgd3d(depth=50, head=None, num_frames=4, stage_blocks=(1, 1, 1, 1),
                            inflate_from=path)
