"""The explanation of a video by Grad-CAM (`grad_cam`): the views that cover every frame,
their maps and the class explained; `rendering` draws it.
"""

import dataclasses
import math
import pathlib

import numpy as np
import tensorflow as tf

from lgd_io.errors import BadInput
from lgd_tf.analysis.grad_cam import (
    check_layer,
    check_method,
    explained_head,
    grad_cam_with_time_steps,
)
from lgd_tf.serving import loading, module


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
    score_name, _ = explained_head(model)
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
    parts = [grad_cam_with_time_steps(model, views[i:i + batch_size], index, layer, score, method)
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
    explained_head(keras_model)
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
