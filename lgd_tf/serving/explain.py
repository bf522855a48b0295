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

import dataclasses
import math
import pathlib

import numpy as np
import tensorflow as tf

from lgd_io.errors import BadInput
from lgd_tf.serving import loading, module

LAYERS = ("local", "res2", "res3", "res4", "res5")
VIDEO_SUFFIXES = {".mp4": "mp4", ".gif": "gif"}
SCORES = ("logit", "log_probability")
METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}
METHODS = tuple(METHOD_NAMES)
MP4_CODECS = ("libx264", "h264", "mpeg4", "libopenh264")
DEFAULT_COLORMAP = "jet"


@dataclasses.dataclass
class Explanation:
    """Grad-CAM of one video.

    Attributes:
        frames: uint8 `(N, H, W, 3)`, the frames the model saw (short side resized).
        heatmaps: float32 `(N, H, W)` in [0, 1], one map per frame.
        class_index, class_name: the class explained.
        score: the video-level probability of that class (mean over the views).
        probabilities: `(K,)` video-level probabilities.
        class_names: K names.
        layer: the map explained ("local" = x_L, or "res2".."res5").
        method: "gradcam" or "gradcam++".
        score_name: what was differentiated ("local logit (Eq. 6)" / "combined logit").
        frames_per_step: frames per time step of the explained map (the clip length over its
            T'; x_L and res3/res4 of LGD-3D: 4, res2: 2): one map slice stands for that many
            consecutive frames, between which the per-frame heatmaps only interpolate.
    """

    frames: np.ndarray
    heatmaps: np.ndarray
    class_index: int
    class_name: str
    score: float
    probabilities: np.ndarray
    class_names: list
    layer: str
    score_name: str
    frames_per_step: int = 1
    method: str = "gradcam"

    def peaks(self):
        """(N, 2) int (row, column) of each frame's heatmap maximum."""
        flat = self.heatmaps.reshape(len(self.heatmaps), -1).argmax(axis=1)
        return np.stack(np.unravel_index(flat, self.heatmaps.shape[1:]), axis=1)


def _head(model):
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
    cams, logits, _ = _grad_cam(model, clips, class_index, layer, score, method)
    return cams, logits


def _grad_cam(model, clips, class_index, layer, score, method):
    """`grad_cam_views` and the number T' of time steps of the map."""
    check_layer(layer)
    check_method(method)
    if score not in SCORES:
        raise ValueError(f"`score` must be one of {SCORES}. Received: {score!r}")
    _, head = _head(model)
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


def covering_indices(num_frames, sampling):
    """Frame indices `(K, T)` of views that together contain every frame (see module doc)."""
    if num_frames < 1:
        raise BadInput("The video has no frames")
    if sampling.model == "2d":
        from lgd_tf.data import sampling as sampling_lib

        tuples = max(1, math.ceil(num_frames / sampling.num_segments))
        return sampling_lib.eval_indices(
            num_frames, model="2d", num_segments=sampling.num_segments, num_clips=tuples,
            short_video=sampling.short_video).numpy()
    length = sampling.num_frames
    last = max(num_frames - length, 0)
    starts = list(range(0, last + 1, length))
    if starts[-1] != last:
        starts.append(last)
    return np.array([[(s + i) % num_frames for i in range(length)] for s in starts], np.int32)


def explain_frames(model, frames, class_names, *, class_name=None, layer="local",
                   score="logit", method="gradcam", sampling=None, batch_size=8):
    """Grad-CAM of decoded frames `(N, H, W, C)` uint8 (already at the model's resolution).

    Args:
        model: an lgd_tf classifier.
        frames: the video's frames.
        class_names: K names.
        class_name: the class explained; None: the video's top class.
        layer: "local" (x_L) or "res2".."res5".
        method: "gradcam" or "gradcam++".
        sampling: a `module.Sampling` (its model type and clip length are used).
        batch_size: views per forward / backward pass.

    Returns:
        An `Explanation`.
    """
    check_layer(layer)
    check_method(method)
    score_name, _ = _head(model)
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"Expected frames (N >= 1, H, W, C). Received shape: {frames.shape}")
    class_names = [str(c) for c in class_names]
    index = None
    if class_name is not None:
        if class_name not in class_names:
            raise BadInput(f"Unknown --class_name {class_name!r}; the model's classes are: "
                             f"{', '.join(class_names)}")
        index = class_names.index(class_name)
    sampling = sampling or module.default_sampling(model)
    indices = covering_indices(len(frames), sampling)
    views = frames[indices]  # (K, T, H, W, C)

    from lgd_tf import models

    probabilities = np.concatenate([
        models.class_probabilities(model(views[i:i + batch_size].astype(np.float32),
                                         training=False))
        for i in range(0, len(views), batch_size)]).mean(axis=0)
    if index is None:
        index = int(np.argmax(probabilities))
    parts = [_grad_cam(model, views[i:i + batch_size], index, layer, score, method)
             for i in range(0, len(views), batch_size)]
    cams = np.concatenate([part[0] for part in parts])
    frames_per_step = max(1, views.shape[1] // parts[0][2])
    total = np.zeros(frames.shape[:3], np.float32)
    count = np.zeros(len(frames), np.float32)
    for view, cam in zip(indices, cams, strict=True):
        np.add.at(total, view, cam)
        np.add.at(count, view, 1.0)
    covered = np.flatnonzero(count)
    nearest = covered[np.abs(np.arange(len(frames))[:, None] - covered[None]).argmin(axis=1)]
    heatmaps = total[nearest] / count[nearest][:, None, None]
    return Explanation(frames=frames[..., :3] if frames.shape[-1] >= 3 else frames,
                       heatmaps=heatmaps.astype(np.float32), class_index=int(index),
                       class_name=class_names[index], score=float(probabilities[index]),
                       probabilities=probabilities.astype(np.float32),
                       class_names=class_names, layer=layer, score_name=score_name,
                       frames_per_step=frames_per_step, method=method)


def find_model(path, flag="--model"):
    """The `.keras` file for Grad-CAM: a `.keras` path, a run folder's final model, or an
    export dir's model.keras (`spec.resolve`; a SavedModel, LiteRT or ONNX file is refused:
    it keeps no gradients of the inner maps)."""
    from lgd_tf.serving import spec

    return spec.resolve(path, flag=flag, gradients=True).file


def explain_sampling(path, model=None, *, short_side=None, flag="--model"):
    """The Keras model, class names and evaluation sampling of `path` (see `find_model`):
    `(model, class_names, sampling, origin)`; `short_side` given overrides the recorded one."""
    from lgd_tf.serving import spec

    source = spec.resolve(path, flag=flag, gradients=True)
    keras_model, class_names, _ = loading.load_keras_model(source.file)
    source = spec.with_model(source, keras_model)
    sampling, origin = spec.sampling_for(source, keras_model, short_side=short_side)
    return keras_model, class_names, sampling, origin


def explain_video(model, video, *, class_name=None, layer="local", score="logit",
                  method="gradcam", short_side=None, sampling=None, batch_size=8):
    """Decodes `video` and explains it (see `explain_frames`).

    Args:
        model: a path (`.keras` file, run folder, or export dir with model.keras) or a tuple
            `(keras_model, class_names)`.
        video: a video file PyAV reads.
        class_name: the class explained (None: the top class).
        layer: "local" (x_L) or "res2".."res5".
        method: "gradcam" or "gradcam++".
        short_side: shorter side the frames are resized to (default: the run's evaluation
            sampling, recorded with the model; a model with a fixed input size gets frames
            resized to that size).
        sampling: a `module.Sampling` to use instead (its short side included).

    Returns:
        An `Explanation`.
    """
    from lgd_tf import data
    from lgd_tf.serving import spec

    if isinstance(model, (str, pathlib.Path)):
        keras_model, class_names, recorded, _ = explain_sampling(model, short_side=short_side)
    else:
        keras_model, class_names = model
        source = spec.with_model(spec.ModelSource("keras", "model", ""), keras_model)
        recorded, _ = spec.sampling_for(source, keras_model, short_side=short_side)
    sampling = sampling or recorded
    check_layer(layer)
    check_method(method)
    _head(keras_model)
    if module.clip_spec(keras_model)[-1] != 3:
        raise BadInput("Grad-CAM overlays need an RGB model (3 input channels)")
    video = pathlib.Path(video)
    if not video.is_file():
        raise BadInput(f"No video file at {video}")
    height, width = module.clip_spec(keras_model)[1:3]
    if height is not None and width is not None:
        frames = data.decode_video(video)
        frames = tf.image.resize(frames, (height, width), method="bilinear")
        frames = np.clip(np.round(frames.numpy()), 0, 255).astype(np.uint8)
    else:
        frames = data.decode_video(video, short_side=sampling.short_side)
    return explain_frames(keras_model, frames, class_names, class_name=class_name, layer=layer,
                          score=score, method=method, sampling=sampling, batch_size=batch_size)


# Drawing and writing.


def colorize(heatmaps, colormap=DEFAULT_COLORMAP):
    """(..., H, W) in [0, 1] -> uint8 RGB (..., H, W, 3) through a matplotlib colormap."""
    import matplotlib

    cmap = matplotlib.colormaps[colormap]
    return (cmap(np.clip(heatmaps, 0.0, 1.0))[..., :3] * 255.0 + 0.5).astype(np.uint8)


def overlay(frames, heatmaps, *, alpha=0.45, colormap=DEFAULT_COLORMAP):
    """The frames with the coloured heatmaps blended over them, uint8 (N, H, W, 3)."""
    frames = np.asarray(frames, np.float32)
    colours = colorize(heatmaps, colormap).astype(np.float32)
    return np.clip((1.0 - alpha) * frames + alpha * colours + 0.5, 0, 255).astype(np.uint8)


def _upscale(images, min_side):
    import cv2

    height, width = images.shape[1:3]
    factor = max(1, math.ceil(min_side / min(height, width)))
    new_h, new_w = height * factor, width * factor
    new_h, new_w = new_h + new_h % 2, new_w + new_w % 2  # even sizes for yuv420p
    if (new_h, new_w) == (height, width):
        return images
    interpolation = cv2.INTER_NEAREST if factor > 1 else cv2.INTER_LINEAR
    return np.stack([cv2.resize(image, (new_w, new_h), interpolation=interpolation)
                     for image in images])


def label(explanation):
    return f"{explanation.class_name} p={explanation.score:.2f}"


def _put_label(image, text):
    """Writes `text` on a dark band at the top of `image` (in place); returns it."""
    import cv2

    height, width = image.shape[:2]
    scale = max(0.35, min(width, height) / 400.0)
    thickness = max(1, int(round(scale * 1.5)))
    (text_w, text_h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    if text_w > width - 4:  # shrink to fit the width
        scale *= (width - 4) / text_w
        (text_w, text_h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale,
                                                 thickness)
    band = text_h + base + 6
    image[:band] = (image[:band].astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(image, text, (3, 3 + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)
    return image


def overlay_frames(explanation, *, min_side=256, alpha=0.45, colormap=DEFAULT_COLORMAP):
    """The frames of the overlay video, uint8 (N, H', W', 3): heatmap blended, upscaled by a
    whole factor so the shorter side is >= `min_side` (even sizes), class and score written."""
    blended = overlay(explanation.frames, explanation.heatmaps, alpha=alpha, colormap=colormap)
    big = np.ascontiguousarray(_upscale(blended, min_side))
    text = label(explanation)
    return np.stack([_put_label(image.copy(), text) for image in big])


def pick_mp4_codec():
    """The first MP4 video encoder PyAV has here (libx264, h264, mpeg4, libopenh264)."""
    import av

    for codec in MP4_CODECS:
        if codec in av.codecs_available:
            try:
                av.codec.Codec(codec, "w")
            except Exception:  # noqa: BLE001  (listed but no encoder)
                continue
            return codec
    return None


def video_path(output):
    """The overlay video written for `output`: itself, or a .gif beside an .mp4 when PyAV
    has no MP4 encoder here."""
    path = pathlib.Path(output)
    kind = VIDEO_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"The output must end with .mp4 or .gif. Received: {path}")
    if kind == "mp4" and pick_mp4_codec() is None:
        return path.with_suffix(".gif")
    return path


def encode_video(path, frames, *, fps=8.0, kind=None):
    """Encodes uint8 RGB frames (N, H, W, 3) at `path` (mp4 with PyAV, gif with Pillow; the
    format is `kind`, default the suffix's)."""
    kind = kind or VIDEO_SUFFIXES[pathlib.Path(path).suffix.lower()]
    if kind == "gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                       duration=int(round(1000.0 / fps)), loop=0)
        return
    from fractions import Fraction

    from lgd_tf.data.video import write_frames

    codec = pick_mp4_codec()
    write_frames(path, frames, codec=codec, fps=Fraction(fps).limit_denominator(1000),
                 container_format="mp4",
                 options={"crf": "20"} if codec in ("libx264", "h264") else None)


def write_video(path, frames, *, fps=8.0):
    """Writes uint8 RGB frames (N, H, W, 3) to `path` (.mp4 with PyAV, .gif with Pillow),
    whole or not at all.

    Returns the path written (an .mp4 falls back to a .gif next to it when PyAV has no MP4
    encoder here).
    """
    from lgd_io import files

    path = video_path(path)
    kind = VIDEO_SUFFIXES[path.suffix.lower()]
    files.atomic_write(path, lambda tmp: encode_video(tmp, frames, fps=fps, kind=kind))
    return path


def grid_figure(explanation, *, num_frames=6, alpha=0.45, colormap=DEFAULT_COLORMAP,
                title=None, column_width=1.6):
    """A matplotlib Figure: `num_frames` frames evenly spread over the video (top row) and
    their Grad-CAM overlays (bottom row), with a colour bar. No pyplot state is touched."""
    from matplotlib.figure import Figure

    n = len(explanation.frames)
    picks = np.unique(np.linspace(0, n - 1, min(num_frames, n)).round().astype(int))
    blended = overlay(explanation.frames[picks], explanation.heatmaps[picks], alpha=alpha,
                      colormap=colormap)
    figure = Figure(figsize=(column_width * len(picks) + 0.9, 2 * column_width + 0.7),
                    dpi=100, layout="constrained")
    axes = figure.subplots(2, len(picks), squeeze=False)
    for column, frame_index in enumerate(picks):
        axes[0, column].imshow(explanation.frames[frame_index], interpolation="nearest")
        axes[0, column].set_title(f"frame {frame_index}", fontsize=8)
        image = axes[1, column].imshow(blended[column], interpolation="nearest")
        for row in (0, 1):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
    axes[0, 0].set_ylabel("frame", fontsize=8)
    axes[1, 0].set_ylabel(METHOD_NAMES[explanation.method], fontsize=8)
    del image
    import matplotlib

    mappable = matplotlib.cm.ScalarMappable(cmap=matplotlib.colormaps[colormap])
    mappable.set_clim(0.0, 1.0)
    figure.colorbar(mappable, ax=axes[1, :].tolist(), shrink=0.9, pad=0.01, label="")
    figure.suptitle(title or f"{METHOD_NAMES[explanation.method]} on "
                    f"{layer_text(explanation.layer)}: "
                    f"{explanation.class_name} (p={explanation.score:.2f})", fontsize=9)
    return figure


def layer_text(layer):
    return "x_L" if layer == "local" else layer


def save_grid(path, explanation, **kwargs):
    """Saves `grid_figure(explanation, **kwargs)` as a PNG at `path` (no temporary name)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = grid_figure(explanation, **kwargs)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png")


def write_grid(path, explanation, **kwargs):
    """Saves `grid_figure(explanation, **kwargs)` as a PNG at `path`, whole or not at all;
    returns the path."""
    from lgd_io import files

    files.atomic_write(path, lambda tmp: save_grid(tmp, explanation, **kwargs))
    return pathlib.Path(path)


def output_paths(output):
    """(overlay video, PNG grid) written for `--output`."""
    output = pathlib.Path(output)
    return video_path(output), output.with_suffix(".png")


def write_explanation(explanation, output, *, fps=8.0, min_side=256, grid_frames=6,
                      alpha=0.45, colormap=DEFAULT_COLORMAP, flag="--output"):
    """Writes the overlay video at `output` (.mp4 or .gif) and the PNG grid next to it
    (same name, .png), replaced together once both are complete (a failure keeps both old
    files). Returns `(video_path, png_path)`."""
    from lgd_tf.serving import outputs

    video, png = output_paths(output)
    frames = overlay_frames(explanation, min_side=min_side, alpha=alpha, colormap=colormap)
    kind = VIDEO_SUFFIXES[video.suffix.lower()]
    with outputs.staged(flag) as write:
        write(video, lambda tmp: encode_video(tmp, frames, fps=fps, kind=kind))
        write(png, lambda tmp: save_grid(tmp, explanation, num_frames=grid_frames,
                                         alpha=alpha, colormap=colormap))
    return video, png
