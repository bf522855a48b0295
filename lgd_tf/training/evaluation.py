"""Video-level evaluation (Sec. 5.2): class scores averaged over every view of a video.

A video's views (15 clips for LGD-3D, 10 frame triples for LGD-2D, times 1 or 3 crops) each
give softmax probabilities (`lgd_tf.models.class_probabilities`); their mean is the video's
score. Outputs in model_dir: eval_results.json (top-1, top-5, per-class accuracy),
confusion_matrix.csv and confusion_matrix.png (rows: true class, columns: predicted).
"""

import io
import os
import time

import keras
import numpy as np
import tensorflow as tf
from keras.src.saving.serialization_lib import SafeModeScope

import gin
from lgd_tf.models import class_probabilities
from lgd_tf.serving import fusion
from lgd_tf.training import files
from lgd_tf.training.errors import TrainingError


def average_view_scores(view_scores):
    """(B, V, K) per-view scores -> (B, K) video scores (mean over views)."""
    view_scores = np.asarray(view_scores, np.float64)
    if view_scores.ndim != 3:
        raise ValueError(f"Expected scores (B, V, K). Received shape: {view_scores.shape}")
    return view_scores.mean(axis=1)


def top_k_correct(scores, labels, k):
    """(B,) bool: the label is among the k highest scores (ties broken by lower index)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    k = min(k, scores.shape[-1])
    order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    return (order == labels[:, None]).any(axis=-1)


def confusion_matrix(labels, predictions, num_classes):
    """(K, K) int counts, rows true class, columns predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def per_class_accuracy(matrix):
    """Diagonal over row sums (NaN for a class with no video)."""
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)


def confusion_csv(matrix, class_names):
    out = io.StringIO()
    out.write("true\\predicted," + ",".join(_csv_field(n) for n in class_names) + "\n")
    for name, row in zip(class_names, matrix, strict=True):
        out.write(_csv_field(name) + "," + ",".join(str(int(v)) for v in row) + "\n")
    return out.getvalue()


def _csv_field(text):
    text = str(text)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def confusion_png(matrix, cell=None):
    """PNG bytes of the row-normalised matrix: white (0) to dark blue (1), grey grid lines."""
    k = matrix.shape[0]
    cell = cell or max(4, min(32, 512 // max(k, 1)))
    rows = matrix.sum(axis=1, keepdims=True)
    norm = matrix / np.maximum(rows, 1)
    white, blue = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])
    colors = white + norm[..., None] * (blue - white)
    image = np.repeat(np.repeat(colors, cell, axis=0), cell, axis=1)
    if cell >= 6:
        image[::cell, :] = 160.0
        image[:, ::cell] = 160.0
    return tf.io.encode_png(np.round(image).astype(np.uint8)).numpy()


def _predict_fn(model):
    @tf.function(reduce_retracing=True)
    def predict(views):
        shape = tf.shape(views)
        flat = tf.reshape(views, tf.concat([[-1], shape[2:]], axis=0))
        probs = class_probabilities(model(flat, training=False))
        return tf.reshape(probs, [shape[0], shape[1], -1])

    return predict


def load_stage_model(model_dir, stage=None):
    """model_dir/stage2.keras, else stage1.keras (or the `stage` asked for)."""
    candidates = [stage] if stage else ["stage2", "stage1"]
    for name in candidates:
        path = os.path.join(model_dir, f"{name}.keras")
        if tf.io.gfile.exists(path):
            with SafeModeScope(True):  # even if the process enabled unsafe deserialization
                return keras.saving.load_model(path, compile=False), name
    raise TrainingError(f"no trained model in {model_dir}: expected "
                        f"{' or '.join(c + '.keras' for c in candidates)}")


@gin.configurable(module="lgd_tf.training", denylist=["model_dir", "model", "stage"])
def evaluate_video_level(model_dir, model=None, stage=None, *, batch_size=1, data_fn=None,
                         write_files=True, fuse_with=None, fusion_weight=0.5):
    """Video-level top-1 / top-5, per-class accuracy and confusion matrix of a saved stage.

    Args:
        model_dir: the training run (class_names.txt, stage*.keras); results written there.
        model: an in-memory model (default: loaded with `load_stage_model`).
        stage: "stage1" / "stage2" name of `model` or of the file to load.
        batch_size: videos per batch (whole-frame views need one frame size per batch).
        data_fn: `fn(pattern, batch_size, num_classes=...)` -> (views, labels, media_ids),
            default `lgd_tf.data.eval_dataset` with its gin bindings.
        write_files: write eval_results.json, the confusion matrix files and the per-video
            scores (eval_scores.npz) that another run's `fuse_with` reads.
        fuse_with: another evaluated model_dir (e.g. the flow stream): its per-video scores
            are late-fused with this model's (Sec. 5.5, `lgd_tf.serving.fusion`).
        fusion_weight: weight of the flow stream in the fusion.

    Returns:
        The results dict (also in eval_results.json).
    """
    from lgd_tf.training import gin_config, two_stage

    sources = gin_config.call_configurable(two_stage.data_sources, need_train=False)
    if model is None:
        model, stage = load_stage_model(model_dir, stage)
    outputs_k = model.output["combined" if "combined" in model.output else "global"].shape[-1]
    if outputs_k != sources.num_classes:
        raise TrainingError(f"the model has {outputs_k} classes but the data has "
                            f"{sources.num_classes} (set NUM_CLASSES)")
    data_fn = data_fn or gin_config.eval_dataset
    try:
        dataset = data_fn(sources.eval_pattern, batch_size, num_classes=sources.num_classes)
    except ValueError as error:
        raise TrainingError(f"eval data: {error}") from None
    predict = _predict_fn(model)
    started = time.perf_counter()
    scores, labels, media_ids, num_views = [], [], [], 0
    for views, batch_labels, batch_ids in dataset:
        view_scores = predict(views).numpy()
        num_views = view_scores.shape[1]
        scores.append(average_view_scores(view_scores))
        labels.append(batch_labels.numpy())
        media_ids.extend(m.decode() for m in batch_ids.numpy())
    if not scores:
        raise TrainingError(f"the eval data set is empty ({sources.eval_pattern})")
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    modality = fusion.modality_of(model)
    if write_files:
        fusion.write_video_scores(model_dir, media_ids, scores, sources.class_names, modality)
    if fuse_with:
        try:
            scores = fusion.fuse_with_model_dir(media_ids, scores, sources.class_names, modality,
                                                fuse_with, fusion_weight)
        except (ValueError, KeyError) as error:
            raise TrainingError(f"--fuse_with: {error}") from None
    predictions = np.argmax(scores, axis=-1)
    matrix = confusion_matrix(labels, predictions, sources.num_classes)
    accuracy = per_class_accuracy(matrix)
    results = {
        "stage": stage,
        "num_videos": int(len(labels)),
        "views_per_video": int(num_views),
        "top1": float(top_k_correct(scores, labels, 1).mean()),
        "top5": float(top_k_correct(scores, labels, 5).mean()),
        "mean_class_accuracy": float(np.nanmean(accuracy)),
        "per_class_accuracy": {name: (None if np.isnan(a) else float(a))
                               for name, a in zip(sources.class_names, accuracy, strict=True)},
        "videos_per_class": {name: int(n) for name, n in
                             zip(sources.class_names, matrix.sum(axis=1), strict=True)},
        "eval_pattern": sources.eval_pattern,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if fuse_with:
        results.update(fused_with=fuse_with, fusion_weight=fusion_weight)
    if write_files:
        files.write_json(os.path.join(model_dir, "eval_results.json"), results)
        files.write_text(os.path.join(model_dir, "confusion_matrix.csv"),
                         confusion_csv(matrix, sources.class_names))
        files.write_bytes(os.path.join(model_dir, "confusion_matrix.png"),
                          confusion_png(matrix))
        files.write_text(os.path.join(model_dir, "eval_predictions.csv"), "media_id,label,"
                         "predicted,score\n" + "".join(
            f"{_csv_field(m)},{int(y)},{int(p)},{s.max():.6f}\n"
            for m, y, p, s in zip(media_ids, labels, predictions, scores, strict=True)))
    return results


def format_results(results, class_names=None, max_classes=20):
    """A short per-class table and the headline line."""
    lines = [f"{'class':<24} {'videos':>6} {'accuracy':>8}"]
    for i, (name, acc) in enumerate(results["per_class_accuracy"].items()):
        if i == max_classes:
            lines.append(f"... ({len(results['per_class_accuracy']) - max_classes} more in "
                         "eval_results.json)")
            break
        shown = "-" if acc is None else f"{100 * acc:.1f}%"
        lines.append(f"{name:<24} {results['videos_per_class'][name]:>6} {shown:>8}")
    lines.append(f"video-level top-1 {100 * results['top1']:.1f}%  top-5 "
                 f"{100 * results['top5']:.1f}%  ({results['num_videos']} videos x "
                 f"{results['views_per_video']} views, {results['stage']})")
    return "\n".join(lines)
