"""Heads on an LGD backbone: stage-1 softmax heads (Eq. 6) and the Eq. 4-5 classifier."""

import keras
from keras import ops

from lgd_tf.layers import LocalGlobalSketch

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
    """

    def __init__(self, backbone, num_classes, head="stage2", sketch_dim=8192, sketch_seed=0,
                 sketch_signed_sqrt_l2=True, **kwargs):
        if head not in HEADS:
            raise ValueError(f"`head` must be one of {HEADS} or None. Received: {head!r}")
        if int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be positive. Received: {num_classes}")
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
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
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


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
