"""Video-level evaluation (Sec. 5.2): scores averaged over the views of each video."""

import csv
import functools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from lgd_tf import models
from lgd_tf.cli import configs
from lgd_tf.data import eval_dataset, writer
from lgd_tf.models import class_probabilities
from lgd_tf.runs import run_folder
from lgd_tf.training import evaluation
from lgd_tf.training.errors import TrainingError, one_line
from lgd_tf.training.two_stage import DataSources
from tests.data import helpers


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


# Pipelines and a real tiny LGD-3D on records written here: batching, labels, media ids.
_SAMPLING = {"num_frames": 8, "num_clips": 2, "short_side": 32}


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    return models.lgd3d(num_classes=3, head="stage1", num_frames=8, stage_blocks=(1, 1, 1, 1),
                        base_filters=4, sketch_dim=64)


def _write(path, videos):
    """videos: (height, width, label, label_string, media_id) -> one shard."""
    records = [writer.make_sequence_example(
        helpers.indexed_frames(10, h, w), label, label_string=name, media_id=media_id)
        .SerializeToString() for h, w, label, name, media_id in videos]
    writer.write_shard(str(path), records)
    return str(path)


def _evaluate(tmp_path, run, pattern, model, class_names=("0", "1", "2"), **kwargs):
    folder = tmp_path / run
    folder.mkdir(exist_ok=True)
    sources = DataSources(None, pattern, 3, list(class_names))
    data_fn = functools.partial(eval_dataset, **_SAMPLING)
    return evaluation.evaluate_video_level(str(folder), sources, model, "stage1",
                                           data_fn=data_fn, **kwargs)


def test_batched_eval_of_mixed_frame_sizes_gives_the_batch_1_scores(tiny_model, tmp_path):
    sizes = [(32, 48), (48, 32), (32, 32)]
    pattern = _write(tmp_path / "mixed.tfrecord", [
        (*sizes[k % 3], k % 3, "", f"v{k}") for k in range(7)])
    batches = list(eval_dataset(pattern, 3, **_SAMPLING))
    shapes = [tuple(v.shape) for v, _, _ in batches]
    assert sorted(s[0] for s in shapes) == [2, 2, 3]  # one batch per size: 3 + 2 + 2 videos
    assert sorted(s[3:5] for s in shapes) == [(32, 32), (32, 48), (48, 32)]
    scores = {}
    for batch_size in (1, 3):
        results = _evaluate(tmp_path, f"b{batch_size}", pattern, tiny_model,
                            batch_size=batch_size)
        assert results["num_videos"] == 7
        with np.load(tmp_path / f"b{batch_size}" / "eval_scores.npz") as saved:
            scores[batch_size] = dict(zip(saved["media_ids"], saved["scores"], strict=True))
    assert sorted(scores[3]) == sorted(scores[1]) == [f"v{k}" for k in range(7)]
    for media_id, expected in scores[1].items():
        np.testing.assert_allclose(scores[3][media_id], expected, atol=1e-5)
    assert not np.allclose(scores[1]["v0"], scores[1]["v1"])  # the sizes give other scores


def test_class_names_of_another_list_fail_naming_the_file_and_names(tiny_model, tmp_path):
    pattern = _write(tmp_path / "abc.tfrecord", [(32, 32, k, n, f"v{k}")
                                                 for k, n in enumerate("abc")])
    assert _evaluate(tmp_path, "same", pattern, tiny_model, "abc")["num_videos"] == 3
    with pytest.raises(TrainingError) as info:  # the command prints it as its one line
        _evaluate(tmp_path, "other", pattern, tiny_model, "cba")
    line = one_line(info.value)
    assert line.startswith(f"lgd_tf.data: bad record 0 of {pattern} (media_id 'v0'): "), line
    assert "label 0 is 'c' in class_names but the record's `clip/label/string` is 'a'" in line


def test_duplicate_media_ids_are_refused(tiny_model, tmp_path):
    pattern = _write(tmp_path / "dup.tfrecord", [(32, 32, 0, "", "clip"), (32, 32, 1, "", "x"),
                                                 (32, 32, 2, "", "clip")])
    with pytest.raises(TrainingError, match=rf"^duplicate media ids in {pattern}: 'clip' "
                                            r"\(2 records\); .*rebuild with"):
        _evaluate(tmp_path, "dup", pattern, tiny_model)
    assert not (tmp_path / "dup" / "eval_scores.npz").exists()


def test_records_without_media_ids_warn_once_and_cannot_be_fused(tiny_model, tmp_path,
                                                                 capsys):
    pattern = _write(tmp_path / "noid.tfrecord", [(32, 32, k, "", "") for k in range(3)])
    for _ in range(2):
        assert _evaluate(tmp_path, "noid", pattern, tiny_model)["num_videos"] == 3
    assert capsys.readouterr().err.count("3 of 3 eval records have no clip/media_id") == 1
    with pytest.raises(TrainingError, match=r"^--fuse_with: 3 of 3 videos in this evaluation "
                                            "have no clip/media_id"):
        _evaluate(tmp_path, "noid", pattern, tiny_model, fuse_with=str(tmp_path / "noid"),
                  write_files=False)


def _softmax(logits):
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_views_batched_across_videos_give_each_videos_own_scores(tiny_model, tmp_path):
    """Batches of several videos (the last one smaller) give the one-video-at-a-time scores,
    and both match a NumPy computation: softmax of each view's logits (stage 1: the mean of
    the two heads), averaged over that video's views; each video counted once; one trace."""
    rng = np.random.default_rng(3)
    records = [writer.make_sequence_example(
        rng.integers(0, 256, (10, 32, 40, 3), dtype=np.uint8), k % 3,
        media_id=f"v{k}").SerializeToString() for k in range(5)]
    pattern = str(tmp_path / "five.tfrecord")
    writer.write_shard(pattern, records)

    expected, labels = {}, {}
    for views, label, media_id in eval_dataset(pattern, 1, **_SAMPLING):
        views = views.numpy()[0]  # (V, T, H, W, C): this video's views, one at a time
        per_view = []
        for view in views:
            logits = tiny_model(view[None], training=False)
            per_view.append(0.5 * (_softmax(logits["global"].numpy()[0])
                                   + _softmax(logits["local"].numpy()[0])))
        expected[media_id.numpy()[0].decode()] = np.mean(per_view, axis=0)
        labels[media_id.numpy()[0].decode()] = int(label[0])
    assert len(expected) == 5

    for batch_size in (1, 3, 5):
        results = _evaluate(tmp_path, f"b{batch_size}", pattern, tiny_model,
                            batch_size=batch_size)
        assert results["num_videos"] == 5 and results["views_per_video"] == 2
        with np.load(tmp_path / f"b{batch_size}" / "eval_scores.npz") as saved:
            ids, scores = list(saved["media_ids"]), saved["scores"]
        assert sorted(ids) == sorted(expected)  # every video once
        for media_id, score in zip(ids, scores, strict=True):
            np.testing.assert_allclose(score, expected[media_id], atol=1e-5)
        top1 = np.mean([np.argmax(expected[m]) == labels[m] for m in ids])
        assert results["top1"] == pytest.approx(top1)
    # One trace for batches of 1, 3 and 2 videos: batch and frame size are left open.
    (predict,) = evaluation._PREDICT[tiny_model].values()
    assert predict.experimental_get_tracing_count() == 1
