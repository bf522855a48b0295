"""`lgd3d` and `lgd2d`: the LGD-3D / LGD-2D models of the paper (Sec. 4, Table 1)."""

import warnings

from absl import logging

from lgd_tf.models.backbone import LGD2DBackbone, LGD3DBackbone, _Backbone
from lgd_tf.models.classifier import LGDClassifier
from lgd_tf.models.inflation import inflate_backbone, load_keras_resnet
from lgd_tf.models.saving import load_model_safely


def lgd3d(depth=50, num_classes=400, *, head="stage2", num_frames=16, input_channels=3,
          long_clip=False, use_lgd=True, variant="lgd", rank_ratio=16, stage_blocks=None,
          base_filters=64, zero_init_global_residual=None, sketch_dim=8192,
          sketch_signed_sqrt_l2=True, weights=None, inflate_from=None, name="lgd3d"):
    """LGD-3D (Sec. 4.2, Table 1) on raw clips `(B, num_frames, H, W, input_channels)`.

    Args:
        depth: 50, 101 or 152 (ResNet depth table), unless `stage_blocks` is given.
        num_classes: K.
        head: "stage1" (Eq. 6 heads), "stage2" (Eq. 4-5 classifier) or None (the backbone
            alone, outputs {"local", "global", "res2".."res5"}).
        num_frames: clip length T (16; 128 with `long_clip=True` for the Long setting).
        input_channels: 3 for RGB, 2 for flow.
        long_clip: pool1 temporal stride 4 instead of 2 (Sec. 5.4).
        use_lgd: False gives the P3D baseline of Table 2.
        variant: "lgd", "v1" (Eq. 8) or "v2" (Eq. 9).
        rank_ratio: C / C-hat of the low-rank projections (16).
        stage_blocks: units per stage, e.g. (1, 1, 1, 1) for tiny models.
        base_filters: width of conv1 and res2 (64); stage s has base_filters * 2^(s-2)
            bottleneck filters and 4x as many outputs.
        zero_init_global_residual: W^{x,g} = 0 at init. None (default) follows Sec. 5.2:
            zero with `inflate_from` (the global residual vanishes when training begins),
            Glorot from scratch (every W Glorot). True / False force either. For
            `variant="v2"` see `LGDBlock`: zero W^{x,g} means a 0.5 gate everywhere.
        sketch_dim: Tensor Sketch dimension d of the stage-2 head.
        sketch_signed_sqrt_l2: signed square root and L2 normalisation of the Eq. 5 features
            (default True). The paper does not say how its features are normalised; the
            Tensor Sketch it uses (Gao et al. 2016, "Compact Bilinear Pooling") follows the
            bilinear CNN of Lin et al. 2015 and applies both before the classifier. Without
            them the Eq. 5 features of an initialised network give logits of 35-50 and a
            first stage-2 cross-entropy of 10-57 (tests/models/test_stage2_start.py).
            False gives the bare Eq. 5 features.
        weights: path of a trained lgd model (.keras or .weights.h5): backbone weights always,
            head weights only where they fit (same num_classes and head).
        inflate_from: Sec. 5.2 initialisation from a 2-D ImageNet ResNet of the same depth:
            a `keras.applications` ResNet50/101/152 weights file (.h5 / .weights.h5), or
            "imagenet" to let `keras.applications` download them (needs internet). Spatial
            kernels and BatchNorms are copied, temporal kernels start as the identity; the
            inflated net computes the 2-D net per frame in inference mode only
            (`lgd_tf.models.inflate_backbone`).
        name: model name.
    """
    zero_init_global_residual = _zero_init(zero_init_global_residual, inflate_from)
    backbone = LGD3DBackbone(
        depth=depth, stage_blocks=stage_blocks, base_filters=base_filters,
        num_frames=num_frames, input_channels=input_channels, long_clip=long_clip,
        use_lgd=use_lgd, variant=variant, rank_ratio=rank_ratio,
        zero_init_global_residual=zero_init_global_residual,
        name="backbone" if head is not None else name)
    return _finish(backbone, num_classes, head, sketch_dim, sketch_signed_sqrt_l2, weights,
                   inflate_from, depth, name)


def lgd2d(depth=50, num_classes=400, *, num_segments=3, head="stage2", input_channels=3,
          use_lgd=True, variant="lgd", rank_ratio=16, stage_blocks=None, base_filters=64,
          zero_init_global_residual=None, sketch_dim=8192, sketch_signed_sqrt_l2=True,
          weights=None, inflate_from=None, name="lgd2d"):
    """LGD-2D (Sec. 4.1) on `(B, num_segments, H, W, input_channels)`, one frame per segment.

    `use_lgd=False` gives the TSN baseline. Other arguments as `lgd3d`.
    """
    zero_init_global_residual = _zero_init(zero_init_global_residual, inflate_from)
    backbone = LGD2DBackbone(
        depth=depth, stage_blocks=stage_blocks, base_filters=base_filters,
        num_frames=num_segments, input_channels=input_channels, use_lgd=use_lgd,
        variant=variant, rank_ratio=rank_ratio,
        zero_init_global_residual=zero_init_global_residual,
        name="backbone" if head is not None else name)
    return _finish(backbone, num_classes, head, sketch_dim, sketch_signed_sqrt_l2, weights,
                   inflate_from, depth, name)


def _zero_init(zero_init_global_residual, inflate_from):
    """Sec. 5.2: W^{x,g} = 0 with ImageNet initialisation, Glorot from scratch."""
    if zero_init_global_residual is None:
        return inflate_from is not None
    return bool(zero_init_global_residual)


def _finish(backbone, num_classes, head, sketch_dim, sketch_signed_sqrt_l2, weights,
            inflate_from, depth, name):
    if inflate_from is not None:
        inflate_backbone(backbone, load_keras_resnet(inflate_from, depth),
                         zero_global_residual=backbone.zero_init_global_residual)
    if head is None:
        model = backbone
    else:
        model = LGDClassifier(backbone, num_classes, head=head, sketch_dim=sketch_dim,
                              sketch_signed_sqrt_l2=sketch_signed_sqrt_l2, name=name)
    if weights is not None:
        load_lgd_weights(model, weights)
    return model


def _backbone_of(model):
    return model if isinstance(model, _Backbone) else model.get_layer("backbone")


def load_lgd_weights(model, path):
    """Load a trained lgd model's weights into `model` (backbone always, head where it fits).

    `.keras`: the saved model is loaded, its backbone copied (same architecture required)
    and every head layer with the same name and weight shapes copied too. `.weights.h5`:
    `load_weights` with mismatched layers (e.g. another num_classes) skipped.
    """
    path = str(path)
    if path.endswith(".weights.h5"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(path, skip_mismatch=True)
        if caught:
            logging.info("Layers of %s that did not fit were skipped (e.g. another head).", path)
        return model
    if not path.endswith(".keras"):
        raise ValueError(f"`weights` must be a .keras or .weights.h5 file. Received: {path}")
    source = load_model_safely(path)  # even if the process enabled unsafe deserialization
    src_backbone, dst_backbone = _backbone_of(source), _backbone_of(model)
    src_weights = src_backbone.get_weights()
    dst_shapes = [tuple(w.shape) for w in dst_backbone.weights]
    if [w.shape for w in src_weights] != dst_shapes:
        raise ValueError(
            f"The backbone in {path} does not match this model's backbone (depth, widths, "
            "use_lgd, variant and input_channels must agree).")
    dst_backbone.set_weights(src_weights)
    if model is dst_backbone or source is src_backbone:
        return model
    source_layers = {layer.name: layer for layer in source.layers}
    for layer in model.layers:
        if layer is dst_backbone or not layer.weights or layer.name not in source_layers:
            continue
        src = source_layers[layer.name].get_weights()
        if [w.shape for w in src] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(src)
    return model
