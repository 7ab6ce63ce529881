"""Layers and losses, shared by the networks and the algorithm.

Every tensor here is batched over tasks: axis 0 is the task of the meta-batch,
axis 1 the example within the task. Statistics (batch norm) are per task, so a
whole meta-batch runs as one set of ops while each task sees only its own data.
"""
import numpy as np
import tensorflow as tf

BATCH_NORM_EPSILON = 1e-3   # tf.contrib.layers.batch_norm's default
LAYER_NORM_EPSILON = 1e-12  # tf.contrib.layers.layer_norm's default


def _mean_and_variance(x, axes):
    # Written out instead of tf.nn.moments: moments stops the gradient through
    # its shift, which leaves first derivatives right but second ones wrong.
    mean = tf.reduce_mean(x, axes, keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axes, keepdims=True)
    return mean, variance


def _affine_normalize(x, mean, variance, epsilon, offset, scale=None):
    # The same arithmetic as tf.nn.batch_normalization, which both reference
    # norms called: x * inv + (offset - mean * inv), inv = scale / sqrt(var + eps).
    inv = tf.math.rsqrt(variance + epsilon)
    if scale is not None:
        inv = inv * scale
    return x * inv + (offset - mean * inv)


def normalize(inp, norm, params, activation=tf.nn.relu, fused=False):
    """Normalise then activate, as the reference's tf.contrib.layers calls did.

    inp: [tasks, examples, ...features]. params: dict with 'beta' (and 'gamma'
    for layer norm), shared [channels] or per task [tasks, channels], or None.
    Batch norm always uses the statistics of the current task's batch (training
    mode, also at test time), with an offset and no scale; layer norm
    normalises each example over all its features.
    fused: batch norm of images with TensorFlow's fused kernel, task by task.
    Its first derivatives are exact and much cheaper, but its second
    derivatives are not those of the written-out form (they miss the golden
    tolerances), so it is only for steps that never differentiate twice.
    """
    if norm == 'batch_norm' and fused and inp.shape.rank == 5:
        betas = params['beta']
        betas = tf.unstack(betas) if betas.shape.rank == 2 else [betas] * inp.shape[0]
        out = tf.stack([tf.compat.v1.nn.fused_batch_norm(
            x, tf.ones_like(beta), beta, epsilon=BATCH_NORM_EPSILON, is_training=True)[0]
            for x, beta in zip(tf.unstack(inp), betas)])
        return activation(out) if activation is not None else out
    if params is not None and params['beta'].shape.rank == 2:
        # One offset (and scale) per task [tasks, channels] (Reptile's inner
        # loop trains them): broadcast over the examples and spatial axes.
        params = {k: tf.reshape(p, tf.concat([tf.shape(p)[:1], [1] * (inp.shape.rank - 2),
                                              tf.shape(p)[1:]], 0))
                  for k, p in params.items()}
    if norm == 'batch_norm':
        axes = list(range(1, inp.shape.rank - 1))  # examples and spatial axes
        mean, variance = _mean_and_variance(inp, axes)
        out = _affine_normalize(inp, mean, variance, BATCH_NORM_EPSILON, params['beta'])
    elif norm == 'layer_norm':
        axes = list(range(2, inp.shape.rank))  # every axis of one example
        mean, variance = _mean_and_variance(inp, axes)
        out = _affine_normalize(inp, mean, variance, LAYER_NORM_EPSILON, params['beta'],
                                params['gamma'])
    elif norm == 'None':
        out = inp
    else:
        raise ValueError('unknown norm %r (use batch_norm, layer_norm or None)' % (norm,))
    return activation(out) if activation is not None else out


def batched_dense(x, w, b):
    """x [T, n, i] with per-task w [T, i, o] and b [T, o] (or shared w [i, o], b [o])."""
    if w.shape.rank == 2:
        return tf.matmul(x, w) + b
    return tf.matmul(x, w) + b[:, None, :]


def _fold(x):
    """[T, n, ...] -> [T * n, ...]: the tasks' examples as one batch."""
    return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))


def _unfold(y, like):
    """[T * n, ...] -> [T, n, ...], T and n taken from `like`."""
    return tf.reshape(y, tf.concat([tf.shape(like)[:2], tf.shape(y)[1:]], 0))


def batched_conv2d(x, kernel, strides, identical_kernels=False):
    """x [T, n, h, w, c] convolved with each task's own kernel [T, 3, 3, c, f].

    A shared kernel [3, 3, c, f] convolves all tasks' examples as one batch.
    identical_kernels: the per-task kernels are copies of one kernel (the
    first inner step, before any task has adapted); see _conv_copies.
    """
    if kernel.shape.rank == 4:
        return _unfold(tf.nn.conv2d(_fold(x), kernel, strides, 'SAME'), x)
    if identical_kernels:
        return _conv_copies(x, kernel, strides)
    # unstack/stack rather than indexing: the gradient of x[i] is a full-size
    # tensor per task, which made the backward pass quadratic in the tasks.
    outs = [tf.nn.conv2d(xi, ki, strides, 'SAME')
            for xi, ki in zip(tf.unstack(x), tf.unstack(kernel))]
    return tf.stack(outs)


def _conv_copies(x, kernels, strides):
    """Per-task convolution whose kernels [T, ...] are all equal, at the cost of one.

    The forward pass and the gradient with respect to x use kernels[0] on the
    whole meta-batch at once (one large convolution instead of T small ones);
    only the kernel gradient is computed task by task, as each task's inner
    step needs its own. Every op of the gradient is differentiable, so the
    meta-gradient (second order) is exact: paths through kernels[0] reach the
    shared kernel the copies were made from, as the copies' would.
    """
    @tf.custom_gradient
    def conv(x, kernels):
        kernel = kernels[0]
        flat_x = _fold(x)
        def grad(dy):
            flat_dy = _fold(dy)
            dx = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(flat_x), filter=kernel, out_backprop=flat_dy,
                strides=strides, padding='SAME')
            dk = tf.stack([tf.raw_ops.Conv2DBackpropFilter(
                input=xi, filter_sizes=tf.shape(kernel), out_backprop=dyi, strides=strides,
                padding='SAME') for xi, dyi in zip(tf.unstack(x), tf.unstack(dy))])
            return _unfold(dx, x), dk
        return _unfold(tf.nn.conv2d(flat_x, kernel, strides, 'SAME'), x), grad
    return conv(x, kernels)


def conv_block(inp, kernel, bias, norm, norm_params, max_pool, identical_kernels=False,
               fused_norm=False):
    """3x3 SAME conv (stride 2, or stride 1 then 2x2 max pool) -> norm -> ReLU."""
    strides = [1, 1, 1, 1] if max_pool else [1, 2, 2, 1]
    conv = batched_conv2d(inp, kernel, strides, identical_kernels)
    if bias.shape.rank == 2:
        bias = bias[:, None, None, None, :]
    out = normalize(conv + bias, norm, norm_params, fused=fused_norm)
    if max_pool:
        shape = tf.shape(out)
        pooled = tf.nn.max_pool2d(tf.reshape(out, tf.concat([[-1], shape[2:]], 0)),
                                  2, 2, 'VALID')
        out = tf.reshape(pooled, tf.concat([shape[:2], tf.shape(pooled)[1:]], 0))
    return out


def mse(pred, label):
    """Mean squared error of each task: [T, n, d] -> [T]."""
    return tf.reduce_mean(tf.square(pred - label), axis=[1, 2])


def xent(pred, label, update_batch_size):
    """Softmax cross-entropy of each example divided by K: [T, n, c] -> [T, n]."""
    return tf.nn.softmax_cross_entropy_with_logits(labels=label, logits=pred) / update_batch_size


def accuracy(pred, label):
    """Fraction of each task's examples whose argmax matches: [T, n, c] -> [T]."""
    hits = tf.equal(tf.argmax(pred, -1), tf.argmax(label, -1))
    return tf.reduce_mean(tf.cast(hits, tf.float32), axis=1)


def truncated_normal(shape, stddev, rng):
    """Normal resampled beyond two standard deviations, like tf.truncated_normal."""
    return tf.random.stateless_truncated_normal(shape, _seed(rng), stddev=stddev)


def glorot_uniform(shape, rng):
    """Glorot/Xavier uniform; for conv kernels fans count the receptive field."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return tf.random.stateless_uniform(shape, _seed(rng), -limit, limit)


def standard_normal(shape, rng):
    return tf.random.stateless_normal(shape, _seed(rng))


def _seed(rng):
    # Stateless ops draw from a seed pair taken from the caller's numpy
    # Generator, so one --seed fixes every initial value.
    return tf.constant(rng.integers(0, 2 ** 31 - 1, size=2), dtype=tf.int32)
