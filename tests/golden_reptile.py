"""An independent float64 Reptile that writes the golden Reptile step files.

Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning
Algorithms"), Algorithm 2, batched: for each task i of a meta-batch, `inner_iters`
steps of an inner optimiser (SGD, or Adam with beta1 = 0 and a fresh state per
task) on the task's mini-batches give W_i; then
    phi <- phi + epsilon * mean_i(W_i - phi),
epsilon annealed linearly from `meta_step` to `meta_step_final` over the run.

Written for the purpose and on purpose apart from the project: it imports none
of its model or algorithm modules (networks.py, maml.py, steps.py,
keras_network.py, utils.py). The networks are the reference's (fully connected
1-40-40-1 for sinusoid, 784-256-128-64-64-N for images without --conv, or four
blocks of 3x3 conv, norm, relu, and a dense layer), written here from their
definition, with the reference's TensorFlow 1 variable names. Gradients come
from tf.GradientTape on this module's own float64 forward pass.

`python tests/golden_reptile.py` rewrites tests/golden/r*.npz (the format is in
tests/golden/README.md, section 4); `--float32` instead replays each file in
float32 and prints how far that lands from the float64 numbers (the source of
the README's tolerances).
"""
import argparse
import json
import os
import sys

import numpy as np
import tensorflow as tf

FORMAT_VERSION = 1
ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.0, 0.999, 1e-8
BATCH_NORM_EPSILON = 1e-3   # tf.contrib.layers.batch_norm's default, as the reference
LAYER_NORM_EPSILON = 1e-12  # tf.contrib.layers.layer_norm's
INNER_LOSS = {'sinusoid': 'mse_mean', 'omniglot': 'softmax_xent_mean',
              'miniimagenet': 'softmax_xent_mean'}
IMAGE_SHAPE = {'omniglot': (28, 28, 1), 'miniimagenet': (84, 84, 3)}
GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden')


# ------------------------------------------------------------ the schedule
def annealed_meta_step(meta_step, meta_step_final, iteration, metatrain_iterations):
    """epsilon at 0-based `iteration`: linear from meta_step (iteration 0)
    towards meta_step_final (reached at iteration == metatrain_iterations), as
    the paper's code: frac = iteration / total."""
    frac = iteration / metatrain_iterations
    return frac * meta_step_final + (1 - frac) * meta_step


def minibatch_indices(num_samples, inner_batch, inner_iters, rng):
    """The paper's sampling without replacement: shuffle the task's samples, take
    consecutive inner_batch-sized chunks, reshuffle when they run out (a chunk
    may straddle two shuffles). -> int array [inner_iters, inner_batch]."""
    batches, current = [], []
    while True:
        for index in rng.permutation(num_samples):
            current.append(int(index))
            if len(current) == inner_batch:
                batches.append(current)
                current = []
                if len(batches) == inner_iters:
                    return np.array(batches, dtype=np.int64)


# ------------------------------------------------------------ the networks
def architecture(flags):
    """The reference's trainable variables in creation order:
    list of (TF1 name, weights key, shape). Keys are the reference's
    fast-weight keys (conv1, b1, ..., w5, b5 / w1, b1, ...); norm parameters
    get '<scope>/beta' and '<scope>/gamma'."""
    variables = []
    unnamed = [0]

    def next_unnamed():
        count = unnamed[0]
        unnamed[0] += 1
        return 'model/Variable' + ('_%d' % count if count else '')

    num_out = 1 if flags['datasource'] == 'sinusoid' else flags['num_classes']
    if is_conv(flags):
        height, width, channels = IMAGE_SHAPE[flags['datasource']]
        filters = flags['num_filters']
        for i in range(1, 5):
            variables.append(('model/conv%d' % i, 'conv%d' % i,
                              (3, 3, channels if i == 1 else filters, filters)))
            variables.append((next_unnamed(), 'b%d' % i, (filters,)))
        head = filters * final_spatial(height, flags) ** 2 if flattened_head(flags) else filters
        variables.append(('model/w5', 'w5', (head, num_out)))
        variables.append(('model/b5', 'b5', (num_out,)))
        norm_scopes, norm_sizes = ['0', '1', '2', '3'], [filters] * 4
    else:
        dims = [dim_input(flags)] + hidden_sizes(flags) + [num_out]
        for i in range(len(dims) - 1):
            variables.append((next_unnamed(), 'w%d' % (i + 1), (dims[i], dims[i + 1])))
            variables.append((next_unnamed(), 'b%d' % (i + 1), (dims[i + 1],)))
        # The reference's fc net names its norm scopes 0, 2, 3, ... (no 1).
        norm_scopes = ['0'] + [str(i + 1) for i in range(1, len(dims) - 2)]
        norm_sizes = dims[1:-1]
    if flags['norm'] in ('batch_norm', 'layer_norm'):
        for scope, size in zip(norm_scopes, norm_sizes):
            variables.append(('model/%s/beta' % scope, '%s/beta' % scope, (size,)))
            if flags['norm'] == 'layer_norm':
                variables.append(('model/%s/gamma' % scope, '%s/gamma' % scope, (size,)))
    return variables


def is_conv(flags):
    return flags['datasource'] != 'sinusoid' and flags.get('conv', True)


def flattened_head(flags):
    return flags['datasource'] == 'miniimagenet'


def hidden_sizes(flags):
    if 'dim_hidden' in flags:  # only the generator's own tests set this
        return list(flags['dim_hidden'])
    return [40, 40] if flags['datasource'] == 'sinusoid' else [256, 128, 64, 64]


def dim_input(flags):
    if flags['datasource'] == 'sinusoid':
        return 1
    return int(np.prod(IMAGE_SHAPE[flags['datasource']]))


def final_spatial(size, flags):
    for _ in range(4):
        size = size // 2 if flags.get('max_pool', False) else (size + 1) // 2
    return size


def norm_scopes(flags):
    return [name.split('/')[1] for name, key, _ in architecture(flags) if key.endswith('/beta')]


def normalise(x, flags, params, scope):
    """The reference's normalize(): norm then relu. Batch norm: statistics over
    every axis but the channels, unfused, variance without stop-gradient,
    offset only. Layer norm: statistics per example over all other axes,
    gamma * xhat + beta."""
    if flags['norm'] == 'batch_norm':
        axes = list(range(len(x.shape) - 1))
        mean = tf.reduce_mean(x, axes, keepdims=True)
        variance = tf.reduce_mean(tf.square(x - mean), axes, keepdims=True)
        x = (x - mean) / tf.sqrt(variance + BATCH_NORM_EPSILON) + params['model/%s/beta' % scope]
    elif flags['norm'] == 'layer_norm':
        axes = list(range(1, len(x.shape)))
        mean = tf.reduce_mean(x, axes, keepdims=True)
        variance = tf.reduce_mean(tf.square(x - mean), axes, keepdims=True)
        xhat = (x - mean) / tf.sqrt(variance + LAYER_NORM_EPSILON)
        x = params['model/%s/gamma' % scope] * xhat + params['model/%s/beta' % scope]
    elif flags['norm'] != 'None':
        raise ValueError('unknown norm %r' % flags['norm'])
    return tf.nn.relu(x)


def forward(params, inputs, flags):
    """params: TF1 name -> tensor; inputs [n, dim_input] -> outputs [n, out]."""
    names = {key: name for name, key, _ in architecture(flags)}
    scopes = norm_scopes(flags) if flags['norm'] != 'None' else None
    if is_conv(flags):
        hidden = tf.reshape(inputs, (-1,) + IMAGE_SHAPE[flags['datasource']])
        max_pool = flags.get('max_pool', False)
        for i in range(4):
            stride = 1 if max_pool else 2
            hidden = tf.nn.conv2d(hidden, params[names['conv%d' % (i + 1)]], stride, 'SAME') \
                + params[names['b%d' % (i + 1)]]
            hidden = normalise(hidden, flags, params, scopes[i] if scopes else None)
            if max_pool:
                hidden = tf.nn.max_pool2d(hidden, 2, 2, 'VALID')
        if flattened_head(flags):
            hidden = tf.reshape(hidden, (tf.shape(hidden)[0], -1))
        else:
            hidden = tf.reduce_mean(hidden, [1, 2])
        return tf.matmul(hidden, params[names['w5']]) + params[names['b5']]
    layers = len(hidden_sizes(flags)) + 1
    hidden = inputs
    for i in range(1, layers):
        hidden = tf.matmul(hidden, params[names['w%d' % i]]) + params[names['b%d' % i]]
        hidden = normalise(hidden, flags, params, scopes[i - 1] if scopes else None)
    return tf.matmul(hidden, params[names['w%d' % layers]]) + params[names['b%d' % layers]]


def inner_loss(outputs, labels, flags):
    """Mean over the mini-batch, as the paper's code: squared error (sinusoid)
    or softmax cross-entropy against one-hot labels (classification)."""
    if INNER_LOSS[flags['datasource']] == 'mse_mean':
        return tf.reduce_mean(tf.square(outputs - labels))
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=outputs))


# ------------------------------------------------------- the inner optimisers
def sgd_update(weight, grad, state, learning_rate):
    return weight - learning_rate * grad


def adam_update(weight, grad, state, learning_rate):
    """TF1 Adam with beta1 = 0: m = g, v = beta2 v + (1 - beta2) g^2,
    w -= lr sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps).
    state: a dict holding 't' and 'v' for this weight (fresh per task)."""
    state['t'] = state.get('t', 0) + 1
    t = state['t']
    m = ADAM_BETA1 * state.get('m', 0.0) + (1 - ADAM_BETA1) * grad
    v = ADAM_BETA2 * state.get('v', 0.0) + (1 - ADAM_BETA2) * grad * grad
    state['m'], state['v'] = m, v
    step_size = float(learning_rate * np.sqrt(1 - ADAM_BETA2 ** t) / (1 - ADAM_BETA1 ** t))
    return weight - step_size * m / (tf.sqrt(v) + ADAM_EPSILON)


UPDATES = {'sgd': sgd_update, 'adam': adam_update}


def adapt(init, batch_inputs, batch_labels, flags, dtype=tf.float64):
    """One task's inner loop from `init` (name -> array) on its mini-batches in
    order ([inner_iters, inner_batch, ...]). Every trainable variable is trained
    (norm offsets and scales too); the optimiser state starts fresh.
    -> (name -> adapted array, the loss on each mini-batch before its step)."""
    update = UPDATES[flags['inner_optimizer']]
    weights = {name: tf.constant(value, dtype) for name, value in init.items()}
    states = {name: {} for name in weights}
    losses = []
    for inputs, labels in zip(batch_inputs, batch_labels):
        with tf.GradientTape() as tape:
            tape.watch(list(weights.values()))
            loss = inner_loss(forward(weights, tf.constant(inputs, dtype), flags),
                              tf.constant(labels, dtype), flags)
        grads = tape.gradient(loss, weights)
        losses.append(float(loss))
        weights = {name: update(w, grads[name], states[name], flags['update_lr'])
                   for name, w in weights.items()}
    return {name: w.numpy() for name, w in weights.items()}, np.array(losses)


def reptile_meta_step(init, adapted, epsilon):
    """phi + epsilon * mean_i(W_i - phi), variable by variable."""
    return {name: init[name] + epsilon * np.mean([a[name] - init[name] for a in adapted], axis=0)
            for name in init}


# ------------------------------------------------------------------ the data
def initial_values(flags, rng):
    """Random float32 starting values (nonzero biases and offsets, so that a
    wrong name mapping shows)."""
    values = {}
    for name, key, shape in architecture(flags):
        if key.endswith('/gamma'):
            value = 1 + rng.uniform(-0.2, 0.2, shape)
        elif len(shape) == 1:
            value = rng.uniform(-0.1, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(0, 1 / np.sqrt(fan_in), shape)
        values[name] = value.astype(np.float32)
    return values


def task_samples(flags, rng):
    """A task's training samples: (inputs [n, dim] float32, labels [n, out]
    float32, extras). Sinusoid: train_shots points of amp * sin(x - phase);
    images: train_shots per class of synthetic images, class-major."""
    shots = flags['train_shots']
    if flags['datasource'] == 'sinusoid':
        amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0, np.pi)
        inputs = rng.uniform(-5, 5, (shots, 1)).astype(np.float32)
        labels = (amp * np.sin(inputs.astype(np.float64) - phase)).astype(np.float32)
        return inputs, labels, {'amp': np.float64(amp), 'phase': np.float64(phase)}
    classes = flags['num_classes']
    height, width, channels = IMAGE_SHAPE[flags['datasource']]
    images = []
    for _ in range(classes):
        if flags['datasource'] == 'omniglot':
            # Binary strokes at 7x7, blown up to 28x28, each shot shifted a pixel or so.
            prototype = np.kron(rng.random((7, 7)) < 0.35, np.ones((4, 4)))
            for _ in range(shots):
                shifted = np.roll(prototype, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
                images.append(shifted.astype(np.float32).reshape(-1))
        else:
            # 8-bit colours on a 12x12 grid blown up to 84x84, noise per shot.
            prototype = rng.integers(0, 256, (12, 12, channels))
            for _ in range(shots):
                pixels = np.clip(prototype + rng.integers(-40, 41, prototype.shape), 0, 255)
                image = np.kron(pixels, np.ones((7, 7, 1))) / 255.0
                images.append(image.astype(np.float32).reshape(-1))
    label_int = np.repeat(np.arange(classes), shots)
    return np.stack(images), np.eye(classes, dtype=np.float32)[label_int], {'labels_int': label_int}


# ------------------------------------------------------------- the step files
def reptile_step(flags, seed):
    """Everything a step file records, computed in float64: a dict of arrays."""
    rng = np.random.default_rng(seed)
    init = initial_values(flags, rng)
    epsilon = annealed_meta_step(flags['meta_step'], flags['meta_step_final'],
                                 flags['iteration'], flags['metatrain_iterations'])
    flags = dict(flags, epsilon=epsilon, inner_loss=INNER_LOSS[flags['datasource']])
    arch = architecture(flags)
    record = {
        'algorithm': np.array('reptile'),
        'format_version': np.array(FORMAT_VERSION),
        'flags_json': np.array(json.dumps(flags, sort_keys=True)),
        'var_names': np.array([name for name, _, _ in arch]),
        'var_shapes_json': np.array(json.dumps({name: list(shape) for name, _, shape in arch})),
        'weights_keys': np.array([key for _, key, _ in arch]),
        'weights_var_names': np.array([name for name, _, _ in arch]),
        'inner_var_names': np.array([name for name, _, _ in arch]),
        'inner_adam_json': np.array(json.dumps(
            {'beta1': ADAM_BETA1, 'beta2': ADAM_BETA2, 'epsilon': ADAM_EPSILON,
             'update': 'tf1', 'state': 'per_task'}, sort_keys=True)),
        'inner_adam_state': np.array('per_task'),
        'epsilon': np.float64(epsilon),
    }
    for name, value in init.items():
        record['init/' + name] = value
    adapted_all = []
    for task in range(flags['meta_batch_size']):
        inputs, labels, extras = task_samples(flags, rng)
        order = minibatch_indices(len(inputs), flags['inner_batch'], flags['inner_iters'], rng)
        batch_inputs, batch_labels = inputs[order], labels[order]
        adapted, losses = adapt(init, batch_inputs, batch_labels, flags)
        adapted_all.append(adapted)
        prefix = 'task%d/' % task
        record[prefix + 'inputs'] = batch_inputs
        record[prefix + 'labels'] = batch_labels
        record[prefix + 'losses'] = losses
        if 'labels_int' in extras:
            record[prefix + 'labels_int'] = extras['labels_int'][order]
        for key in ('amp', 'phase'):
            if key in extras:
                record[prefix + key] = extras[key]
        for name, value in adapted.items():
            record['adapted/%d/%s' % (task, name)] = value
    init64 = {name: value.astype(np.float64) for name, value in init.items()}
    for name, value in reptile_meta_step(init64, adapted_all, epsilon).items():
        record['after_step/' + name] = value
    return record


def _flags(**overrides):
    flags = {'algorithm': 'reptile', 'datasource': 'sinusoid', 'num_classes': 1, 'norm': 'None',
             'conv': True, 'max_pool': False, 'num_filters': 8, 'train_shots': 10,
             'inner_batch': 5, 'inner_iters': 3, 'inner_optimizer': 'sgd', 'update_lr': 0.01,
             'meta_batch_size': 3, 'meta_step': 0.1, 'meta_step_final': 0.0,
             'metatrain_iterations': 1000, 'iteration': 300}
    flags.update(overrides)
    return flags


OMNIGLOT = dict(datasource='omniglot', num_classes=5, num_filters=8, train_shots=2,
                inner_batch=4, inner_iters=3, meta_batch_size=2, meta_step=1.0,
                meta_step_final=0.0, metatrain_iterations=100000, iteration=40000)
# The committed files: name -> (description, flags, seed).
STEP_FILES = {
    'r1_sine_sgd': ('sinusoid fc 1-40-40-1, norm None, SGD lr 0.01, k=3 mini-batches of 5 '
                    'from 10 samples, meta-batch 3',
                    _flags(), 1),
    'r2_sine_adam': ('r1 with Adam(beta1=0) lr 0.01',
                     _flags(inner_optimizer='adam'), 2),
    'r3_omni_conv_bn_adam': ('omniglot strided conv 4x8 filters, batch_norm, Adam(beta1=0) '
                             'lr 0.001, 5-way 2-shot, k=3 mini-batches of 4, meta-batch 2',
                             _flags(**OMNIGLOT, norm='batch_norm', inner_optimizer='adam',
                                    update_lr=0.001), 3),
    'r4_omni_conv_nonorm_sgd': ('r3 with norm None and SGD lr 0.05',
                                _flags(**OMNIGLOT, norm='None', inner_optimizer='sgd',
                                       update_lr=0.05), 4),
    'r5_mini_maxpool_bn_adam': ('miniimagenet 84x84x3 max-pool conv 4x4 filters, flattened '
                                'head, batch_norm, Adam(beta1=0) lr 0.001, 5-way 1-shot, '
                                'k=2 mini-batches of 5, meta-batch 2',
                                _flags(datasource='miniimagenet', num_classes=5, num_filters=4,
                                       max_pool=True, norm='batch_norm', train_shots=1,
                                       inner_batch=5, inner_iters=2, meta_batch_size=2,
                                       inner_optimizer='adam', update_lr=0.001, meta_step=1.0,
                                       meta_step_final=0.0, metatrain_iterations=100000,
                                       iteration=25000), 5),
    'r6_omni_conv_ln_sgd': ('r3 with layer_norm and SGD lr 0.05',
                            _flags(**OMNIGLOT, norm='layer_norm', inner_optimizer='sgd',
                                   update_lr=0.05), 6),
    'r7_omni_conv_bn_sgd': ('r3 with SGD lr 0.05',
                            _flags(**OMNIGLOT, norm='batch_norm', inner_optimizer='sgd',
                                   update_lr=0.05), 7),
}


def step_file_record(name):
    description, flags, seed = STEP_FILES[name]
    record = reptile_step(flags, seed)
    record['config_name'] = np.array(name)
    record['description'] = np.array(description)
    return record


def write_step_files(directory=GOLDEN_DIR):
    for name in STEP_FILES:
        path = os.path.join(directory, name + '.npz')
        np.savez_compressed(path, **step_file_record(name))
        print('%s  %d bytes' % (path, os.path.getsize(path)))


# --------------------------------------------------------- float32 deviation
def is_reptile_step_file(path):
    if not path.endswith('.npz'):
        return False
    with np.load(path) as z:
        return 'algorithm' in z.files and str(z['algorithm']) == 'reptile'


def load_step_file(path):
    """(flags, var_names, init, per-task (inputs, labels)) of a Reptile step file."""
    z = np.load(path)
    flags = json.loads(str(z['flags_json']))
    var_names = [str(n) for n in z['var_names']]
    init = {name: z['init/' + name] for name in var_names}
    tasks = [(z['task%d/inputs' % i], z['task%d/labels' % i])
             for i in range(flags['meta_batch_size'])]
    return z, flags, var_names, init, tasks


def biases_feeding_batch_norm(flags):
    """Every conv/fc bias but the output layer's when norm is batch_norm: the
    norm removes any per-channel shift, so their true gradient is exactly 0."""
    if flags['norm'] != 'batch_norm':
        return set()
    biases = [name for name, key, _ in architecture(flags) if key.startswith('b')]
    return set(biases[:-1])


def adam_displacement_bound(update_lr, inner_iters):
    """The most Adam(beta1=0) can move one element in inner_iters steps, whatever
    the gradients: step t moves at most lr sqrt(1 - beta2^t) / sqrt(1 - beta2)."""
    return sum(update_lr * np.sqrt((1 - ADAM_BETA2 ** t) / (1 - ADAM_BETA2))
               for t in range(1, inner_iters + 1))


VALUE_RTOL = 1e-5  # float32 holds a weight to ~6e-8 relative; a few roundings more


def float32_deviation(path):
    """Replays a step file in float32 (init, batches, epsilon, meta step all in
    float32). Returns kind -> (largest |deviation|, the atol fraction needed,
    variable): the fraction is the least f such that every element meets
    |mine - file| <= VALUE_RTOL |file| + f * max|file - init| (per variable,
    per task). Kinds: losses (f relative to the largest loss), adapted,
    after_step, and *_bn_biases for the biases feeding a batch norm, whose
    true displacement is 0: there |mine - init| over, for adam,
    adam_displacement_bound (times epsilon after the meta step), for sgd, the
    largest displacement of any variable of the task (or of the meta step)."""
    z, flags, var_names, init, tasks = load_step_file(path)
    zero_grad = biases_feeding_batch_norm(flags)
    bound = adam_displacement_bound(flags['update_lr'], flags['inner_iters'])
    worst = {}

    def note(kind, name, mine, expected, scale, rtol=VALUE_RTOL):
        dev = np.abs(np.asarray(mine, np.float64) - expected)
        excess = float(np.maximum(dev - rtol * np.abs(expected), 0).max())
        fraction = excess / scale if scale > 0 else (0.0 if excess == 0 else np.inf)
        entry = worst.setdefault(kind, [0.0, 0.0, ''])
        entry[0] = max(entry[0], float(dev.max()))
        if fraction >= entry[1]:
            entry[1], entry[2] = fraction, name

    def note_variable(kind, name, mine, expected, largest_move):
        if name in zero_grad:
            if flags['inner_optimizer'] == 'adam':
                scale = bound * (flags['epsilon'] if kind == 'after_step' else 1)
            else:
                scale = largest_move
            note(kind + '_bn_biases', name, mine - init[name], 0.0, scale, rtol=0)
        else:
            note(kind, name, mine, expected, float(np.abs(expected - init[name]).max()))

    adapted_all = []
    for i, (inputs, labels) in enumerate(tasks):
        adapted, losses = adapt(init, inputs, labels, flags, dtype=tf.float32)
        adapted_all.append(adapted)
        expected_losses = z['task%d/losses' % i]
        note('losses', 'task%d' % i, losses, expected_losses,
             float(np.abs(expected_losses).max()), rtol=0)
        expected = {name: z['adapted/%d/%s' % (i, name)] for name in var_names}
        largest_move = max(np.abs(expected[n] - init[n]).max() for n in var_names)
        for name in var_names:
            note_variable('adapted', name, adapted[name], expected[name], largest_move)
    after = reptile_meta_step(init, adapted_all, np.float32(z['epsilon']))  # all float32
    expected = {name: z['after_step/' + name] for name in var_names}
    largest_move = max(np.abs(expected[n] - init[n]).max() for n in var_names)
    for name in var_names:
        note_variable('after_step', name, after[name], expected[name], largest_move)
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--float32', action='store_true',
                        help='replay the files in float32 and print the deviations')
    parser.add_argument('--dir', default=GOLDEN_DIR, help='folder of the r*.npz files')
    args = parser.parse_args(argv)
    if not os.path.isdir(args.dir):
        parser.error('--dir=%s is not a folder: give an existing folder' % args.dir)
    if not args.float32:
        write_step_files(args.dir)
        return 0
    for name in sorted(f for f in os.listdir(args.dir) if is_reptile_step_file(
            os.path.join(args.dir, f))):
        for kind, (dev, ratio, var) in float32_deviation(os.path.join(args.dir, name)).items():
            print('%-28s %-21s max|dev| %.2e  atol fraction needed %.2e (%s)'
                  % (name, kind, dev, ratio, var))
    return 0


if __name__ == '__main__':
    sys.exit(main())
