"""The exported serving module: a `tf.Module` whose traced `tf.function`s are the signatures.

Every function is traced with a fixed input signature when the module is saved, so the
SavedModel holds plain TensorFlow graphs plus the model's variables: it loads and runs with
`tf.saved_model.load` (or TF Serving) without lgd_tf, and without Keras.

Signatures (all outputs float32 unless said otherwise):

- `serving_default(clips)`: uint8 `(B, T, H, W, C)` raw pixels -> `probabilities` `(B, K)`,
  `top_k_scores` `(B, k)`, `top_k_indices` int32 `(B, k)`, `top_k_labels` string `(B, k)`.
- `serve_frames(frames)`: decoded frames of ONE video, uint8 `(N, H, W, C)` -> the same outputs
  with B = 1: the evaluation views (Sec. 5.2 inference: whole frames with the short side
  resized, `num_clips` uniformly sampled clips x `num_crops` crops) are built in-graph by
  `lgd_tf.data.eval_views` and the views' probabilities averaged.
- `serve_encoded(encoded_frames)`: string `(N,)`, one JPEG per frame of ONE video (for flow
  models a flow JPEG with x, y in channels 0, 1) -> decoded in-graph, then as `serve_frames`.
- `features(clips)`: uint8 `(B, T, H, W, C)` -> `global_features` g_L `(B, C_L)`,
  `local_features` P(x_L) `(B, C_L)`, the global average of the final local map (Sec. 3.1),
  and `embedding` g_L / ||g_L||_2 `(B, C_L)`, the L2-normalised global feature for retrieval
  (cosine similarity = dot product; `lgd_tf.inference.embeddings.video_embedding` averages it
  over a video's evaluation views, docs/embeddings.md).
"""

import dataclasses
import json

import keras
import tensorflow as tf

SERVING_DEFAULT = "serving_default"
SERVE_FRAMES = "serve_frames"
SERVE_ENCODED = "serve_encoded"
FEATURES = "features"
SIGNATURE_KEYS = (SERVING_DEFAULT, SERVE_ENCODED, SERVE_FRAMES, FEATURES)
EMBEDDING = "embedding"  # output key of the features signature

# Sec. 5.2 inference: short side 120 / 240, 15 clips (3D) / 10 frame triples (2D).
_EVAL_DEFAULTS = {"3d": {"num_clips": 15, "short_side": 120},
                  "2d": {"num_clips": 10, "short_side": 240}}


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Arguments of `lgd_tf.data.eval_views`: how one video becomes the views that are scored."""

    model: str = "3d"
    num_frames: int = 16
    num_segments: int = 3
    num_clips: int = 15
    num_crops: int = 1
    short_side: int = 120
    temporal_stride: int = 1
    short_video: str = "loop"

    def __post_init__(self):
        if self.model not in _EVAL_DEFAULTS:
            raise ValueError(f"`model` must be '3d' or '2d'. Received: model={self.model!r}")
        if self.short_video not in ("loop", "pad"):
            raise ValueError(
                f"`short_video` must be 'loop' or 'pad'. Received: {self.short_video!r}")
        for field in ("num_frames", "num_segments", "num_clips", "short_side",
                      "temporal_stride"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"`{field}` must be >= 1. Received: {getattr(self, field)}")
        if self.num_crops not in (1, 3):
            raise ValueError(f"`num_crops` must be 1 or 3. Received: num_crops={self.num_crops}")

    def as_kwargs(self):
        return dataclasses.asdict(self)


def infer_model_type(model):
    """'2d' for an LGD-2D classifier (TSN segments), '3d' otherwise, from its backbone's class."""
    try:
        backbone = model.get_layer("backbone")
    except ValueError:
        backbone = model
    return "2d" if "2D" in type(backbone).__name__ else "3d"


def clip_spec(model):
    """`(T, H, W, C)` of the model's input; H and W may be None (whole-frame inference)."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 5 or shape[1] is None or shape[-1] is None:
        raise ValueError(
            "Expected a model taking clips (B, T, H, W, C) with known T and C. "
            f"Received: input shape {shape}")
    return shape[1:]


def default_sampling(model, *, model_type=None, num_clips=None, num_crops=1, short_side=None,
                     temporal_stride=1, short_video="loop"):
    """The evaluation sampling of Sec. 5.2 for `model`; arguments given override the defaults."""
    model_type = model_type or infer_model_type(model)
    if model_type not in _EVAL_DEFAULTS:
        raise ValueError(f"`model_type` must be '3d' or '2d'. Received: {model_type!r}")
    defaults = _EVAL_DEFAULTS[model_type]
    num_steps = clip_spec(model)[0]
    return Sampling(
        model=model_type,
        num_frames=num_steps if model_type == "3d" else 16,
        num_segments=num_steps if model_type == "2d" else 3,
        num_clips=int(num_clips or defaults["num_clips"]),
        num_crops=int(num_crops),
        short_side=int(short_side or defaults["short_side"]),
        temporal_stride=int(temporal_stride),
        short_video=short_video,
    )


def class_probabilities(outputs):
    """Softmax probabilities `(B, K)` of a classifier's outputs dict (see lgd_tf.models)."""
    from lgd_tf import models

    return tf.cast(models.class_probabilities(outputs), tf.float32)


class VideoClassifierModule(tf.Module):
    """Wraps a trained LGD classifier for serving; see the module docstring for the signatures.

    Args:
        model: a `keras.Model` built by `lgd_tf.models.lgd3d` / `lgd2d` with head "stage1" or
            "stage2" (raw pixels in, outputs dict of logits).
        class_names: K label strings, index order.
        sampling: a `Sampling` (default: `default_sampling(model)`).
        top_k: number of top classes returned (clipped to K).
    """

    def __init__(self, model, class_names, *, sampling=None, top_k=5, name="lgd_serving"):
        super().__init__(name=name)
        class_names = [str(c) for c in class_names]
        num_outputs = num_classes(model)
        if len(class_names) != num_outputs:
            raise ValueError(
                f"Expected one class name per model output ({num_outputs}). "
                f"Received: {len(class_names)} class names")
        if int(top_k) < 1:
            raise ValueError(f"`top_k` must be >= 1. Received: top_k={top_k}")
        self.sampling = sampling or default_sampling(model)
        self.top_k = min(int(top_k), num_outputs)
        # Variables used by the traced functions must be tracked to be saved (as
        # keras.export.ExportArchive does); the Keras model object itself is not saved.
        self.model_variables = list(model.variables)
        self.class_names = tf.Variable(class_names, dtype=tf.string, trainable=False,
                                       name="class_names")
        # Read back by `lgd_tf.predict` (decoding at the right size); not used by the graphs.
        self.sampling_json = tf.Variable(json.dumps(self.sampling.as_kwargs(), sort_keys=True),
                                         dtype=tf.string, trainable=False, name="sampling")
        self._keras = _Untracked(model=model, backbone=model.get_layer("backbone"))

        steps, height, width, channels = clip_spec(model)
        self.input_channels = channels
        clips = tf.TensorSpec((None, steps, height, width, channels), tf.uint8, name="clips")
        frames = tf.TensorSpec((None, None, None, channels), tf.uint8, name="frames")
        encoded = tf.TensorSpec((None,), tf.string, name="encoded_frames")
        self.serving_default = tf.function(self._classify_clips, input_signature=[clips])
        self.serve_frames = tf.function(self._classify_frames, input_signature=[frames])
        self.serve_encoded = tf.function(self._classify_encoded, input_signature=[encoded])
        self.features = tf.function(self._features, input_signature=[clips])

    def signatures(self):
        """`{signature key: concrete function}` for `tf.saved_model.save`."""
        return {key: getattr(self, key).get_concrete_function() for key in SIGNATURE_KEYS}

    # The functions below are traced; their arguments are tensors.

    def _probabilities(self, clips):
        return class_probabilities(self._keras.model(clips, training=False))

    def _top_k(self, probabilities):
        scores, indices = tf.math.top_k(probabilities, k=self.top_k)
        return {
            "probabilities": probabilities,
            "top_k_scores": scores,
            "top_k_indices": indices,
            "top_k_labels": tf.gather(self.class_names, indices),
        }

    def _classify_clips(self, clips):
        return self._top_k(self._probabilities(clips))

    def _classify_views(self, views):
        probabilities = self._probabilities(views)
        return self._top_k(tf.reduce_mean(probabilities, axis=0, keepdims=True))

    def _classify_frames(self, frames):
        from lgd_tf import data

        views = data.eval_views(frames, **self.sampling.as_kwargs())
        return self._classify_views(views)

    def _classify_encoded(self, encoded_frames):
        channels = self.input_channels

        def decode(jpeg):
            # As lgd_tf.data's pipelines: flow JPEGs carry x, y in channels 0, 1.
            return tf.io.decode_jpeg(jpeg, channels=3)[..., :channels]

        frames = tf.map_fn(decode, encoded_frames,
                           fn_output_signature=tf.TensorSpec((None, None, channels), tf.uint8))
        return self._classify_frames(frames)

    def _features(self, clips):
        outputs = self._keras.backbone(clips, training=False)
        local = tf.cast(outputs["local"], tf.float32)
        global_features = tf.cast(outputs["global"], tf.float32)
        return {
            "global_features": global_features,
            "local_features": tf.reduce_mean(local, axis=(1, 2, 3)),
            EMBEDDING: l2_normalize(global_features),
        }


def l2_normalize(vectors):
    """Rows of `vectors` (..., C) divided by their L2 norm (a zero row stays zero)."""
    return tf.math.l2_normalize(vectors, axis=-1, epsilon=1e-12)


class _Untracked:
    """Holds Keras objects on the module without making them part of the saved object graph."""

    def __init__(self, **objects):
        self.__dict__.update(objects)


def num_classes(model):
    """K, the width of every logits output of a classifier."""
    outputs = model.outputs
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    shapes = {tuple(o.shape)[-1] for o in keras.tree.flatten(outputs)}
    if len(shapes) != 1 or None in shapes:
        raise ValueError(
            f"Expected a classifier whose outputs all have K classes. Received: {shapes}")
    return shapes.pop()
