"""One interface over an exported SavedModel and a `.keras` file: video frames -> scores.

Both score a video the way evaluation does (Sec. 5.2): `lgd_tf.data.eval_views` builds the
views from the decoded frames and the views' class probabilities are averaged. For a SavedModel
this is its `serve_frames` signature; for a `.keras` file the same `VideoClassifierModule` is
built in memory. `view_probabilities` / `view_embeddings` score views built outside the graph
(the streaming decode of `lgd_tf.inference.predict` and the timeline) with the `serving_default`
and `features` signatures, the same model graph on the same views.
"""

import json

import numpy as np
import tensorflow as tf

from lgd_io.errors import BadInput, one_line
from lgd_tf.serving import loading, module


class VideoClassifier:
    """Scores one video's decoded frames.

    Attributes:
        path: where the model came from.
        class_names: list of K names.
        input_channels: 3 (RGB) or 2 (optical flow).
        sampling: the `module.Sampling` used to build the views.
    """

    def __init__(self, path, serve_frames, class_names, sampling, *, serve_clips=None,
                 features=None):
        self.path = str(path)
        self._serve_frames = serve_frames
        # Functions of views (B, T, H, W, C): concrete signatures of a SavedModel, or the
        # module's tf.functions for a .keras model (traced when first called).
        self._signatures = {module.SERVING_DEFAULT: serve_clips, module.FEATURES: features}
        self.class_names = list(class_names)
        self.sampling = sampling
        self.origin = ""  # where the sampling came from (set by load_classifier)
        self.views = ""  # how the views are fitted to the input ("" : whole views)
        spec = tf.nest.flatten(serve_frames.structured_input_signature)[0]
        self.input_channels = int(spec.shape[-1])

    @property
    def modality(self):
        return "flow" if self.input_channels == 2 else "rgb"

    def video_probabilities(self, frames):
        """uint8 frames `(N, H, W, C)` of one video -> probabilities `(K,)` (mean over views)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != self.input_channels:
            raise ValueError(
                f"Expected frames (N >= 1, H, W, {self.input_channels}). "
                f"Received: shape {frames.shape}")
        outputs = self._serve_frames(frames=tf.constant(frames, tf.uint8))
        return outputs["probabilities"].numpy()[0]

    def view_probabilities(self, views):
        """uint8 views `(V, T, H, W, C)` -> probabilities of each view `(V, K)`."""
        outputs = self._signature(module.SERVING_DEFAULT)(clips=self._views(views))
        return outputs["probabilities"].numpy()

    def view_embeddings(self, views):
        """uint8 views `(V, T, H, W, C)` -> L2-normalised g_L of each view `(V, C_L)`."""
        outputs = self._signature(module.FEATURES)(clips=self._views(views))
        if module.EMBEDDING in outputs:
            return outputs[module.EMBEDDING].numpy()
        # An export made before the features signature had the embedding output.
        return module.l2_normalize(outputs["global_features"]).numpy()

    def _views(self, views):
        views = tf.convert_to_tensor(views)
        if views.shape.rank != 5 or views.shape[0] == 0 or views.shape[-1] != self.input_channels:
            raise ValueError(
                f"Expected views (V >= 1, T, H, W, {self.input_channels}). "
                f"Received: shape {views.shape}")
        return tf.cast(views, tf.uint8)

    def _signature(self, key):
        function = self._signatures.get(key)
        if function is None:
            raise ValueError(f"{self.path} has no {key} signature (export it again)")
        return function


def load_classifier(path, *, num_clips=None, num_crops=None, short_side=None, flag="--model"):
    """Loads a run folder, an export dir (with or without the version subdirectory), a
    `.keras`, `.tflite` or `.onnx` file (`lgd_tf.serving.spec.resolve`).

    The views are the evaluation sampling recorded with the model (the run's, or the
    export's); `num_clips`, `num_crops` and `short_side` given override it. `origin` of the
    classifier says where the sampling came from.
    """
    from lgd_tf.serving import spec

    source = spec.resolve(path, flag=flag)
    overrides = {"num_clips": num_clips, "num_crops": num_crops, "short_side": short_side}
    if source.kind == "saved_model":
        classifier = _load_saved_model(source.file)
        source = spec.ModelSource(source.kind, source.file, source.given,
                                  sampling=classifier.sampling,
                                  origin=f"fixed at export in {source.file}")
        classifier.sampling, classifier.origin = spec.sampling_for(source, **overrides)
        return classifier
    if source.kind in spec.EDGE_SUFFIXES.values():
        return EdgeClassifier(source, overrides)
    model, class_names, keras_path = loading.load_keras_model(source.file)
    source = spec.with_model(source, model)
    sampling, origin = spec.sampling_for(source, model, **overrides)
    serving = module.VideoClassifierModule(model, class_names, sampling=sampling,
                                           top_k=len(class_names))
    concrete = serving.serve_frames.get_concrete_function()
    classifier = VideoClassifier(keras_path, concrete, class_names, sampling,
                                 serve_clips=serving.serving_default, features=serving.features)
    classifier.origin = origin
    return classifier


class EdgeClassifier:
    """A LiteRT (`.tflite`) or ONNX file in its runtime: one clip `(1, T, H, W, C)` per call.

    Scores the views of the recorded evaluation sampling (`video_views`), each centre-cropped
    (and resized when the short side is below the input size) to the model's H x W
    (`litert.fit_views`), the clip the file was exported for; `views` says so in words.
    """

    def __init__(self, source, overrides):
        from lgd_tf.serving import litert, spec

        self.path = str(source.file)
        self._runner = _edge_runner(source)
        _, steps, self.height, self.width, channels = self._runner.shape
        self.input_channels = int(channels)
        num_outputs = int(self._runner.output_size)
        names = source.class_names or loading.read_class_names(source.file.parent, num_outputs)
        self.class_names = list(names)
        if source.sampling is None:  # no export record: the Sec. 5.2 defaults for a 3D clip
            source = spec.ModelSource(source.kind, source.file, source.given,
                                      sampling=module.Sampling(num_frames=int(steps)),
                                      origin=source.origin)
        self.sampling, self.origin = spec.sampling_for(source, **overrides)
        self._fit = litert.fit_views
        self.views = (f"each view centre-cropped to {self.height}x{self.width}, the input of "
                      f"{source.file.name}")

    @property
    def modality(self):
        return "flow" if self.input_channels == 2 else "rgb"

    def view_probabilities(self, views):
        """uint8 views `(V, T, h, w, C)` -> probabilities of each view `(V, K)`."""
        views = self._fit(np.asarray(views, np.uint8), self.height, self.width)
        return np.stack([self._runner(view[None])[0] for view in views]).astype(np.float32)


def _edge_runner(source):
    from lgd_tf.serving import litert

    if source.kind == "litert":
        return litert.LiteRTRunner(source.file)
    try:
        from lgd_tf.serving import onnx

        return onnx.ONNXRunner(source.file)
    except ImportError:
        raise BadInput(f"{source.file} is an ONNX model: running it needs onnxruntime "
                       "(pip install onnxruntime)") from None


def _load_saved_model(saved_model_dir):
    try:
        loaded = tf.saved_model.load(str(saved_model_dir))
        serve_frames = loaded.signatures[module.SERVE_FRAMES]
        serve_clips = loaded.signatures.get(module.SERVING_DEFAULT)
        features = loaded.signatures.get(module.FEATURES)
        class_names = [n.decode("utf-8") for n in loaded.class_names.numpy()]
        sampling = module.Sampling(**json.loads(loaded.sampling_json.numpy().decode("utf-8")))
    except (KeyError, AttributeError) as error:
        raise BadInput(
            f"{saved_model_dir} is not an lgd_tf export (needs the {module.SERVE_FRAMES} "
            f"signature, class names and sampling). Received: {one_line(error)}"
        ) from error
    classifier = VideoClassifier(saved_model_dir, serve_frames, class_names, sampling,
                                 serve_clips=serve_clips, features=features)
    classifier.loaded = loaded  # keeps the variables alive with the signature
    return classifier
