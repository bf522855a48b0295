"""Backbones, heads and builders of LGD-3D and LGD-2D (Sec. 4, Table 1)."""

from lgd_tf.models.backbone import DEPTHS, LGD2DBackbone, LGD3DBackbone
from lgd_tf.models.builders import lgd2d, lgd3d, load_lgd_weights
from lgd_tf.models.classifier import LGDClassifier, class_probabilities, video_spec
from lgd_tf.models.inflation import inflate_backbone, load_keras_resnet

__all__ = [
    "DEPTHS",
    "LGD2DBackbone",
    "LGD3DBackbone",
    "LGDClassifier",
    "class_probabilities",
    "inflate_backbone",
    "lgd2d",
    "lgd3d",
    "load_keras_resnet",
    "load_lgd_weights",
    "video_spec",
]
