"""Precise BatchNorm statistics: population mean / variance re-estimated over training batches.

The moving averages a BatchNorm keeps during training lag the weights (momentum 0.9-0.99), so
a model that has just learned something can still score at chance in inference mode. As
PySlowFast (`BN.USE_PRECISE_STATS`, after Wu & Johnson 2021, "Rethinking Batch in
BatchNorm"), `recompute_batch_norm_statistics` runs N training batches forward with every
BatchNorm normalising by the statistics of the batch it sees, and sets each layer's moving
mean to the mean of its batch means and its moving variance to the mean of its (biased)
batch variances. Everything else runs in inference mode (`training=False`: no dropout, no
other state changes). Under a `tf.distribute` strategy the statistics of every batch are
those of the GLOBAL batch (the replicas' moments are all-reduced, as a synchronised
BatchNorm does), so the result does not depend on the number of replicas.
"""

import weakref

import keras
import tensorflow as tf
from keras import ops

# model -> (strategy, traced forward pass, per-layer sums): repeated calls (an evaluation
# curve) reuse one trace instead of tracing the model again each time.
_CACHE = weakref.WeakKeyDictionary()


def batch_norm_layers(model):
    """Every `keras.layers.BatchNormalization` in `model` (nested models and layers too)."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def _global_moments(x, axes):
    """Mean and biased variance over `axes` of the global batch (all replicas)."""
    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    count = ops.cast(ops.prod(ops.take(ops.shape(x), axes)), "float32")
    total = ops.sum(x, axis=axes)
    if replicas > 1:
        count, total = context.all_reduce(tf.distribute.ReduceOp.SUM, [count, total])
    mean = total / count
    shape = [1] * len(x.shape)
    shape[-1] = -1
    squares = ops.sum(ops.square(x - ops.reshape(mean, shape)), axis=axes)
    if replicas > 1:
        squares = context.all_reduce(tf.distribute.ReduceOp.SUM, squares)
    return mean, squares / count


def _batch_statistics_call(layer, sums):
    """A replacement for `layer.call` that normalises by batch statistics and adds them up."""
    def call(inputs, training=None, mask=None):
        del training, mask
        x = ops.cast(inputs, "float32")
        axis = layer.axis % len(x.shape)
        x = ops.moveaxis(x, axis, -1)
        axes = tuple(range(len(x.shape) - 1))
        mean, variance = _global_moments(x, axes)
        sums[0].assign_add(mean)
        sums[1].assign_add(variance)
        y = (x - mean) * ops.rsqrt(variance + layer.epsilon)
        if layer.scale:
            y = y * ops.cast(layer.gamma, "float32")
        if layer.center:
            y = y + ops.cast(layer.beta, "float32")
        return ops.cast(ops.moveaxis(y, -1, axis), layer.compute_dtype)
    return call


def recompute_batch_norm_statistics(model, dataset, num_batches=200, *, strategy=None):
    """Sets every BatchNorm's moving statistics to the population statistics of N batches.

    Args:
        model: a built Keras model (created under `strategy.scope()` when a strategy is
            given); its outputs are ignored.
        dataset: a `tf.data.Dataset` of `(clips, labels)` (or of clips) GLOBAL batches, e.g.
            the training pipeline without shuffling-dependent state; a strategy splits each
            batch over its replicas.
        num_batches: how many batches to use (fewer if the dataset ends first); PySlowFast
            uses 200.
        strategy: an optional `tf.distribute.Strategy`.

    Returns:
        The number of batches used. Each moving mean becomes the mean over those batches of
        the batch means, each moving variance the mean of the biased batch variances.

    Raises:
        ValueError: the dataset gave no batch, or `num_batches` < 1 (nothing is changed).
    """
    if int(num_batches) < 1:
        raise ValueError(f"`num_batches` must be >= 1. Received: {num_batches}")
    strategy = strategy or tf.distribute.get_strategy()
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    cached = _CACHE.get(model)
    if cached is None or cached[0] is not strategy or len(cached[2]) != len(layers):
        with strategy.scope():
            sums = [[tf.Variable(tf.zeros(layer.moving_mean.shape), trainable=False,
                                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                     for _ in range(2)] for layer in layers]

        model_ref = weakref.ref(model)  # the cache must not keep the model alive

        @tf.function(reduce_retracing=True)
        def forward(clips):
            strategy.run(lambda c: model_ref()(c, training=False), args=(clips,))

        cached = _CACHE[model] = (strategy, forward, sums)
    _, forward, sums = cached
    for layer, layer_sums in zip(layers, sums, strict=True):
        for total in layer_sums:
            total.assign(tf.zeros_like(total))
        layer.call = _batch_statistics_call(layer, layer_sums)

    count = 0
    try:
        batches = dataset.take(int(num_batches))
        if strategy.num_replicas_in_sync > 1:
            # Global batches: each worker takes its share of every batch (its replicas'
            # parts), whatever the source (a file-based auto-shard may not apply).
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA)
            batches = strategy.experimental_distribute_dataset(batches.with_options(options))
        for batch in batches:
            forward(batch[0] if isinstance(batch, (tuple, list)) else batch)
            count += 1
    finally:
        for layer in layers:
            del layer.call
    if count == 0:
        raise ValueError("recompute_batch_norm_statistics: the dataset gave no batch.")
    for layer, (mean_sum, variance_sum) in zip(layers, sums, strict=True):
        layer.moving_mean.assign(ops.cast(mean_sum.value() / count, layer.moving_mean.dtype))
        layer.moving_variance.assign(
            ops.cast(variance_sum.value() / count, layer.moving_variance.dtype))
    return count
