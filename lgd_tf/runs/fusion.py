"""Two-stream late fusion of class scores (Sec. 5.5).

The paper's "Two-stream" rows (Tables 4-6) fuse the video-level predictions of an RGB network and
of a network on TV-L1 optical flow. The fusion is a weighted average of the two streams' class
probabilities:

    fused = (1 - w) * rgb + w * flow,    0 <= w <= 1,

with w = 0.5 an equal-weight average. Everything here is pure NumPy so that `evaluate`
(scores keyed by media id) and `predict` (one video) share it.

`evaluate --fuse_with=OTHER_MODEL_DIR`: each stream is evaluated on its own data (RGB and flow
TFRecords of the same videos, each with its own gin config); evaluate writes every video's
scores to `model_dir/eval_scores.npz` (`write_video_scores`), and the fused evaluation reads the
other stream's file (`fuse_with_model_dir`) and matches the videos by `clip/media_id`.
"""

import collections
import io
import os

import numpy as np

MODALITIES = ("rgb", "flow")

DEFAULT_FLOW_WEIGHT = 0.5


def _check_weight(flow_weight):
    weight = float(flow_weight)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"`flow_weight` must be in [0, 1]. Received: flow_weight={flow_weight}")
    return weight


def fuse_scores(rgb_scores, flow_scores, flow_weight=DEFAULT_FLOW_WEIGHT):
    """Late fusion `(1 - w) * rgb + w * flow` of two streams' scores (Sec. 5.5).

    Args:
        rgb_scores: array `(..., K)` of class scores (probabilities) of the RGB stream.
        flow_scores: array of the same shape from the flow stream (or any second model).
        flow_weight: w in [0, 1], the weight of `flow_scores`.

    Returns:
        float32 array of the same shape.
    """
    weight = _check_weight(flow_weight)
    rgb = np.asarray(rgb_scores, dtype=np.float32)
    flow = np.asarray(flow_scores, dtype=np.float32)
    if rgb.shape != flow.shape:
        raise ValueError(
            "The two streams' scores must have the same shape (same classes, same videos). "
            f"Received: rgb_scores.shape={rgb.shape}, flow_scores.shape={flow.shape}"
        )
    return ((1.0 - weight) * rgb + weight * flow).astype(np.float32)


def check_media_ids(media_ids, where):
    """Raises ValueError (one line naming them) if a media id is empty or repeated: fusion
    matches the two streams' videos by `clip/media_id`, so each video needs its own."""
    ids = _as_strings(media_ids)
    missing = ids.count("")
    if missing:
        raise ValueError(
            f"{missing} of {len(ids)} videos in {where} have no clip/media_id, so the two "
            "streams' videos cannot be matched; rebuild the records with media ids (python -m "
            "lgd_tf.build_tfrecords writes them)")
    count_missing_media_ids(ids, where)
    return ids


def count_missing_media_ids(media_ids, where):
    """How many media ids are empty (""); raises ValueError (one line naming them) if a
    non-empty one occurs more than once in `where`: per-video scores are matched by
    `clip/media_id` (evaluation's predictions, fusion), so each video needs its own."""
    counts = collections.Counter(_as_strings(media_ids))
    missing = counts.pop("", 0)
    repeated = describe_repeated(counts)
    if repeated:
        raise ValueError(
            f"duplicate media ids in {where}: {repeated}; scores are matched by "
            "clip/media_id, so each video needs its own: rebuild with python -m "
            "lgd_tf.build_tfrecords (unique media ids) or drop the repeated records")
    return missing


def _as_strings(media_ids):
    return [m.decode() if isinstance(m, bytes) else str(m) for m in media_ids]


def describe_repeated(counts):
    """"'a' (2 records), 'b' (3 records)" for the ids a Counter holds more than once (at most
    5 named), or "" when none is repeated."""
    repeated = [(m, n) for m, n in counts.items() if n > 1]
    if not repeated:
        return ""
    shown = ", ".join(f"{m!r} ({n} records)" for m, n in repeated[:5])
    return shown + (f" and {len(repeated) - 5} more" if len(repeated) > 5 else "")


def fuse_scores_by_media_id(rgb_scores, flow_scores, flow_weight=DEFAULT_FLOW_WEIGHT):
    """Fuses two `{media_id: scores (K,)}` mappings video by video (Sec. 5.5).

    This is what `evaluate --fuse_with=OTHER_MODEL_DIR` needs: each model is evaluated on its own
    data (RGB and flow TFRecords of the same videos), the video-level scores are matched by
    `clip/media_id` and fused. Both mappings must hold exactly the same media ids.

    Returns:
        dict `{media_id: fused scores (K,)}` in the key order of `rgb_scores`.
    """
    weight = _check_weight(flow_weight)
    missing_in_flow = sorted(set(rgb_scores) - set(flow_scores))
    missing_in_rgb = sorted(set(flow_scores) - set(rgb_scores))
    if missing_in_flow or missing_in_rgb:
        raise ValueError(
            "Both streams must be evaluated on the same videos. Received: "
            f"{len(missing_in_flow)} media ids only in the first stream "
            f"(e.g. {missing_in_flow[:3]}), {len(missing_in_rgb)} only in the second "
            f"(e.g. {missing_in_rgb[:3]})"
        )
    return {
        media_id: fuse_scores(scores, flow_scores[media_id], weight)
        for media_id, scores in rgb_scores.items()
    }


def fuse_two_models(scores, fuse_with_scores, *, modality="rgb", fuse_with_modality="flow",
                    fusion_weight=DEFAULT_FLOW_WEIGHT):
    """Late fusion of a model and a `--fuse_with` model, as `evaluate` and `predict` do it.

    `fusion_weight` is the weight of the flow stream, whichever of the two models it is; if
    both have the same modality it is the weight of the `fuse_with` model.

    Args:
        scores, fuse_with_scores: arrays `(..., K)`, or `{media_id: (K,)}` mappings.
        modality, fuse_with_modality: "rgb" or "flow" (input channels 3 or 2).
        fusion_weight: w in `(1 - w) * rgb + w * flow`.
    """
    for name, value in (("modality", modality), ("fuse_with_modality", fuse_with_modality)):
        if value not in ("rgb", "flow"):
            raise ValueError(f"`{name}` must be 'rgb' or 'flow'. Received: {value!r}")
    if modality == "flow" and fuse_with_modality == "rgb":
        rgb, flow = fuse_with_scores, scores
    else:
        rgb, flow = scores, fuse_with_scores
    if isinstance(rgb, dict):
        return fuse_scores_by_media_id(rgb, flow, fusion_weight)
    return fuse_scores(rgb, flow, fusion_weight)


def modality_of(model):
    """"flow" for a model taking 2-channel input (quantised x, y flow), else "rgb"."""
    return "flow" if model.inputs[0].shape[-1] == 2 else "rgb"


def video_scores_npz(media_ids, scores, class_names, modality):
    """The bytes of `eval_scores.npz`: every video's scores (N, K) with its media id, the
    class names and the modality (read back by `read_video_scores`)."""
    scores = np.asarray(scores, np.float32)
    media_ids = [m.decode() if isinstance(m, bytes) else str(m) for m in media_ids]
    if scores.ndim != 2 or scores.shape != (len(media_ids), len(class_names)):
        raise ValueError(
            "Expected scores (N videos, K classes) with N media ids and K class names. "
            f"Received: scores {scores.shape}, {len(media_ids)} ids, {len(class_names)} names")
    if modality not in MODALITIES:
        raise ValueError(f"`modality` must be one of {MODALITIES}. Received: {modality!r}")
    out = io.BytesIO()
    np.savez(out, media_ids=np.array(media_ids, dtype=str), scores=scores,
             class_names=np.array([str(c) for c in class_names], dtype=str),
             modality=np.array(modality))
    return out.getvalue()


def write_video_scores(model_dir, media_ids, scores, class_names, modality):
    """Writes `model_dir/eval_scores.npz` (`video_scores_npz`), whole or not at all."""
    from lgd_io import files
    from lgd_tf.runs import run_folder

    content = video_scores_npz(media_ids, scores, class_names, modality)
    path = run_folder.eval_scores_path(model_dir)
    files.write_bytes(path, content)
    return path


def read_video_scores(model_dir):
    """Reads `model_dir/eval_scores.npz` -> (`{media_id: scores (K,)}`, class names, modality)."""
    from lgd_tf.runs import run_folder

    path = run_folder.eval_scores_path(model_dir)
    if not os.path.isfile(path):
        raise ValueError(
            f"No per-video scores in {model_dir}: run `python -m lgd_tf.evaluate` on that "
            f"model first (it writes {os.path.basename(path)}). Received: {model_dir}")
    with np.load(path, allow_pickle=False) as data:
        ids = check_media_ids([str(m) for m in data["media_ids"]], path)
        scores = dict(zip(ids, data["scores"], strict=True))
        return scores, [str(c) for c in data["class_names"]], str(data["modality"])


def fuse_with_model_dir(media_ids, scores, class_names, modality, other_model_dir,
                        fusion_weight=DEFAULT_FLOW_WEIGHT):
    """`evaluate --fuse_with`: fuses this model's video scores with another model_dir's.

    Args:
        media_ids: N media ids of this evaluation, in order.
        scores: (N, K) video-level scores of this model.
        class_names: K names (must equal the other model's).
        modality: "rgb" or "flow" of this model (`modality_of(model)`).
        other_model_dir: evaluated before, so it holds `eval_scores.npz`.
        fusion_weight: weight of the flow stream (see `fuse_two_models`).

    Returns:
        float32 (N, K) fused scores in the order of `media_ids`.

    Raises:
        ValueError: other classes or videos, or media ids empty or repeated (either side).
    """
    ids = check_media_ids(media_ids, "this evaluation")
    other, other_names, other_modality = read_video_scores(other_model_dir)
    if list(other_names) != [str(c) for c in class_names]:
        raise ValueError(
            f"{other_model_dir} was evaluated with other classes; both streams need the same "
            f"class names. Received: {len(other_names)} vs {len(class_names)} names")
    fused = fuse_two_models(dict(zip(ids, np.asarray(scores), strict=True)), other,
                            modality=modality, fuse_with_modality=other_modality,
                            fusion_weight=fusion_weight)
    return np.stack([fused[m] for m in ids]).astype(np.float32)
