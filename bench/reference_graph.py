"""The reference's meta-training step as the reference built it, for side-by-side speed.

The speed targets are ratios to the original TF1 program. Absolute speeds on a
shared machine move between hosts and days, so a ratio is only honest when
both programs are timed in the same run. This module rebuilds the reference's
computation from the specification in TF1 style (tf.compat.v1 graph, one
session, feed_dict):

- the tasks of a meta-batch go through `tf.map_fn` (a while loop,
  parallel_iterations = meta batch size), each task with its own convolutions;
- the graph unrolls max(num_updates, test_num_updates) inner steps, though
  only step `num_updates` feeds the meta-gradient (when only the training op
  is fetched, TensorFlow prunes the others: 1 or 10 unrolled steps measured
  the same speed);
- batch norm through TensorFlow's fused kernel (`fused_batch_norm=True`, what
  the original program runs: tf_slim's batch_norm picks it; the benchmark's
  default), or written out (the default here, as the golden files were made:
  the exactness fix);
- Adam (TF1) on the split-b loss after `num_updates` steps, clipped to
  [-10, 10] for MiniImagenet.

It reads no data files: the batch is fed from numpy on every iteration (the
reference's queue-based image pipeline could only make it slower, so the
ratios measured against this are, if anything, too low). `check_golden` runs it
on a golden file to show it computes what the reference computed.
"""
import numpy as np


def build_reference_step(config, init=None, test_num_updates=None, fused_batch_norm=False,
                         clip=True):
    """Graph, session and the ops of one reference meta-training iteration.

    Returns (session, placeholders (inputa, inputb, labela, labelb), train_op,
    fetches dict). init: optional dict TF1 name -> value for the variables.
    fused_batch_norm: TensorFlow's fused kernel, as TF1 releases after 1.0 picked
    for tf.contrib.layers.batch_norm (faster; wrong second derivatives inside
    map_fn). clip: MiniImagenet's [-10, 10] gradient clipping.
    """
    import tensorflow.compat.v1 as tf1

    if config.norm != ('None' if config.datasource == 'sinusoid' else 'batch_norm') or (
            config.datasource != 'sinusoid' and not config.conv):
        raise ValueError('the reference graph is written for the paper\'s networks only: '
                         'sinusoid with --norm=None, conv nets with batch_norm')
    graph = tf1.Graph()
    with graph.as_default():
        if test_num_updates is None:
            test_num_updates = config.test_num_updates
        steps = max(config.num_updates, test_num_updates)
        weights, norm_offsets = _reference_variables(tf1, config)
        placeholders = [tf1.placeholder(tf1.float32, name=n)
                        for n in ('inputa', 'inputb', 'labela', 'labelb')]
        classification = config.datasource != 'sinusoid'

        def forward(inp, w):
            if not classification:
                hidden = inp
                for i in (1, 2):
                    hidden = tf1.matmul(hidden, w['w%d' % i]) + w['b%d' % i]
                    hidden = tf1.nn.relu(hidden)
                return tf1.matmul(hidden, w['w3']) + w['b3']
            size, channels = config.img_size, config.channels
            hidden = tf1.reshape(inp, [-1, size, size, channels])
            for i in range(1, 5):
                stride = [1, 1, 1, 1] if config.max_pool else [1, 2, 2, 1]
                hidden = tf1.nn.conv2d(hidden, w['conv%d' % i], stride, 'SAME') + w['b%d' % i]
                if fused_batch_norm:
                    hidden, _, _ = tf1.nn.fused_batch_norm(
                        hidden, tf1.ones([config.num_filters]), norm_offsets[i - 1],
                        epsilon=1e-3, is_training=True)
                    hidden = tf1.nn.relu(hidden)
                else:
                    mean = tf1.reduce_mean(hidden, [0, 1, 2], keepdims=True)
                    variance = tf1.reduce_mean(tf1.square(hidden - mean), [0, 1, 2],
                                               keepdims=True)
                    hidden = tf1.nn.relu((hidden - mean) * tf1.rsqrt(variance + 1e-3)
                                         + norm_offsets[i - 1])
                if config.max_pool:
                    hidden = tf1.nn.max_pool(hidden, [1, 2, 2, 1], [1, 2, 2, 1], 'VALID')
            if config.datasource == 'miniimagenet':
                hidden = tf1.reshape(hidden, [-1, int(np.prod(hidden.shape[1:]))])
            else:
                hidden = tf1.reduce_mean(hidden, [1, 2])
            return tf1.matmul(hidden, w['w5']) + w['b5']

        def loss(pred, label):
            if classification:
                return tf1.nn.softmax_cross_entropy_with_logits(
                    labels=label, logits=pred) / config.update_batch_size
            return tf1.reduce_mean(tf1.square(pred - label))

        def task_metalearn(task):
            inputa, inputb, labela, labelb = task
            keys = list(weights)
            fast = dict(weights)
            lossa, lossesb = None, []
            for step in range(steps):
                step_loss = loss(forward(inputa, fast), labela)
                if step == 0:
                    lossa = step_loss
                grads = tf1.gradients(step_loss, [fast[k] for k in keys])
                if config.stop_grad:
                    grads = [tf1.stop_gradient(g) for g in grads]
                fast = {k: fast[k] - config.update_lr * g for k, g in zip(keys, grads)}
                lossesb.append(loss(forward(inputb, fast), labelb))
            return [lossa] + lossesb

        out = tf1.map_fn(task_metalearn, elems=tuple(placeholders),
                         dtype=[tf1.float32] * (steps + 1),
                         parallel_iterations=config.meta_batch_size)
        mbs = float(config.meta_batch_size)
        total_loss1 = tf1.reduce_sum(out[0]) / mbs
        total_losses2 = [tf1.reduce_sum(l) / mbs for l in out[1:]]
        objective = total_losses2[config.num_updates - 1]
        optimizer = tf1.train.AdamOptimizer(config.meta_lr)
        variables = list(weights.values()) + norm_offsets
        grads_and_vars = optimizer.compute_gradients(objective, variables)
        if config.datasource == 'miniimagenet' and clip:
            grads_and_vars = [(tf1.clip_by_value(g, -10., 10.), v) for g, v in grads_and_vars]
        train_op = optimizer.apply_gradients(grads_and_vars)
        session = tf1.Session(graph=graph)
        session.run(tf1.global_variables_initializer())
        if init:
            for var in variables:
                var.load(init[var.op.name], session)
    fetches = {'total_loss1': total_loss1, 'total_losses2': total_losses2,
               'metagrads': {v.op.name: g for g, v in grads_and_vars if g is not None}}
    return session, placeholders, train_op, fetches


def _reference_variables(tf1, config):
    """Weights dict (fast-weight keys) and norm offsets, under the reference's TF1 names."""
    init = tf1.glorot_uniform_initializer()
    dim_input, dim_output, channels = config.dim_input, config.dim_output, config.channels
    weights, norm_offsets = {}, []
    with tf1.variable_scope('model'):
        if config.datasource == 'sinusoid':
            dims = [dim_input, 40, 40, dim_output]
            for i in range(3):
                weights['w%d' % (i + 1)] = tf1.Variable(
                    tf1.truncated_normal(dims[i:i + 2], stddev=0.01))
                weights['b%d' % (i + 1)] = tf1.Variable(tf1.zeros([dims[i + 1]]))
        else:
            sizes = [channels] + [config.num_filters] * 4
            for i in range(4):
                weights['conv%d' % (i + 1)] = tf1.get_variable(
                    'conv%d' % (i + 1), [3, 3, sizes[i], sizes[i + 1]], initializer=init)
                weights['b%d' % (i + 1)] = tf1.Variable(tf1.zeros([config.num_filters]))
            for i in range(4):
                with tf1.variable_scope(str(i)):
                    norm_offsets.append(tf1.get_variable(
                        'beta', [config.num_filters], initializer=tf1.zeros_initializer()))
            if config.datasource == 'miniimagenet':
                features = config.num_filters * 5 * 5
                weights['w5'] = tf1.get_variable('w5', [features, dim_output], initializer=init)
            else:
                weights['w5'] = tf1.Variable(tf1.random_normal([config.num_filters, dim_output]),
                                             name='w5')
            weights['b5'] = tf1.Variable(tf1.zeros([dim_output]), name='b5')
    return weights, norm_offsets


def check_golden(path, fused_batch_norm=False, stop_grad=None):
    """Largest relative differences from a golden file's losses and meta-gradients.

    fused_batch_norm, stop_grad: run the reference graph another way than the
    golden file was made (TensorFlow's fused kernel; first order), to measure
    how far that lands from it. Also returns each meta-gradient's cosine with
    the golden one ('cosines', by variable name).
    """
    import json

    from config import Config

    golden = np.load(path)
    flags = json.loads(str(golden['flags_json']))
    overrides = {} if stop_grad is None else {'stop_grad': stop_grad}
    config = Config.from_dict(flags, **overrides)
    init = {n: golden['init/' + n] for n in golden['var_names']}
    session, placeholders, _, fetches = build_reference_step(
        config, init, test_num_updates=config.num_updates, fused_batch_norm=fused_batch_norm)
    feed = dict(zip(placeholders, [golden[k] for k in ('inputa', 'inputb', 'labela', 'labelb')]))
    got = session.run(fetches, feed)

    # Relative to the largest value of the whole gradient: the conv biases'
    # gradients are ~0 (batch norm removes them) and only their rounding is left.
    scale = max(float(np.max(np.abs(golden['metagrad/' + n]))) for n in got['metagrads'])

    def cosine(a, b):
        return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))
    return {'total_losses2': float(np.max(np.abs(np.subtract(got['total_losses2'],
                                                             golden['total_losses2'])))
                                   / np.max(np.abs(golden['total_losses2']))),
            'metagrads': max(float(np.max(np.abs(g - golden['metagrad/' + n]))) / scale
                             for n, g in got['metagrads'].items()),
            'cosines': {n: cosine(g, golden['metagrad/' + n]) for n, g in got['metagrads'].items()}}
