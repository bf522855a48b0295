"""Two-stream late fusion (Sec. 5.5) against hand-computed values."""

import numpy as np
import pytest

from lgd_tf.runs import fusion


def test_fuse_scores_matches_a_hand_computation():
    rgb = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]
    flow = [[0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]
    # w = 0.25: 0.75 * rgb + 0.25 * flow, written out element by element.
    expected = [
        [0.75 * 0.7 + 0.25 * 0.1, 0.75 * 0.2 + 0.25 * 0.6, 0.75 * 0.1 + 0.25 * 0.3],
        [0.75 * 0.1 + 0.25 * 0.2, 0.75 * 0.1 + 0.25 * 0.2, 0.75 * 0.8 + 0.25 * 0.6],
    ]
    fused = fusion.fuse_scores(rgb, flow, flow_weight=0.25)
    np.testing.assert_allclose(fused, expected, rtol=1e-6)
    assert fused.dtype == np.float32


def test_fusion_weight_end_points_select_one_stream():
    rgb = np.array([0.5, 0.3, 0.2])
    flow = np.array([0.1, 0.1, 0.8])
    np.testing.assert_allclose(fusion.fuse_scores(rgb, flow, 0.0), rgb, rtol=1e-6)
    np.testing.assert_allclose(fusion.fuse_scores(rgb, flow, 1.0), flow, rtol=1e-6)
    # The default is the equal-weight average.
    np.testing.assert_allclose(fusion.fuse_scores(rgb, flow), [0.3, 0.2, 0.5], rtol=1e-6)


def test_fusion_can_change_the_top_class():
    rgb = np.array([0.55, 0.45])
    flow = np.array([0.1, 0.9])
    assert np.argmax(fusion.fuse_scores(rgb, flow, 0.5)) == 1
    assert np.argmax(fusion.fuse_scores(rgb, flow, 0.1)) == 0


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_weight_outside_unit_interval_is_rejected(weight):
    with pytest.raises(ValueError, match="flow_weight"):
        fusion.fuse_scores([1.0], [0.0], weight)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="same shape"):
        fusion.fuse_scores(np.ones((2, 3)), np.ones((2, 4)))


def test_fuse_by_media_id_matches_videos_not_positions():
    rgb = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    flow = {"b": np.array([0.5, 0.5]), "a": np.array([0.0, 1.0])}
    fused = fusion.fuse_scores_by_media_id(rgb, flow, flow_weight=0.5)
    assert list(fused) == ["a", "b"]
    np.testing.assert_allclose(fused["a"], [0.5, 0.5])
    np.testing.assert_allclose(fused["b"], [0.25, 0.75])


def test_fuse_by_media_id_rejects_different_video_sets():
    with pytest.raises(ValueError, match="same videos"):
        fusion.fuse_scores_by_media_id({"a": [1.0]}, {"b": [1.0]})


def test_fuse_two_models_gives_the_weight_to_the_flow_stream_in_either_order():
    rgb = np.array([0.8, 0.2])
    flow = np.array([0.2, 0.8])
    expected = [0.7 * 0.8 + 0.3 * 0.2, 0.7 * 0.2 + 0.3 * 0.8]
    np.testing.assert_allclose(fusion.fuse_two_models(
        rgb, flow, modality="rgb", fuse_with_modality="flow", fusion_weight=0.3), expected)
    np.testing.assert_allclose(fusion.fuse_two_models(
        flow, rgb, modality="flow", fuse_with_modality="rgb", fusion_weight=0.3), expected)
    # Same modality: the weight goes to the fuse_with model.
    np.testing.assert_allclose(fusion.fuse_two_models(
        rgb, flow, modality="rgb", fuse_with_modality="rgb", fusion_weight=0.3), expected)
    by_id = fusion.fuse_two_models({"v": flow}, {"v": rgb}, modality="flow",
                                   fuse_with_modality="rgb", fusion_weight=0.3)
    np.testing.assert_allclose(by_id["v"], expected)
    with pytest.raises(ValueError, match="modality"):
        fusion.fuse_two_models(rgb, flow, modality="depth")


def test_evaluate_fuse_with_model_dir_matches_videos_by_media_id(tmp_path):
    names = ["run", "jump", "swim"]
    flow_dir = tmp_path / "flow_run"
    flow_dir.mkdir()
    # The flow model was evaluated on its own data: other video order.
    fusion.write_video_scores(flow_dir, [b"v2", b"v1"],
                              [[0.2, 0.2, 0.6], [0.1, 0.8, 0.1]], names, "flow")
    rgb_scores = np.array([[0.6, 0.3, 0.1], [0.3, 0.3, 0.4]])  # v1, v2
    fused = fusion.fuse_with_model_dir(["v1", "v2"], rgb_scores, names, "rgb", flow_dir,
                                       fusion_weight=0.4)
    expected = [[0.6 * 0.6 + 0.4 * 0.1, 0.6 * 0.3 + 0.4 * 0.8, 0.6 * 0.1 + 0.4 * 0.1],
                [0.6 * 0.3 + 0.4 * 0.2, 0.6 * 0.3 + 0.4 * 0.2, 0.6 * 0.4 + 0.4 * 0.6]]
    np.testing.assert_allclose(fused, expected, rtol=1e-6)

    # Evaluating the flow model with --fuse_with=the RGB run gives the same fused scores.
    rgb_dir = tmp_path / "rgb_run"
    rgb_dir.mkdir()
    fusion.write_video_scores(rgb_dir, ["v1", "v2"], rgb_scores, names, "rgb")
    from_flow = fusion.fuse_with_model_dir(["v1", "v2"], [[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]],
                                           names, "flow", rgb_dir, fusion_weight=0.4)
    np.testing.assert_allclose(from_flow, expected, rtol=1e-6)


def test_fuse_with_model_dir_errors(tmp_path):
    with pytest.raises(ValueError, match="run `python -m lgd_tf.evaluate`"):
        fusion.fuse_with_model_dir(["v"], [[1.0, 0.0]], ["a", "b"], "rgb", tmp_path)
    fusion.write_video_scores(tmp_path, ["v"], [[0.5, 0.5]], ["a", "c"], "flow")
    with pytest.raises(ValueError, match="other classes"):
        fusion.fuse_with_model_dir(["v"], [[1.0, 0.0]], ["a", "b"], "rgb", tmp_path)
    with pytest.raises(ValueError, match="same videos"):
        fusion.fuse_with_model_dir(["w"], [[1.0, 0.0]], ["a", "c"], "rgb", tmp_path)
    with pytest.raises(ValueError, match=r"\(N videos, K classes\)"):
        fusion.write_video_scores(tmp_path, ["v", "w"], [[0.5, 0.5]], ["a", "c"], "rgb")


def test_fusion_refuses_empty_or_repeated_media_ids(tmp_path):
    names = ["a", "b"]
    fusion.write_video_scores(tmp_path, ["v", "w"], [[0.5, 0.5], [0.2, 0.8]], names, "flow")
    with pytest.raises(ValueError, match=r"^2 of 2 videos in this evaluation have no "
                                         r"clip/media_id, so the two streams' videos cannot be "
                                         "matched; rebuild"):
        fusion.fuse_with_model_dir(["", ""], [[1.0, 0.0], [0.0, 1.0]], names, "rgb", tmp_path)
    with pytest.raises(ValueError, match=r"^duplicate media ids in this evaluation: 'v' "
                                         r"\(2 records\); "):
        fusion.fuse_with_model_dir(["v", "v"], [[1.0, 0.0], [0.0, 1.0]], names, "rgb", tmp_path)
    # The other run's file was written from records with a repeated id: refused, not collapsed.
    other = tmp_path / "other"
    other.mkdir()
    fusion.write_video_scores(other, ["v", "v"], [[0.5, 0.5], [0.2, 0.8]], names, "flow")
    with pytest.raises(ValueError, match=r"duplicate media ids in .*other/eval_scores.npz: 'v'"):
        fusion.fuse_with_model_dir(["v", "w"], [[1.0, 0.0], [0.0, 1.0]], names, "rgb", other)
    assert fusion.check_media_ids([b"v", "w"], "x") == ["v", "w"]
