"""Two-stream late fusion of class scores (Sec. 5.5).

The paper's "Two-stream" rows (Tables 4-6) fuse the video-level predictions of an RGB network and
of a network on TV-L1 optical flow. The fusion is a weighted average of the two streams' class
probabilities:

    fused = (1 - w) * rgb + w * flow,    0 <= w <= 1,

with w = 0.5 an equal-weight average. Both functions here are pure NumPy so that `evaluate`
(scores keyed by media id) and `predict` (one video) share them.
"""

import numpy as np

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
