"""Metrics of the video-level evaluation (Sec. 5.2): top-k, confusion matrix, per-class accuracy.

Sec. 5.2 scores a video by averaging the class scores of all its views (clips / frame triples,
times crops); these functions take those (B, K) video scores, or the video-level predictions
made from them, and summarise them: top-k correctness, the (K, K) confusion matrix (rows: true
class, columns: predicted class, built with scikit-learn), per-class accuracy, the matrix as a
CSV table and as a matplotlib figure (PNG bytes, or an image batch for `tf.summary.image`).

Nothing here reads gin: every setting is an explicit argument. matplotlib is imported only by
the figure functions.
"""

import csv
import io
import math

import numpy as np
import sklearn.metrics
import tensorflow as tf

# Figure layout: DPI, figure side in inches (grows with K between the bounds), counts in the
# cells up to this many classes, at most about this many tick labels per axis, and class names
# longer than this are shortened (with "...") on the axes only.
FIGURE_DPI = 100
MIN_FIGURE_INCHES = 6.0
MAX_FIGURE_INCHES = 20.0
MAX_CLASSES_WITH_COUNTS = 30
MAX_TICK_LABELS = 60
MAX_LABEL_CHARS = 40


def _labels_array(values, name, num_classes):
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"Expected `{name}` of shape (B,). Received shape: {values.shape}")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        if not np.array_equal(values, np.round(values)):
            raise ValueError(f"Expected integer class indices in `{name}`. Received: {values[:5]}")
        values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        bad = values[(values < 0) | (values >= num_classes)]
        raise ValueError(f"Expected class indices in [0, {num_classes}) in `{name}`. "
                         f"Received: {bad[:5].tolist()}")
    return values.astype(np.int64)


def confusion_matrix(labels, predictions, num_classes):
    """(K, K) int64 counts of the video-level predictions (Sec. 5.2).

    Args:
        labels: (B,) true class index of each video.
        predictions: (B,) predicted class index of each video (e.g. the argmax of its
            view-averaged scores).
        num_classes: K; every index must lie in [0, K).

    Returns:
        `matrix[i, j]` = number of videos of true class i predicted as class j (rows: true
        class, columns: predicted class), from `sklearn.metrics.confusion_matrix` with
        `labels=range(K)`, so classes without any video still get their (zero) row and column.
    """
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"Expected `num_classes` >= 1. Received: {num_classes}")
    labels = _labels_array(labels, "labels", num_classes)
    predictions = _labels_array(predictions, "predictions", num_classes)
    if labels.shape != predictions.shape:
        raise ValueError(f"`labels` and `predictions` differ in length. Received: "
                         f"{labels.shape[0]} and {predictions.shape[0]}")
    if labels.size == 0:  # scikit-learn rejects empty inputs.
        return np.zeros((num_classes, num_classes), np.int64)
    matrix = sklearn.metrics.confusion_matrix(labels, predictions, labels=range(num_classes))
    return matrix.astype(np.int64)


def _square_matrix(matrix):
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"Expected a (K, K) confusion matrix. Received shape: {matrix.shape}")
    return matrix


def per_class_accuracy(matrix):
    """(K,) float64 per-class accuracy of a confusion matrix (Sec. 5.2 video-level evaluation).

    The accuracy of class i is `matrix[i, i] / matrix[i].sum()` (the recall of class i: the
    fraction of its videos predicted as i); NaN for a class with no video (an all-zero row).
    """
    matrix = _square_matrix(matrix)
    totals = matrix.sum(axis=1).astype(np.float64)
    correct = np.diag(matrix).astype(np.float64)
    accuracy = np.full(matrix.shape[0], np.nan)
    np.divide(correct, totals, out=accuracy, where=totals > 0)
    return accuracy


def top_k_correct(scores, labels, k):
    """(B,) bool: the true label is among the k highest scores of the video (Sec. 5.2 top-k).

    Args:
        scores: (B, K) video-level scores (the mean of the views' class probabilities).
        labels: (B,) true class indices.
        k: how many of the highest scores count; more than K counts all K.

    Ties are broken by the lower class index (a stable sort of the negated scores), so with
    equal scores class 0 ranks before class 1.
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"Expected scores (B, K). Received shape: {scores.shape}")
    if labels.shape != scores.shape[:1]:
        raise ValueError(f"Expected labels of shape ({scores.shape[0]},). "
                         f"Received shape: {labels.shape}")
    if int(k) < 1:
        raise ValueError(f"Expected `k` >= 1. Received: {k}")
    k = min(int(k), scores.shape[-1])
    order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    return (order == labels[:, None]).any(axis=-1)


def _check_names(matrix, class_names):
    class_names = [str(name) for name in class_names]
    if len(class_names) != matrix.shape[0]:
        raise ValueError(f"Expected {matrix.shape[0]} class names for a {matrix.shape} matrix. "
                         f"Received: {len(class_names)}")
    return class_names


def confusion_csv(matrix, class_names):
    """The confusion matrix as CSV text, written with Python's `csv` module.

    Header `true\\predicted,<class names...>`, then one row per true class: its name and its
    counts per predicted class. Names containing commas, quotes or line breaks are quoted as
    RFC 4180 says (the `csv` module's default dialect, lines ending in "\\r\\n"), so
    `csv.reader` gives the names and counts back unchanged.
    """
    matrix = _square_matrix(matrix)
    class_names = _check_names(matrix, class_names)
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["true\\predicted", *class_names])
    for name, row in zip(class_names, matrix, strict=True):
        writer.writerow([name, *(int(v) for v in row)])
    return out.getvalue()


def _axis_label(name):
    name = " ".join(name.split())  # Line breaks and tabs would make ragged tick labels.
    if len(name) > MAX_LABEL_CHARS:
        name = name[:MAX_LABEL_CHARS - 3] + "..."
    return name


def _figure_layout(num_classes):
    """(side inches, tick font size, count font size, tick step) for K classes."""
    side = min(MAX_FIGURE_INCHES, max(MIN_FIGURE_INCHES, 3.0 + 0.45 * num_classes))
    step = max(1, math.ceil(num_classes / MAX_TICK_LABELS))
    shown = math.ceil(num_classes / step)
    # Tick labels: 10 pt up to 20 classes, 7 pt from 50 on, and at most ~80% of a label's slot
    # (about 70% of the side holds the cells).
    slot_points = 0.7 * side * 72.0 / shown
    by_count = float(np.clip(10.0 - 0.1 * (num_classes - 20), 7.0, 10.0))
    tick_size = max(5.0, min(by_count, 0.8 * slot_points))
    cell_points = 0.7 * side * 72.0 / num_classes
    count_size = float(np.clip(0.35 * cell_points, 5.0, 10.0))
    return side, tick_size, count_size, step


def confusion_figure(matrix, class_names, *, title):
    """A matplotlib `Figure` of the confusion matrix (Sec. 5.2 video-level evaluation).

    Cell colours are row-normalised (the fraction of the true class's videos given each
    prediction, 0 to 1, with a colorbar; a class without videos is grey); the counts are
    written in the cells when K <= 30. Class names label both axes (predicted on x, rotated;
    true on y); beyond 60 classes only every n-th name is shown. The figure height grows with K
    from 6 to 20 inches (width 1.1 times that, for the colorbar; at `FIGURE_DPI` = 100 at most
    2200 x 2000 pixels) and the tick labels shrink with it. The figure is not registered with
    pyplot (no global state changes).

    Args:
        matrix: (K, K) counts, rows true class, columns predicted class.
        class_names: K names, in class-index order.
        title: the figure title, e.g. "stage2: video-level top-1 91.7% (192 videos)".
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = _square_matrix(matrix)
    class_names = _check_names(matrix, class_names)
    num_classes = matrix.shape[0]
    if num_classes < 1:
        raise ValueError("Expected a confusion matrix of at least one class. Received: (0, 0)")
    side, tick_size, count_size, step = _figure_layout(num_classes)

    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    fractions = np.full(matrix.shape, np.nan)
    np.divide(matrix, totals, out=fractions, where=totals > 0)
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="0.85")

    fig = Figure(figsize=(side * 1.1, side), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(fractions), cmap=cmap, vmin=0.0, vmax=1.0,
                      interpolation="nearest", aspect="equal")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    colorbar.set_label("fraction of the true class's videos", fontsize=max(tick_size, 8.0))
    colorbar.ax.tick_params(labelsize=max(tick_size, 7.0))

    ticks = np.arange(0, num_classes, step)
    labels = [_axis_label(class_names[i]) for i in ticks]
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=90, fontsize=tick_size, parse_math=False)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=tick_size, parse_math=False)
    ax.set_xlabel("predicted", fontsize=11)
    ax.set_ylabel("true", fontsize=11)
    ax.set_title(str(title), fontsize=12, parse_math=False)

    if num_classes <= MAX_CLASSES_WITH_COUNTS:
        # Thin white lines between the cells.
        ax.set_xticks(np.arange(-0.5, num_classes), minor=True)
        ax.set_yticks(np.arange(-0.5, num_classes), minor=True)
        ax.grid(which="minor", color="white", linewidth=1.0)
        ax.tick_params(which="minor", length=0)
        for i in range(num_classes):
            for j in range(num_classes):
                count = int(matrix[i, j])
                dark = not np.isnan(fractions[i, j]) and fractions[i, j] > 0.5
                color = "white" if dark else ("black" if count else "0.6")
                ax.text(j, i, str(count), ha="center", va="center", fontsize=count_size,
                        color=color)
    return fig


def confusion_figure_png(matrix, class_names, *, title):
    """PNG bytes (RGB) of `confusion_figure(matrix, class_names, title=title)`.

    Rendered with matplotlib's Agg canvas at `FIGURE_DPI` (100): 924 x 840 pixels (W x H) for
    the 12 demo classes, growing with K up to 2200 x 2000 (e.g. for 400 Kinetics classes).
    """
    fig = confusion_figure(matrix, class_names, title=title)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return tf.io.encode_png(np.ascontiguousarray(rgba[..., :3])).numpy()


def confusion_figure_image(png_bytes):
    """(1, H, W, C) uint8 image batch decoded from PNG bytes (C = 3 or 4), for
    `tf.summary.image` (e.g. the bytes of `confusion_figure_png`)."""
    image = tf.io.decode_png(png_bytes, channels=0, dtype=tf.uint8)
    return image.numpy()[None]
