"""Grad-CAM (Selvaraju et al., ICCV 2017) of an LGD classifier on a video: maps and overlays.

Definition (per view, i.e. per clip fed to the model): with A the chosen local map
`(T', H', W', C)` of the backbone (x_L, "local", by default; or "res2".."res5") and y the
score of class k,

    w_c = mean over (t, h, w) of d y / d A[t, h, w, c]       (spatio-temporal mean)
    cam = ReLU(sum_c w_c A[..., c])                            (T', H', W')

then upsampled to the view's frames (linear in time with half-pixel centres; bilinear in
space with cell i on pixel stride * i, where its receptive field is centred) and min-max
normalised to [0, 1] per view (a map that is zero everywhere stays zero). d y / d A is the
total derivative, through g_l = ReLU(W^{g,x} P(x_l) + W^{g,g} g_{l-1}) too (`backbone_features`).

`method="gradcam++"` (Chattopadhay et al., WACV 2018, Eq. 19 with the exponential of the
score) weighs the positive gradients instead, with g = d y / d A:

    alpha[t, h, w, c] = g^2 / (2 g^2 + (sum over (t, h, w) of A[..., c]) g^3)   (0 where 0/0)
    w_c = sum over (t, h, w) of alpha ReLU(g)

It localises small objects at the early stages much better (README, "Grad-CAM").

Resolution: x_L of an 8 x 64 x 64 clip is 2 x 4 x 4 cells, each of which sees the whole frame
and clip; on the demo videos its peak is in the moving digit's box in ~20-30 % of frames,
against ~50-70 % for res3 and ~96 % for res2 with Grad-CAM++ (README, "Grad-CAM"). Small
objects want `layer="res2"` or `"res3"` and `method="gradcam++"`.

The score y is the logit of class k (before the softmax; `score="log_probability"` takes
log softmax_k instead) of the head that reads x_L:

- stage-1 models (`head="stage1"`): the local head's logit W_x P(x_L) (Eq. 6). With A = x_L
  the gradient is W_x[:, k] / (T'H'W') at every position, so Grad-CAM equals CAM (Zhou et
  al. 2016) there. The global head (W_g g_L) is not explained.
- stage-2 models: the combined classifier's logit W_c [mean_i TS(x_L^i), TS(g_L)] (Eq. 4-5).

The class explained is the given one or the video's top class by the model's video-level
probabilities (mean over the views; for stage 1 the mean of both heads' softmax, as
`lgd_tf.models.class_probabilities`).

A video is covered by consecutive clips of the model's length (3D; the last one ends at the
last frame, a video shorter than a clip is looped) or by TSN frame tuples (2D); a frame's map
is the mean of the maps of the views that contain it (2D: frames in no tuple take the map of
the nearest frame that has one). Only gradients of a Keras model are available: a SavedModel
keeps no inner maps, so explanations need the `.keras` file (an export dir has model.keras).
"""

import math

import numpy as np
import tensorflow as tf

from lgd_io.errors import BadInput

LAYERS = ("local", "res2", "res3", "res4", "res5")
SCORES = ("logit", "log_probability")
METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}
METHODS = tuple(METHOD_NAMES)


def explained_head(model):
    """(name of the score, fn(backbone features) -> logits (B, K)) of an LGD classifier."""
    names = {layer.name for layer in model.layers}
    if {"local_pool", "local_logits"} <= names:
        pool, dense = model.get_layer("local_pool"), model.get_layer("local_logits")
        return "local logit W_x P(x_L) (Eq. 6)", lambda f: dense(pool(f["local"]))
    if {"local_global_sketch", "combined_logits"} <= names:
        sketch = model.get_layer("local_global_sketch")
        dense = model.get_layer("combined_logits")
        return ("combined logit (Eq. 4-5)",
                lambda f: dense(sketch([f["local"], f["global"]])))
    raise BadInput(
        "Grad-CAM needs an lgd_tf classifier with a stage-1 (local_logits) or stage-2 "
        f"(combined_logits) head. Received: a model with layers {sorted(names)[:8]}...")


def _backbone(model):
    try:
        return model.get_layer("backbone")
    except ValueError as error:
        raise BadInput("Grad-CAM needs an lgd_tf classifier with a nested 'backbone'. "
                         f"Received: {model.name}") from error


def check_method(method):
    if method not in METHODS:
        raise ValueError(f"The class-activation method must be one of {', '.join(METHODS)}. "
                         f"Received: {method!r}")
    return method


def cam_from_gradients(maps, grads, method="gradcam"):
    """The class-activation map `(V, T', H', W')` of maps A and gradients g = d y / d A, both
    `(V, T', H', W', C)`: ReLU(sum_c w_c A_c) with w_c of Grad-CAM or Grad-CAM++ (module
    docstring)."""
    check_method(method)
    maps, grads = tf.cast(maps, tf.float32), tf.cast(grads, tf.float32)
    positions = (1, 2, 3)
    if method == "gradcam":
        weights = tf.reduce_mean(grads, axis=positions, keepdims=True)
    else:
        squared = tf.square(grads)
        denominator = 2.0 * squared + tf.reduce_sum(maps, axis=positions, keepdims=True) * (
            squared * grads)
        alpha = tf.math.divide_no_nan(squared, denominator)
        weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=positions, keepdims=True)
    return tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))


def check_layer(layer):
    if layer not in LAYERS:
        raise ValueError(f"The Grad-CAM layer must be one of {', '.join(LAYERS)}. "
                         f"Received: {layer!r}")
    return layer


def _interpolation_matrix(size, cells, stride):
    """(size, cells) linear interpolation weights: output pixel p reads the map at p / stride.

    The backbones put their stride on 1x1 convolutions (and symmetric padding elsewhere), so
    cell i of a map with spatial stride s is centred on input pixel s * i, not on the centre
    of its s x s block: half-pixel resizing would shift the heatmap by (s - 1) / 2 pixels.
    """
    position = np.clip(np.arange(size, dtype=np.float64) / stride, 0.0, cells - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, cells - 1)
    frac = position - low
    weights = np.zeros((size, cells), np.float32)
    np.add.at(weights, (np.arange(size), low), 1.0 - frac)
    np.add.at(weights, (np.arange(size), high), frac)
    return weights


def spatial_stride(size, cells):
    """The power-of-two stride of a map with `cells` cells over `size` input pixels."""
    return 2 ** max(0, int(round(math.log2(size / cells)))) if cells < size else 1


def upsample(cams, size):
    """(V, T', H', W') -> (V, T, H, W): linear in time (half-pixel centres: temporal max pools
    cover consecutive frames) and bilinear in space (cell i centred on pixel stride * i)."""
    cams = np.asarray(cams, np.float32)
    steps, height, width = (int(s) for s in size)
    cells_t, cells_h, cells_w = cams.shape[1:]
    rows = _interpolation_matrix(height, cells_h, spatial_stride(height, cells_h))
    cols = _interpolation_matrix(width, cells_w, spatial_stride(width, cells_w))
    spatial = np.einsum("hy,vtyx,wx->vthw", rows, cams, cols, optimize=True)
    # Temporal: position of frame t in map steps with half-pixel centres, clamped.
    position = np.clip((np.arange(steps) + 0.5) * cells_t / steps - 0.5, 0.0, cells_t - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, cells_t - 1)
    frac = (position - low)[None, :, None, None].astype(np.float32)
    return (spatial[:, low] * (1.0 - frac) + spatial[:, high] * frac).astype(np.float32)


def normalize(cams):
    """Min-max normalisation to [0, 1] of each (T, H, W) map; a constant map becomes 0."""
    cams = np.asarray(cams, np.float32)
    axes = tuple(range(1, cams.ndim))
    low = cams.min(axis=axes, keepdims=True)
    span = cams.max(axis=axes, keepdims=True) - low
    return np.where(span > 1e-12, (cams - low) / np.maximum(span, 1e-12), 0.0).astype(np.float32)


def _producer(backbone, layer):
    """The LGD block of the backbone that outputs the map `layer`, or None (a baseline's
    residual unit: nothing there is fused, the map is a plain tensor of the call)."""
    from lgd_tf.layers.lgd_block import LGDBlock

    target = backbone.output[layer]
    for candidate in backbone.layers:
        if isinstance(candidate, LGDBlock) and candidate.output[0] is target:
            return candidate
    return None


def backbone_features(backbone, clips, layer, *, watch=None, perturb=None):
    """The backbone's features dict, computed so that the map `layer` is a differentiable
    input of everything computed from it; returns `(features, map)`.

    `backbone(clips)` is not enough: the LGD block computes x_l and P(x_l) in one fused op
    (`lgd_tf.layers.lgd_block.diffuse`), so g_l = ReLU(W^{g,x} P(x_l) + W^{g,g} g_{l-1})
    (Eq. 3) is not a function of the x_l tensor on a gradient tape, and d y / d x_l taken
    after the call would miss every path through the global features (for res2..res4 every
    later block; for x_L the g_L of a stage-2 head). The call runs under
    `lgd_block.plain_diffusion`, where P(x_l) is computed from x_l (same values), and the
    block that outputs the map `watch`es it (and substitutes `perturb(map)`, for gradient
    checks) before pooling it.
    """
    from lgd_tf.layers import lgd_block

    block = _producer(backbone, layer)

    def hook(x):
        x = x if perturb is None else perturb(x)
        if watch is not None:
            watch(x)
        return x

    if block is None:
        if perturb is not None:
            raise ValueError(f"Only the map of an LGD block can be perturbed. Received: {layer!r}")
        features = backbone(clips, training=False)
        if watch is not None:
            watch(features[layer])
        return features, features[layer]
    with lgd_block.plain_diffusion({block.name: hook}):
        features = backbone(clips, training=False)
    return features, features[layer]


def grad_cam_views(model, clips, class_index, layer="local", score="logit", method="gradcam"):
    """Grad-CAM of a batch of views.

    Args:
        model: an lgd_tf `LGDClassifier` (stage-1 or stage-2 head).
        clips: `(V, T, H, W, C)` raw pixels (0..255).
        class_index: the class k explained (int, or one per view).
        layer: "local" (x_L) or "res2".."res5".
        score: "logit" (y = z_k, Selvaraju et al.) or "log_probability" (y = log softmax_k).
        method: "gradcam" or "gradcam++" (module docstring).

    Returns:
        `(cams, logits)`: float32 `(V, T, H, W)` in [0, 1] (see the module docstring) and the
        head's logits `(V, K)`.
    """
    cams, logits, _ = grad_cam_with_time_steps(model, clips, class_index, layer, score, method)
    return cams, logits


def grad_cam_with_time_steps(model, clips, class_index, layer, score, method):
    """`grad_cam_views` and the number T' of time steps of the map."""
    check_layer(layer)
    check_method(method)
    if score not in SCORES:
        raise ValueError(f"`score` must be one of {SCORES}. Received: {score!r}")
    _, head = explained_head(model)
    backbone = _backbone(model)
    clips = tf.cast(tf.convert_to_tensor(clips), tf.float32)
    if clips.shape.rank != 5:
        raise ValueError(f"Expected clips (V, T, H, W, C). Received shape: {clips.shape}")
    index = tf.broadcast_to(tf.cast(class_index, tf.int32), [tf.shape(clips)[0]])
    with tf.GradientTape() as tape:
        features, maps = backbone_features(backbone, clips, layer, watch=tape.watch)
        logits = tf.cast(head(features), tf.float32)
        scores = logits if score == "logit" else tf.nn.log_softmax(logits, axis=-1)
        total = tf.reduce_sum(tf.gather(scores, index, axis=1, batch_dims=1))
    grads = tape.gradient(total, maps)
    if grads is None:
        raise ValueError(f"The class score does not depend on the {layer!r} map")
    cams = cam_from_gradients(maps, grads, method)
    size = tuple(tf.shape(clips)[1:4].numpy())
    return normalize(upsample(cams.numpy(), size)), logits.numpy(), int(cams.shape[1])


def grad_cam(model, clip, class_index, layer="local", score="logit", method="gradcam"):
    """Grad-CAM of one clip `(T, H, W, C)` for class `class_index`: `(T, H, W)` in [0, 1]."""
    clip = np.asarray(clip)
    if clip.ndim != 4:
        raise ValueError(f"Expected one clip (T, H, W, C). Received shape: {clip.shape}")
    cams, _ = grad_cam_views(model, clip[None], class_index, layer=layer, score=score,
                             method=method)
    return cams[0]
