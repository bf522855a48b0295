"""Initialisation from a 2-D ImageNet ResNet (Sec. 5.2).

Spatial kernels and BatchNorms are copied from a `keras.applications` ResNet50/101/152
weights file, temporal kernels start as the identity (with an identity BatchNorm), and
W^{x,g} is zero, so on a static clip every frame of the local path computes what the 2-D
ResNet computes on that frame (LGD-3D has no spatial max pool, Table 1) -- in inference mode
(`training=False`) only. In training mode every BatchNorm normalises with the batch's
statistics; the copied spatial ones see the same statistics as in the 2-D net, but the
temporal ones, whose moving statistics make them the identity, renormalise the identity
conv's output to zero mean and unit variance, so the local path differs from the 2-D net's
from the first temporal BatchNorm on (R50, 4-frame static clip: 0.56-0.97 relative error per
stage in training mode, < 1e-6 in inference mode; tests/models/test_inflation.py asserts > 0.1
and < 1e-4).

The Keras ResNets are Caffe-style: BGR input minus a per-channel mean, conv biases before
each BatchNorm. We reverse conv1's input channels to read RGB, set the backbone's pixel
normalisation to the same mean (std 1), and fold each conv bias into its BatchNorm's moving
mean, which is exact. Flow stems get the channel mean of conv1 (cross-modality
initialisation of TSN) and the normalisation `x - 128`.
"""

import keras
import numpy as np

KERAS_RESNETS = {
    50: keras.applications.ResNet50,
    101: keras.applications.ResNet101,
    152: keras.applications.ResNet152,
}
CAFFE_RGB_MEAN = (123.68, 116.779, 103.939)


def load_keras_resnet(path, depth):
    """The `keras.applications` ResNet of `depth` with the weights file at `path`.

    `path="imagenet"` passes `weights="imagenet"` to `keras.applications`, which downloads
    the ImageNet weights (internet needed; the tests can only check that this call is made).
    """
    if depth not in KERAS_RESNETS:
        raise ValueError(
            f"Inflation needs depth in {sorted(KERAS_RESNETS)}. Received: depth={depth}")
    builder = KERAS_RESNETS[depth]
    if str(path) == "imagenet":
        return builder(weights="imagenet", include_top=False, input_shape=(None, None, 3))
    try:
        return builder(weights=str(path), include_top=False, input_shape=(None, None, 3))
    except ValueError:
        return builder(weights=str(path), include_top=True)


def _unit(backbone, stage, block):
    name = f"res{stage}_block{block}"
    try:
        return backbone.get_layer(name).local_unit
    except ValueError:
        return backbone.get_layer(f"{name}_unit")


def _folded_bn(resnet, conv_name, bn_name):
    """Kernel and BatchNorm weights with the conv bias folded into the moving mean."""
    kernel, bias = resnet.get_layer(conv_name).get_weights()
    gamma, beta, mean, var = resnet.get_layer(bn_name).get_weights()
    return kernel, [gamma, beta, mean - bias, var]


def _set(layer, weights):
    expected = [tuple(w.shape) for w in layer.weights]
    received = [tuple(np.shape(w)) for w in weights]
    if expected != received:
        raise ValueError(
            f"Cannot inflate into {layer.name}: the 2-D ResNet has weights {received}, the "
            f"backbone expects {expected}. Check depth, base_filters and stage_blocks.")
    layer.set_weights(weights)


def _identity_temporal(conv, bn):
    kernel = np.zeros(conv.kernel.shape, "float32")
    center = kernel.shape[0] // 2
    index = (center,) + (0,) * (kernel.ndim - 3)
    kernel[index] = np.eye(kernel.shape[-1], dtype="float32")
    _set(conv, [kernel])
    n = kernel.shape[-1]
    # moving variance 1 - epsilon makes the inference-mode BatchNorm exactly the identity.
    _set(bn, [np.ones(n), np.zeros(n), np.zeros(n), np.full(n, 1.0 - bn.epsilon)])


def inflate_backbone(backbone, resnet, zero_global_residual=True):
    """Copy a 2-D Keras ResNet into an LGD backbone in place (Sec. 5.2).

    `zero_global_residual=True` (Sec. 5.2) sets W^{x,g} to zero in every LGD block; False
    keeps the backbone's initialisation of W^{x,g}.
    """
    for stage, blocks in zip((2, 3, 4, 5), backbone.blocks, strict=True):
        names = {layer.name for layer in resnet.layers}
        available = sum(f"conv{stage}_block{b}_1_conv" in names for b in range(1, 64))
        if available != blocks:
            raise ValueError(
                f"Stage res{stage} has {blocks} units but the 2-D ResNet has {available}.")

    kernel, bn = _folded_bn(resnet, "conv1_conv", "conv1_bn")
    if backbone.input_channels == 3:
        kernel = kernel[:, :, ::-1, :]
        mean = CAFFE_RGB_MEAN
    else:
        kernel = np.repeat(kernel.mean(axis=2, keepdims=True), backbone.input_channels, axis=2)
        mean = (128.0,) * backbone.input_channels
    _set(backbone.get_layer("conv1_spatial"), [kernel[None]])
    _set(backbone.get_layer("conv1_spatial_bn"), bn)
    normalization = backbone.get_layer("normalization")
    normalization.offset.assign(np.asarray(mean, "float32"))
    normalization.scale.assign(np.ones(len(mean), "float32"))
    if backbone.temporal:
        _identity_temporal(backbone.get_layer("conv1_temporal"),
                           backbone.get_layer("conv1_temporal_bn"))

    for stage, blocks in zip((2, 3, 4, 5), backbone.blocks, strict=True):
        for block in range(1, blocks + 1):
            unit = _unit(backbone, stage, block)
            prefix = f"conv{stage}_block{block}"
            pairs = [("conv_a", "bn_a", "1"), ("conv_s", "bn_s", "2"), ("conv_c", "bn_c", "3")]
            if unit._projection:
                pairs.append(("conv_p", "bn_p", "0"))
            for conv, bn, index in pairs:
                kernel, bn_weights = _folded_bn(resnet, f"{prefix}_{index}_conv",
                                                f"{prefix}_{index}_bn")
                _set(getattr(unit, conv), [kernel])
                _set(getattr(unit, bn), bn_weights)
            if backbone.temporal:
                _identity_temporal(unit.conv_t, unit.bn_t)
            if backbone.use_lgd and zero_global_residual:
                lgd = backbone.get_layer(f"res{stage}_block{block}")
                lgd.global_to_local.up.assign(np.zeros(lgd.global_to_local.up.shape, "float32"))
    return backbone
