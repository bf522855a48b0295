"""A classifier as one fixed-size clip -> probabilities function, for LiteRT (TFLite) and ONNX.

The edge formats take one clip `(1, T, H, W, C)` uint8 pixels (T and C from the model, H x W
the training crop size unless given) and return `probabilities` `(1, K)` float32:
`lgd_tf.models.class_probabilities` of the model's outputs (softmax of "combined", or the
mean of the two stage-1 heads' softmaxes).

The stage-2 head's Tensor Sketch is converted with `fft="matmul"` (a four-step DFT of MatMul
/ Mul / Reshape ops, `lgd_tf.layers.tensor_sketch`): `tf.signal.irfft` has no TFLite built-in
(it would need the Select-TF op IRFFT) and tf2onnx writes a non-standard RFFT node that
onnxruntime refuses. The model is cloned with that option and the same weights.
"""

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from lgd_tf.layers import tensor_sketch
from lgd_tf.serving import module

QUANTIZATIONS = ("float16", "dynamic_int8")
# Training crop size per model type (lgd_tf.data.train_dataset's default crop_size).
DEFAULT_CROP = {"3d": 112, "2d": 224}
OUTPUT_NAME = "probabilities"
INPUT_NAME = "clip"


def edge_model(model):
    """`model` with every TensorSketch computing its FFT as MatMuls (`fft="matmul"`): a clone
    with the same weights, or `model` itself when it has no TensorSketch or all use it."""
    sketches = [layer for layer in model._flatten_layers()
                if isinstance(layer, tensor_sketch.TensorSketch)]
    if all(layer.fft == "matmul" for layer in sketches):
        return model
    with tensor_sketch.fft_implementation("matmul"):
        clone = model.__class__.from_config(model.get_config())
    for layer in clone._flatten_layers():
        if isinstance(layer, tensor_sketch.TensorSketch):
            layer.fft = "matmul"  # also those whose config named fft="signal"
    weights = model.get_weights()
    if len(weights) != len(clone.weights):
        raise ValueError(f"Cannot clone {model.name} for export: {len(clone.weights)} weights "
                         f"after cloning, {len(weights)} before")
    clone.set_weights(weights)
    return clone


def input_shape(model, height=None, width=None):
    """`(1, T, H, W, C)` of the exported clip: H, W given, else the model's static input
    size, else the training crop size of its type (112 LGD-3D, 224 LGD-2D)."""
    steps, model_h, model_w, channels = module.clip_spec(model)
    crop = DEFAULT_CROP[module.infer_model_type(model)]
    height = int(height or model_h or crop)
    width = int(width or model_w or crop)
    if height < 1 or width < 1:
        raise ValueError(f"The input size must be positive. Received: {height} x {width}")
    return (1, int(steps), height, width, int(channels))


def probabilities_function(model, shape):
    """A `tf.function` `clip` uint8 `shape` -> {"probabilities": (1, K) float32}."""
    spec = tf.TensorSpec(shape, tf.uint8, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def probabilities(clip):
        outputs = model(tf.cast(clip, tf.float32), training=False)
        return {OUTPUT_NAME: module.class_probabilities(outputs)}

    return probabilities


def convert_litert(model, *, height=None, width=None, quantize=None):
    """The `.tflite` flatbuffer (bytes) of `model` on one clip, TFLite built-in ops only.

    quantize: None (float32), "float16" (float16 weights, computed in float32 where the
    runtime has no float16 kernels) or "dynamic_int8" (int8 weights, dynamic-range
    activations).
    """
    if quantize not in (None,) + QUANTIZATIONS:
        raise ValueError(f"`quantize` must be one of {QUANTIZATIONS} or None. "
                         f"Received: {quantize!r}")
    model = edge_model(model)
    function = probabilities_function(model, input_shape(model, height, width))
    # Without a trackable object the converter freezes every variable into a constant (the
    # path given the model keeps the int32 Tensor Sketch hashes as variables, which the
    # interpreter then fails to read: "READ_VARIABLE failed to invoke"). It logs a
    # deprecation warning (through absl's standard-library logger), silenced here.
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [function.get_concrete_function()])
    finally:
        logger.setLevel(level)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


class LiteRTRunner:
    """Runs a `.tflite` classifier (bytes or path) on uint8 clips `(1, T, H, W, C)`, with
    ai_edge_litert's interpreter (tf.lite's if ai-edge-litert is not installed)."""

    def __init__(self, model_content_or_path, num_threads=None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            Interpreter = tf.lite.Interpreter  # noqa: N806
        source = ({"model_content": bytes(model_content_or_path)}
                  if isinstance(model_content_or_path, (bytes, bytearray))
                  else {"model_path": str(model_content_or_path)})
        self.interpreter = Interpreter(**source, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.shape = tuple(int(d) for d in self.input["shape"])
        self.output_size = int(self.output["shape"][-1])  # K

    def __call__(self, clip):
        self.interpreter.set_tensor(self.input["index"], np.asarray(clip, np.uint8))
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output["index"]))


@dataclasses.dataclass(frozen=True)
class Top1Comparison:
    """Top-1 accuracy of the exported model and of the Keras model on the same views."""

    num_videos: int
    keras_top1: float
    exported_top1: float
    disagreements: int  # videos whose top-1 class differs

    @property
    def change(self):
        """exported - Keras top-1, in accuracy points (fraction)."""
        return self.exported_top1 - self.keras_top1

    def describe(self, name="LiteRT"):
        return (f"top-1 on {self.num_videos} videos: Keras {100 * self.keras_top1:.1f}%, "
                f"{name} {100 * self.exported_top1:.1f}% (change {100 * self.change:+.1f} "
                f"points; {self.disagreements} videos with another top-1 class)")


def fit_views(views, height, width):
    """uint8 views `(V, T, h, w, C)` -> `(V, T, height, width, C)`: the centre crop of the
    largest region with the target aspect ratio, resized (bilinear) when sizes differ."""
    views = tf.convert_to_tensor(views)
    h, w = int(views.shape[2]), int(views.shape[3])
    scale = min(h / height, w / width)
    ch, cw = min(h, round(height * scale)), min(w, round(width * scale))
    y, x = (h - ch) // 2, (w - cw) // 2
    views = views[:, :, y:y + ch, x:x + cw]
    if (ch, cw) != (height, width):
        flat = tf.reshape(views, (-1, ch, cw, views.shape[-1]))
        flat = tf.image.resize(tf.cast(flat, tf.float32), (height, width))
        views = tf.reshape(tf.cast(tf.clip_by_value(tf.round(flat), 0, 255), tf.uint8),
                           (-1, views.shape[1], height, width, views.shape[-1]))
    return views.numpy()


def compare_top1(run_exported, model, dataset, max_videos=None):
    """Top-1 of `run_exported` (clip (1, T, H, W, C) uint8 -> (1, K) probabilities, e.g. a
    `LiteRTRunner`) and of the Keras `model` on `dataset`.

    run_exported: one runner, or {name: runner} (all with the same input shape; the Keras
        model runs once for all of them) -> {name: Top1Comparison}.
    dataset: yields `(views, labels, ...)` with views uint8 `(B, V, T, h, w, C)` (as
        `lgd_tf.data.eval_dataset`) or clips `(B, T, h, w, C)`; each view is centre-cropped /
        resized to the exported input size and the probabilities are averaged over a video's
        views (Sec. 5.2), for both models alike.
    """
    runners = run_exported if isinstance(run_exported, dict) else {None: run_exported}
    shapes = {tuple(getattr(runner, "shape", ())) for runner in runners.values()}
    shape = shapes.pop() if len(shapes) == 1 else ()
    if len(shape) != 5:
        raise ValueError(f"The runners need one `shape` (1, T, H, W, C). Received: "
                         f"{[getattr(r, 'shape', None) for r in runners.values()]}")
    keras_fn = probabilities_function(model, (None,) + shape[1:])
    videos, keras_right = 0, 0
    right = dict.fromkeys(runners, 0)
    disagree = dict.fromkeys(runners, 0)
    for batch in dataset:
        views, labels = np.asarray(batch[0]), np.asarray(batch[1])
        if views.ndim == 5:
            views = views[:, None]
        for video, label in zip(views, labels, strict=True):
            if max_videos is not None and videos >= max_videos:
                break
            video = fit_views(video, shape[2], shape[3])
            keras_top1 = np.argmax(keras_fn(tf.constant(video))[OUTPUT_NAME].numpy().mean(0))
            videos += 1
            keras_right += int(keras_top1 == label)
            for name, runner in runners.items():
                top1 = np.argmax(np.mean([runner(view[None])[0] for view in video], axis=0))
                right[name] += int(top1 == label)
                disagree[name] += int(top1 != keras_top1)
        if max_videos is not None and videos >= max_videos:
            break
    if videos == 0:
        raise ValueError("The evaluation dataset holds no video")
    results = {name: Top1Comparison(videos, keras_right / videos, right[name] / videos,
                                    disagree[name]) for name in runners}
    return results if isinstance(run_exported, dict) else results[None]
