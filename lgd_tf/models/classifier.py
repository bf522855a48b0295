"""Heads on an LGD backbone: stage-1 softmax heads (Eq. 6) and the Eq. 4-5 classifier."""

import json

import keras
from keras import ops

from lgd_tf.layers import LocalGlobalSketch, arguments

HEADS = ("stage1", "stage2")


@keras.saving.register_keras_serializable(package="lgd_tf")
class LGDClassifier(keras.Model):
    """An LGD backbone (nested sub-model "backbone") and a classification head.

    head="stage1" (Sec. 4.3, Eq. 6): `{"global": W_g g_L, "local": W_x P(x_L)}`.
    head="stage2" (Sec. 3.2, Eq. 4-5 and 7): `{"combined": W_c [mean_i TS(x_L^i), TS(g_L)]}`.
    Every output is a float32 logit tensor `(B, num_classes)`; `class_probabilities` turns
    either dict into probabilities.

    Args:
        backbone: an `LGD3DBackbone` or `LGD2DBackbone` (its name becomes "backbone").
        num_classes: K.
        head: "stage1" or "stage2".
        sketch_dim: output dimension d of the Tensor Sketch (stage 2).
        sketch_seed: seed of the Tensor Sketch hashes and signs.
        sketch_signed_sqrt_l2: signed square root + L2 normalisation of the Eq. 5 features, as
            the Tensor Sketch reference does (Gao et al. 2016, after Lin et al. 2015); the
            paper does not say. On by default; see `lgd_tf.models.lgd3d`.
        video_spec: what the model's input is and how a video is sampled for it (a dict:
            model_type, num_frames, crop_size, modality and the evaluation sampling "eval";
            `lgd_tf.runs.run_folder` writes it), kept in the model's config so a `.keras`
            file carries it; None for models made outside a training run.
    """

    def __init__(self, backbone, num_classes, head="stage2", sketch_dim=8192, sketch_seed=0,
                 sketch_signed_sqrt_l2=True, video_spec=None, **kwargs):
        arguments.check_one_of("head", head, HEADS, allowed=f"{HEADS} or None")
        arguments.check_at_least_one("num_classes", num_classes, wording="positive")
        backbone = arguments.deserialized(backbone)
        if backbone.name != "backbone":
            raise ValueError(f"The backbone must be named 'backbone'. Received: {backbone.name}")
        inputs = keras.Input(backbone.input.shape[1:], name="pixels")
        features = backbone(inputs)
        if head == "stage1":
            pooled = keras.layers.GlobalAveragePooling3D(name="local_pool")(features["local"])
            outputs = {
                "global": keras.layers.Dense(num_classes, dtype="float32",
                                             name="global_logits")(features["global"]),
                "local": keras.layers.Dense(num_classes, dtype="float32",
                                            name="local_logits")(pooled),
            }
        else:
            phi = LocalGlobalSketch(sketch_dim, seed=sketch_seed,
                                    signed_sqrt_l2=sketch_signed_sqrt_l2,
                                    name="local_global_sketch")(
                [features["local"], features["global"]])
            outputs = {"combined": keras.layers.Dense(num_classes, dtype="float32",
                                                      name="combined_logits")(phi)}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.head = head
        self.sketch_dim = int(sketch_dim)
        self.sketch_seed = int(sketch_seed)
        self.sketch_signed_sqrt_l2 = bool(sketch_signed_sqrt_l2)
        self.video_spec = video_spec

    @property
    def video_spec(self):
        """The model's input spec and sampling (a new dict each time), or None."""
        return None if self._video_spec is None else json.loads(self._video_spec)

    @video_spec.setter
    def video_spec(self, spec):
        # Held as JSON text: Keras would track a dict attribute (and a copy keeps it frozen).
        self._video_spec = None if spec is None else json.dumps(spec, sort_keys=True)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "head": self.head,
            "sketch_dim": self.sketch_dim,
            "sketch_seed": self.sketch_seed,
            "sketch_signed_sqrt_l2": self.sketch_signed_sqrt_l2,
            "video_spec": self.video_spec,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def video_spec(model):
    """The input spec and sampling a model carries in its config (`LGDClassifier.video_spec`:
    set by training, read back from a `.keras` file), or None (a model saved before the spec
    was recorded, or made outside a training run)."""
    return getattr(model, "video_spec", None)


def class_probabilities(outputs):
    """Softmax probabilities `(B, K)` from a head's outputs dict.

    stage 1 (`{"global", "local"}` logits): mean of the two heads' softmax;
    stage 2 (`{"combined"}` logits): softmax of "combined".
    """
    if not isinstance(outputs, dict):
        raise ValueError(f"Expected a dict of logits. Received: {type(outputs).__name__}")
    if "combined" in outputs:
        return ops.softmax(ops.cast(outputs["combined"], "float32"), axis=-1)
    if set(outputs) == {"global", "local"}:
        return 0.5 * (ops.softmax(ops.cast(outputs["global"], "float32"), axis=-1)
                      + ops.softmax(ops.cast(outputs["local"], "float32"), axis=-1))
    raise ValueError(
        "Expected head outputs {'combined'} (stage 2) or {'global', 'local'} (stage 1). "
        f"Received keys: {sorted(outputs)}")
