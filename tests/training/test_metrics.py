"""lgd_tf.training.metrics: confusion matrix, per-class accuracy, top-k, CSV table, figure."""

import csv
import io

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import top_k_accuracy_score

from lgd_tf.training import metrics

DEMO_NAMES = [f"digit{d}_{m}" for d in (0, 1, 7) for m in ("left", "right", "up", "down")]


def _demo_matrix(seed=0, num_classes=12, per_class=16):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    noise = rng.integers(0, num_classes, labels.shape)
    predictions = np.where(rng.random(labels.shape) < 0.8, labels, noise)
    return metrics.confusion_matrix(labels, predictions, num_classes)


def test_confusion_matrix_counts_by_hand():
    labels = [0, 0, 1, 2, 2, 2, 0]
    predictions = [0, 1, 1, 2, 0, 2, 0]
    matrix = metrics.confusion_matrix(labels, predictions, 4)
    expected = np.array([[2, 1, 0, 0],   # class 0: two right, one called 1
                         [0, 1, 0, 0],
                         [1, 0, 2, 0],   # class 2: one called 0
                         [0, 0, 0, 0]])  # class 3: no video, still a row and a column
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.dtype == np.int64 and matrix.shape == (4, 4)


def test_confusion_matrix_empty_and_bad_inputs():
    np.testing.assert_array_equal(metrics.confusion_matrix([], [], 3), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        metrics.confusion_matrix([0, 1], [0, -1], 3)
    with pytest.raises(ValueError, match="length"):
        metrics.confusion_matrix([0, 1], [0], 3)


def test_per_class_accuracy_with_an_empty_class_is_nan():
    matrix = np.array([[2, 1, 0, 0],
                       [0, 1, 0, 0],
                       [1, 0, 2, 0],
                       [0, 0, 0, 0]])
    accuracy = metrics.per_class_accuracy(matrix)
    np.testing.assert_allclose(accuracy[:3], [2 / 3, 1.0, 2 / 3])
    assert np.isnan(accuracy[3])
    assert accuracy.dtype == np.float64


def test_top_k_correct_breaks_ties_by_lower_index():
    scores = np.array([[0.4, 0.4, 0.2],    # tie 0/1: class 0 ranks first
                       [0.2, 0.4, 0.4],    # tie 1/2: class 1 ranks first
                       [0.3, 0.3, 0.3]])   # all tied: order 0, 1, 2
    labels = np.array([1, 2, 2])
    np.testing.assert_array_equal(metrics.top_k_correct(scores, labels, 1), [False, False, False])
    np.testing.assert_array_equal(metrics.top_k_correct(scores, labels, 2), [True, True, False])
    np.testing.assert_array_equal(metrics.top_k_correct(scores, labels, 5), [True, True, True])
    np.testing.assert_array_equal(metrics.top_k_correct(scores, [0, 1, 0], 1), [True, True, True])
    with pytest.raises(ValueError, match="k"):
        metrics.top_k_correct(scores, labels, 0)


def test_top_k_correct_matches_sklearn_without_ties():
    rng = np.random.default_rng(1)
    scores = rng.random((50, 7))
    labels = rng.integers(0, 7, 50)
    for k in (1, 3, 5):
        assert metrics.top_k_correct(scores, labels, k).mean() == pytest.approx(
            top_k_accuracy_score(labels, scores, k=k, labels=range(7)))


def test_confusion_csv_round_trips_awkward_names():
    names = ["plain", "a,b", 'say "hi"', "two\nlines", "cr\r\nlf"]
    matrix = np.arange(25).reshape(5, 5)
    text = metrics.confusion_csv(matrix, names)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["true\\predicted", *names]
    assert [row[0] for row in rows[1:]] == names
    np.testing.assert_array_equal(np.array([row[1:] for row in rows[1:]], int), matrix)
    assert len(rows) == 6
    with pytest.raises(ValueError, match="class names"):
        metrics.confusion_csv(matrix, names[:4])


def test_confusion_figure_has_names_title_counts_and_colorbar():
    matrix = _demo_matrix()
    matrix[5] = 0  # a class without videos
    title = "stage2: video-level top-1 91.7% (192 videos)"
    fig = metrics.confusion_figure(matrix, DEMO_NAMES, title=title)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the matrix and its colorbar
    assert [t.get_text() for t in ax.get_xticklabels()] == DEMO_NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == DEMO_NAMES
    assert all(t.get_rotation() == 90 for t in ax.get_xticklabels())
    assert ax.get_title() == title
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
             for t in ax.texts}
    assert len(cells) == 144
    assert all(cells[i, j] == str(matrix[i, j]) for i in range(12) for j in range(12))
    # Colours are row-normalised; the empty row is masked (drawn grey).
    shown = ax.images[0].get_array()
    rows = matrix.sum(axis=1, keepdims=True)
    keep = np.arange(12) != 5
    np.testing.assert_allclose(shown[keep], (matrix / np.maximum(rows, 1))[keep])
    assert shown.mask[5].all() and not shown.mask[keep].any()
    assert ax.images[0].get_clim() == (0.0, 1.0)


def test_confusion_figure_keeps_names_literal_and_leaves_pyplot_alone():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    names = ["cost $5 and $6", "x" * 60, "two\nlines"]
    fig = metrics.confusion_figure(np.eye(3, dtype=int), names, title="top-1 $1$ 100%")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["cost $5 and $6", "x" * 37 + "...", "two lines"]
    assert not any(t.get_parse_math() for t in ax.get_xticklabels())
    assert ax.title.get_text() == "top-1 $1$ 100%" and not ax.title.get_parse_math()
    assert plt.get_fignums() == before


def test_confusion_figure_many_classes_shows_every_nth_name_without_counts():
    names = [f"kinetics class {i}" for i in range(400)]
    labels = np.arange(400)
    fig = metrics.confusion_figure(metrics.confusion_matrix(labels, labels, 400), names,
                                   title="400 classes")
    ax = fig.axes[0]
    shown = [t.get_text() for t in ax.get_xticklabels()]
    assert 30 <= len(shown) <= 60
    step = 400 // len(shown) + (400 % len(shown) > 0)
    assert shown == names[::step]
    assert len(ax.texts) == 0
    small = metrics.confusion_figure(np.eye(12, dtype=int), DEMO_NAMES, title="12 classes")
    assert {t.get_fontsize() for t in small.axes[0].get_xticklabels()} == {10.0}
    assert {t.get_fontsize() for t in ax.get_xticklabels()} == {7.0}


def test_confusion_png_decodes_grows_with_k_and_is_capped():
    sizes = {}
    for k in (3, 12, 40, 400):
        names = DEMO_NAMES if k == 12 else [f"class_{i}" for i in range(k)]
        png = metrics.confusion_figure_png(_demo_matrix(num_classes=k, per_class=3), names,
                                           title=f"{k} classes")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        image = metrics.confusion_figure_image(png)
        assert image.dtype == np.uint8 and image.ndim == 4 and image.shape[0] == 1
        assert image.shape[-1] in (3, 4)
        np.testing.assert_array_equal(image[0], tf.io.decode_png(png).numpy())
        sizes[k] = image.shape[1:3]
        assert image[0, ..., :3].std() > 10  # not a blank canvas
    assert sizes[3] == (600, 660)
    assert 700 <= sizes[12][0] <= 1000 and 700 <= sizes[12][1] <= 1100
    assert sizes[3][0] < sizes[12][0] < sizes[40][0] <= sizes[400][0]
    assert sizes[400] == (2000, 2200)  # capped, not 400 * anything


def test_confusion_figure_image_goes_into_a_summary(tmp_path):
    png = metrics.confusion_figure_png(np.eye(3, dtype=int), ["a", "b", "c"], title="t")
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        assert tf.summary.image("confusion_matrix", metrics.confusion_figure_image(png), step=0)
    writer.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))
