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
