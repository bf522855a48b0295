"""Video-level evaluation (Sec. 5.2): scores averaged over the views of each video."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf

from lgd_tf.cli import configs
from lgd_tf.models import class_probabilities
from lgd_tf.training import evaluation, run_folder


def test_average_view_scores_is_the_mean_over_views():
    scores = np.array([[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]],
                       [[0.2, 0.2, 0.6], [0.4, 0.4, 0.2]]])
    expected = np.array([[0.4, 0.4, 0.2], [0.3, 0.3, 0.4]])
    np.testing.assert_allclose(evaluation.average_view_scores(scores), expected)
    with pytest.raises(ValueError, match="Received shape"):
        evaluation.average_view_scores(np.zeros((2, 3)))


def test_evaluate_averages_view_probabilities_like_a_hand_computation(tiny_config, tmp_path):
    """The real pipeline and a real tiny LGD-3D: per-video scores = mean over views."""
    tiny_config("lgd_tf.data.eval_dataset.num_clips = 3")
    model = configs.lgd3d(head="stage1")
    run_folder.save_model(model, str(tmp_path / "stage1.keras"))

    sources = configs.data_sources(need_train=False)
    results = configs.evaluate_video_level(str(tmp_path), sources)

    expected_scores, expected_labels, ids = [], [], []
    for views, labels, media_ids in configs.eval_dataset(sources.eval_pattern, 1):
        assert views.shape[1] == 3
        per_view = [class_probabilities(model(views[:, v], training=False)).numpy()[0]
                    for v in range(views.shape[1])]
        expected_scores.append(np.mean(per_view, axis=0))
        expected_labels.append(int(labels[0]))
        ids.append(media_ids[0].numpy().decode())
    expected_scores, expected_labels = np.array(expected_scores), np.array(expected_labels)
    expected_top1 = np.mean(np.argmax(expected_scores, axis=1) == expected_labels)
    ranks = np.argsort(-expected_scores, axis=1)[:, :5]
    expected_top5 = np.mean([y in r for y, r in zip(expected_labels, ranks, strict=True)])

    assert results["num_videos"] == 12 and results["views_per_video"] == 3
    assert results["stage"] == "stage1"
    assert results["top1"] == pytest.approx(expected_top1)
    assert results["top5"] == pytest.approx(expected_top5)
    with open(tmp_path / "eval_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["media_id"] for r in rows] == ids
    np.testing.assert_array_equal([int(r["predicted"]) for r in rows],
                                  np.argmax(expected_scores, axis=1))
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected_scores.max(axis=1),
                               atol=1e-5)
    on_disk = json.loads((tmp_path / "eval_results.json").read_text())
    assert on_disk["top1"] == results["top1"]
    matrix = np.loadtxt(tmp_path / "confusion_matrix.csv", delimiter=",", skiprows=1,
                        usecols=range(1, 13))
    assert matrix.sum() == 12 and np.trace(matrix) == round(12 * expected_top1)
    assert tf.io.decode_png((tmp_path / "confusion_matrix.png").read_bytes()).shape[-1] == 3


def test_fuse_with_late_fuses_the_two_runs_video_scores(tiny_config, tmp_path):
    """Two-stream evaluation (Sec. 5.5): fused = (1 - w) * first + w * second, by media id."""
    tiny_config()
    sources = configs.data_sources(need_train=False)
    runs = []
    for seed in (1, 2):
        keras_utils = __import__("keras").utils
        keras_utils.set_random_seed(seed)
        run_dir = tmp_path / f"run{seed}"
        run_dir.mkdir()
        run_folder.save_model(configs.lgd3d(head="stage1"), str(run_dir / "stage1.keras"))
        configs.evaluate_video_level(str(run_dir), sources)
        with np.load(run_dir / "eval_scores.npz") as data:
            runs.append(dict(zip(data["media_ids"], data["scores"], strict=True)))
    weight = 0.3
    fused = configs.evaluate_video_level(str(tmp_path / "run1"), sources, fuse_with=str(
        tmp_path / "run2"), fusion_weight=weight, write_files=False)

    with open(tmp_path / "run1" / "eval_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    labels = np.array([int(r["label"]) for r in rows])
    hand = np.stack([(1 - weight) * runs[0][r["media_id"]] + weight * runs[1][r["media_id"]]
                     for r in rows])
    assert fused["fused_with"] == str(tmp_path / "run2")
    assert fused["top1"] == pytest.approx(np.mean(np.argmax(hand, axis=1) == labels))
    assert not np.allclose(hand, np.stack([runs[0][r["media_id"]] for r in rows]))
