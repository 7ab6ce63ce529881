"""FLOPs of one compiled step, and the fastest these cores run the same convolutions.

count_conv_flops(concrete_function) walks the traced graph, keeps the ops the
step's outputs and updates depend on (what TensorFlow actually runs; dead
branches are pruned before execution) and adds up the multiply-adds of every
convolution and matrix product, grouped by convolution shape. conv_rate(...)
times one such convolution on a large batch, all cores: the best this machine
does on that shape. Together they bound a step from below: if every
convolution ran as one big batch at that speed, and nothing else took time.
"""
import time

import numpy as np

CONV_TYPES = ('Conv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter')
MATMUL_TYPES = ('MatMul', 'BatchMatMulV2', 'BatchMatMulV3')


def _live_ops(graph):
    """The ops the outputs and control outputs (the variable updates) depend on."""
    live, todo = {}, [t.op for t in graph.outputs] + list(graph.control_outputs)
    while todo:
        op = todo.pop()
        if op.name in live:
            continue
        live[op.name] = op
        todo.extend(t.op for t in op.inputs)
        todo.extend(op.control_inputs)
    return live.values()


def _size(shape):
    return int(np.prod(shape.as_list()))


def _conv_shapes(op):
    """(input, kernel, output) shapes of the forward convolution this op belongs to."""
    if op.type == 'Conv2D':
        return op.inputs[0].shape, op.inputs[1].shape, op.outputs[0].shape
    if op.type == 'Conv2DBackpropInput':
        return op.outputs[0].shape, op.inputs[1].shape, op.inputs[2].shape
    return op.inputs[0].shape, op.outputs[0].shape, op.inputs[2].shape


def conv_signature(op):
    """(op type, input height, in channels, out channels, stride) of a conv op."""
    x, kernel, _ = _conv_shapes(op)
    return (op.type, int(x[1]), int(kernel[2]), int(kernel[3]), int(op.get_attr('strides')[1]))


def conv_flops(op):
    """2 x multiply-adds: output elements times the kernel's receptive field."""
    _, kernel, out = _conv_shapes(op)
    return 2 * _size(out) * int(kernel[0]) * int(kernel[1]) * int(kernel[2])


def count_conv_flops(concrete_function):
    """{'total': FLOPs, 'by_conv': {signature: FLOPs}, 'ops': {type: count}} of one call."""
    total, by_conv, ops = 0, {}, {}
    for op in _live_ops(concrete_function.graph):
        if op.type in CONV_TYPES:
            flops = conv_flops(op)
            key = conv_signature(op)
            by_conv[key] = by_conv.get(key, 0) + flops
        elif op.type in MATMUL_TYPES:
            a, out = op.inputs[0].shape, op.outputs[0].shape
            transposed = op.get_attr('adj_x' if op.type.startswith('Batch') else 'transpose_a')
            flops = 2 * _size(out) * int(a[-2] if transposed else a[-1])
        else:
            continue
        total += flops
        ops[op.type] = ops.get(op.type, 0) + 1
    return {'total': total, 'by_conv': by_conv, 'ops': ops}


def conv_rate(signature, min_flops=2e9, repeats=5, dtype='float32'):
    """GFLOP/s of one convolution of this signature on a batch of >= min_flops work.

    dtype='bfloat16' times the same convolution in bfloat16 (oneDNN's kernels
    on CPUs with AVX-512 BF16): the ceiling a reduced-precision path could reach.
    """
    import tensorflow as tf
    kind, height, cin, cout, stride = signature
    strides = [1, stride, stride, 1]
    out_height = -(-height // stride)
    batch = max(1, int(min_flops / (2 * out_height * out_height * cout * 9 * cin)))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, height, height, cin)), dtype)
    kernel = tf.constant(rng.standard_normal((3, 3, cin, cout)), dtype)
    dy = tf.constant(rng.standard_normal((batch, out_height, out_height, cout)), dtype)
    if kind == 'Conv2D':
        run = tf.function(lambda: tf.nn.conv2d(x, kernel, strides, 'SAME'))
    elif kind == 'Conv2DBackpropInput':
        run = tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, strides=strides,
            padding='SAME'))
    else:
        run = tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=tf.shape(kernel), out_backprop=dy, strides=strides,
            padding='SAME'))
    flops = 2 * batch * out_height * out_height * cout * 9 * cin
    for _ in range(2):
        run().numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run().numpy()
        times.append(time.perf_counter() - start)
    return flops / float(np.median(times)) / 1e9
