"""Video-level evaluation (Sec. 5.2): class scores averaged over every view of a video.

A video's views (15 clips for LGD-3D, 10 frame triples for LGD-2D, times 1 or 3 crops) each
give softmax probabilities (`lgd_tf.models.class_probabilities`); their mean is the video's
score. Outputs in model_dir (`run_folder.EVAL_FILES`, replaced together): the results
(top-1, top-5, per-class accuracy), the confusion matrix as CSV and as a figure (rows: true
class, columns: predicted, class names on both axes), the per-video predictions and scores
(the scores are what `--fuse_with` reads); with `summary_dir`, the scalars eval/top1,
eval/top5, eval/mean_class_accuracy (and the confusion figure) for TensorBoard.
"""

import csv
import io
import json
import os
import time
import weakref

import numpy as np
import tensorflow as tf

from lgd_io import files
from lgd_tf import data
from lgd_tf.models import class_probabilities
from lgd_tf.models.saving import load_model_safely
from lgd_tf.runs import fusion, run_folder
from lgd_tf.training import metrics
from lgd_tf.training.errors import TrainingError, data_error, one_line, warn


def average_view_scores(view_scores):
    """(B, V, K) per-view scores -> (B, K) video scores (mean over views)."""
    view_scores = np.asarray(view_scores, np.float64)
    if view_scores.ndim != 3:
        raise ValueError(f"Expected scores (B, V, K). Received shape: {view_scores.shape}")
    return view_scores.mean(axis=1)


_WARNED = set()


def label_check_names(class_names):
    """The class names the pipelines check label strings against, or None when they are only
    the default "0".."K-1" (no class names file: nothing to check against)."""
    if class_names is None or list(class_names) == [str(i) for i in range(len(class_names))]:
        return None
    return list(class_names)


_PREDICT = weakref.WeakKeyDictionary()  # model -> {input spec: traced forward}


def _view_spec(views):
    """The spec a batch of views is traced with: batch, views and frame size left open (one
    trace serves every batch, the last smaller one and other frame sizes too)."""
    shape = list(views.shape)
    relaxed = [None, None] + shape[2:-3] + [None, None, shape[-1]] if len(shape) >= 5 else (
        [None] * len(shape))
    return tf.TensorSpec(relaxed, views.dtype)


def _predict_fn(model, views):
    """The model's per-view probabilities (B, V, K) for views (B, V, ...), traced once per
    model and input spec: evaluations repeated during training reuse the trace."""
    spec = _view_spec(views)
    cache = _PREDICT.setdefault(model, {})
    key = (tuple(spec.shape.as_list()), spec.dtype)
    if key not in cache:
        model_ref = weakref.ref(model)  # the cache entry must not keep the model alive

        @tf.function(input_signature=[spec])
        def predict(views):
            model = model_ref()
            shape = tf.shape(views)
            flat = tf.reshape(views, tf.concat([[-1], shape[2:]], axis=0))
            probs = class_probabilities(model(flat, training=False))
            return tf.reshape(probs, [shape[0], shape[1], -1])

        cache[key] = predict
    return cache[key]


def load_stage_model(model_dir, stage=None):
    """model_dir/stage2.keras, else stage1.keras (or the `stage` asked for)."""
    candidates = [stage] if stage else list(reversed(run_folder.STAGES))
    run = run_folder.RunFolder(model_dir)
    for name in candidates:
        path = run.stage_model(name)
        if tf.io.gfile.exists(path):
            try:
                return load_model_safely(path), name  # safe mode pinned
            except (ValueError, TypeError, KeyError, OSError) as error:  # foreign or corrupt
                raise TrainingError(f"cannot load {run.what(path)}: {one_line(error)}") from None
    raise TrainingError(f"no trained model in {model_dir}: expected "
                        f"{' or '.join(run_folder.stage_file(c) for c in candidates)}")


def evaluate_video_level(model_dir, sources, model=None, stage=None, *, batch_size=4,
                         data_fn=None, write_files=True, fuse_with=None, fusion_weight=0.5,
                         summary_dir=None, step=None, output_dir=None, output_flag=None):
    """Video-level top-1 / top-5, per-class accuracy and confusion matrix of a saved stage.

    Args:
        model_dir: the training run (stage*.keras); results written there (or in
            `output_dir`).
        sources: the run's `DataSources` (eval pattern, num_classes, class names).
        model: an in-memory model (default: loaded with `load_stage_model`).
        stage: "stage1" / "stage2" name of `model` or of the file to load.
        batch_size: videos per batch: their views go through the model together (4 videos
            x 15 clips: 60 views per forward; the model's clips/s needs batches of several
            videos, not one). Whole-frame views need one frame size per batch: the default
            pipeline groups videos by frame size.
        data_fn: `fn(pattern, batch_size, num_classes=..., [class_names=...])` -> (views,
            labels, media_ids), default `lgd_tf.data.eval_dataset`; class_names (label
            strings checked against them) unless they are the default "0".."K-1".
        write_files: write the results, the confusion matrix files, the per-video
            predictions and the per-video scores that another run's `fuse_with` reads.
        fuse_with: another evaluated model_dir (e.g. the flow stream): its per-video scores
            are late-fused with this model's (Sec. 5.5, `lgd_tf.runs.fusion`).
        fusion_weight: weight of the flow stream in the fusion.
        summary_dir, step: also write the eval scalars (and, with `write_files`, the
            confusion figure) at `step` to TensorBoard event files in `summary_dir`.
        output_dir: where the result files go (default `model_dir`); all of them are
            replaced together once every one is complete (`lgd_io.files.Outputs`).
        output_flag: how a write error names the folder ("--output_dir"); default the path.

    Returns:
        The results dict (also written to `run_folder.EVAL_RESULTS`).
    """
    if not sources.eval_pattern:
        raise TrainingError("no eval data: set data_sources.eval_pattern (e.g. "
                            "--gin_bindings=\"EVAL_PATTERN='/data/val-*'\")")
    if model is None:
        model, stage = load_stage_model(model_dir, stage)
    dataset = _eval_data(model, sources, batch_size, data_fn)
    started = time.perf_counter()
    scores, labels, media_ids, num_views = _score_videos(model, dataset, sources.eval_pattern)
    _check_media_ids(media_ids, sources.eval_pattern, fuse_with)
    modality = fusion.modality_of(model)
    video_scores = scores
    if fuse_with:
        try:
            scores = fusion.fuse_with_model_dir(media_ids, scores, sources.class_names, modality,
                                                fuse_with, fusion_weight)
        except (ValueError, KeyError) as error:
            raise TrainingError(f"--fuse_with: {error}") from None
    predictions = np.argmax(scores, axis=-1)
    matrix = metrics.confusion_matrix(labels, predictions, sources.num_classes)
    results = _results(stage, scores, labels, matrix, num_views, sources)
    results["seconds"] = round(time.perf_counter() - started, 2)
    if step is not None:
        results["step"] = int(step)
    if fuse_with:
        results.update(fused_with=fuse_with, fusion_weight=fusion_weight)
    figure = None
    if write_files:
        figure = _confusion_figure(results, matrix, sources.class_names)
        _write_outputs(output_dir or model_dir, output_flag, {
            run_folder.EVAL_RESULTS: json.dumps(results, indent=2, sort_keys=True) + "\n",
            run_folder.CONFUSION_CSV: metrics.confusion_csv(matrix, sources.class_names),
            run_folder.CONFUSION_PNG: figure,
            run_folder.EVAL_PREDICTIONS: _predictions_csv(media_ids, labels, predictions,
                                                          scores),
            run_folder.EVAL_SCORES: fusion.video_scores_npz(media_ids, video_scores,
                                                            sources.class_names, modality),
        })
    if summary_dir is not None:
        write_summaries(summary_dir, step or 0, results, figure)
    return results


def _eval_data(model, sources, batch_size, data_fn):
    """The eval dataset of `sources` (default `lgd_tf.data.eval_dataset`), after checking that
    the model has the data's number of classes."""
    outputs_k = model.output["combined" if "combined" in model.output else "global"].shape[-1]
    if outputs_k != sources.num_classes:
        raise TrainingError(f"the model has {outputs_k} classes but the data has "
                            f"{sources.num_classes} (set NUM_CLASSES)")
    data_fn = data_fn or data.eval_dataset
    names = label_check_names(sources.class_names)
    extra = {} if names is None else {"class_names": names}
    try:
        return data_fn(sources.eval_pattern, batch_size, num_classes=sources.num_classes,
                       **extra)
    except ValueError as error:
        raise TrainingError(f"eval data: {error}") from None


def _score_videos(model, dataset, pattern):
    """(video scores (N, K), labels (N,), media ids, views per video) of every video in
    `dataset`; a bad record or views that do not fit the model raise one-line errors."""
    scores, labels, media_ids, num_views = [], [], [], 0
    try:
        for views, batch_labels, batch_ids in dataset:
            view_scores = _predict_fn(model, views)(views).numpy()
            num_views = view_scores.shape[1]
            scores.append(average_view_scores(view_scores))
            labels.append(batch_labels.numpy())
            media_ids.extend(m.decode() for m in batch_ids.numpy())
    except tf.errors.InvalidArgumentError as error:
        line = data_error(error)
        if line is None:
            raise
        raise TrainingError(line) from None
    except tf.errors.DataLossError as error:
        raise TrainingError(f"eval data {pattern}: {one_line(error)}") from None
    except ValueError as error:  # the views the config samples do not fit the model
        raise TrainingError(f"the eval clips of {pattern} do not fit the model "
                            f"(input {tuple(model.input.shape)}): {one_line(error)}; give the "
                            "evaluation the model's num_frames and modality") from None
    if not scores:
        raise TrainingError(f"the eval data set is empty ({pattern})")
    return np.concatenate(scores), np.concatenate(labels), media_ids, num_views


def _check_media_ids(media_ids, pattern, fuse_with):
    """Repeated media ids are refused; records without one are only warned about (once per
    pattern: evaluations during training repeat)."""
    try:
        missing = fusion.count_missing_media_ids(media_ids, pattern)
    except ValueError as error:
        raise TrainingError(str(error)) from None
    if missing and not fuse_with and pattern not in _WARNED:
        _WARNED.add(pattern)
        warn(f"{missing} of {len(media_ids)} eval records have no clip/media_id: "
             f"{run_folder.EVAL_PREDICTIONS} cannot name them and --fuse_with cannot match "
             "them")


def _results(stage, scores, labels, matrix, num_views, sources):
    """The results dict: top-1, top-5, mean and per-class accuracy, videos per class."""
    accuracy = metrics.per_class_accuracy(matrix)
    return {
        "stage": stage,
        "num_videos": int(len(labels)),
        "views_per_video": int(num_views),
        "top1": float(metrics.top_k_correct(scores, labels, 1).mean()),
        "top5": float(metrics.top_k_correct(scores, labels, 5).mean()),
        "mean_class_accuracy": float(np.nanmean(accuracy)),
        "per_class_accuracy": {name: (None if np.isnan(a) else float(a))
                               for name, a in zip(sources.class_names, accuracy, strict=True)},
        "videos_per_class": {name: int(n) for name, n in
                             zip(sources.class_names, matrix.sum(axis=1), strict=True)},
        "eval_pattern": sources.eval_pattern,
    }


def _confusion_figure(results, matrix, class_names):
    """The confusion matrix as a PNG, titled with the stage and the top-1."""
    title = (f"{results['stage'] or 'model'}: video-level top-1 {100 * results['top1']:.1f}% "
             f"({results['num_videos']} videos)")
    return metrics.confusion_figure_png(matrix, class_names, title=title)


def _write_outputs(folder, flag, contents):
    """Writes {file name: text or bytes} into `folder`, replaced together (a failure before
    the last one is complete leaves every old file as it was)."""
    with files.Outputs() as outputs:
        for name, content in contents.items():
            final = os.path.join(folder, name)
            data = content.encode() if isinstance(content, str) else content

            def write(path, data=data):
                with tf.io.gfile.GFile(path, "wb") as f:
                    f.write(data)

            outputs.write(final, write, what=f"{final} ({flag})" if flag else None)


def _predictions_csv(media_ids, labels, predictions, scores):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["media_id", "label", "predicted", "score"])
    for m, y, p, s in zip(media_ids, labels, predictions, scores, strict=True):
        writer.writerow([m, int(y), int(p), f"{s.max():.6f}"])
    return out.getvalue()


SCALARS = ("top1", "top5", "mean_class_accuracy")


def write_summaries(summary_dir, step, results, figure_png=None):
    """eval/top1, eval/top5, eval/mean_class_accuracy (and the confusion figure) at `step`."""
    writer = tf.summary.create_file_writer(summary_dir)
    with writer.as_default(step=int(step)):
        for key in SCALARS:
            tf.summary.scalar(f"eval/{key}", results[key])
        if figure_png is not None:
            tf.summary.image("eval/confusion_matrix",
                             metrics.confusion_figure_image(figure_png))
    writer.close()


def format_results(results, class_names=None, max_classes=20):
    """A short per-class table and the headline line."""
    lines = [f"{'class':<24} {'videos':>6} {'accuracy':>8}"]
    for i, (name, acc) in enumerate(results["per_class_accuracy"].items()):
        if i == max_classes:
            lines.append(f"... ({len(results['per_class_accuracy']) - max_classes} more in "
                         f"{run_folder.EVAL_RESULTS})")
            break
        shown = "-" if acc is None else f"{100 * acc:.1f}%"
        lines.append(f"{name:<24} {results['videos_per_class'][name]:>6} {shown:>8}")
    lines.append(f"video-level top-1 {100 * results['top1']:.1f}%  top-5 "
                 f"{100 * results['top5']:.1f}%  ({results['num_videos']} videos x "
                 f"{results['views_per_video']} views, {results['stage']})")
    return "\n".join(lines)
