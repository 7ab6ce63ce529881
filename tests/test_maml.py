"""Behaviour of the MAML model beyond the golden files: each test one sentence."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from bench.reference_graph import build_reference_step
from config import Config
from maml import MAML
from steps import Steps

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden')


def _sine_model(**overrides):
    config = Config(datasource='sinusoid', norm='None', update_batch_size=5, update_lr=0.01,
                    **overrides)
    return MAML(config, seed=0), config


def _sine_batch(tasks=3, k=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 5, (tasks, 2 * k, 1)).astype(np.float32)
    y = (rng.uniform(0.1, 5, (tasks, 1, 1)) * np.sin(x)).astype(np.float32)
    return [tf.constant(v) for v in (x[:, :k], x[:, k:], y[:, :k], y[:, k:])]


def _omniglot_model(norm, tasks=2, filters=4, **overrides):
    config = Config(datasource='omniglot', norm=norm, num_filters=filters, update_batch_size=1,
                    update_lr=0.4, **overrides)
    model = MAML(config, seed=1)
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (tasks, 10, 784)).astype(np.float32)
    labels = np.eye(5, dtype=np.float32)[np.tile(np.arange(5), 2)]
    y = np.broadcast_to(labels, (tasks, 10, 5)).copy()
    return model, [tf.constant(v) for v in (x[:, :5], x[:, 5:], y[:, :5], y[:, 5:])]


def test_one_inner_step_is_plain_gradient_descent_on_split_a():
    model, config = _sine_model()
    inputa, inputb, labela, labelb = _sine_batch(tasks=1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model.loss(model.forward(inputa, model.weights), labela))
    grads = tape.gradient(loss, model.weights)
    fast = {k: v - config.update_lr * grads[k] for k, v in model.weights.items()}
    expected = model.loss(model.forward(inputb, fast), labelb)
    res = Steps(model).evaluate(inputa, inputb, labela, labelb, 1)
    np.testing.assert_allclose(res['lossesb'][0].numpy(), expected.numpy(), rtol=1e-6)


def test_each_task_of_a_batch_adapts_as_if_it_were_alone():
    model, batch = _omniglot_model('batch_norm', tasks=3)
    steps = Steps(model)
    together = steps.evaluate(*batch, 2)
    for t in range(3):
        alone = steps.evaluate(*[b[t:t + 1] for b in batch], 2)
        for step in range(2):
            np.testing.assert_allclose(together['outputbs'][step][t].numpy(),
                                       alone['outputbs'][step][0].numpy(), rtol=1e-4, atol=1e-5)


def test_batch_norm_uses_the_statistics_of_the_batch_it_normalises():
    model, (inputa, inputb, labela, labelb) = _omniglot_model('batch_norm')
    # Scaling every input of a task scales the first conv's output, which the
    # batch norm divides out again (up to its epsilon): the statistics are
    # those of the batch being normalised, never stored running averages.
    base = model.forward(inputa, model.weights).numpy()
    scaled = model.forward(inputa * 3.0, model.weights).numpy()
    np.testing.assert_allclose(base, scaled, rtol=0, atol=2e-2)
    unnormalised, _ = _omniglot_model('None')
    assert not np.allclose(unnormalised.forward(inputa, unnormalised.weights).numpy(),
                           unnormalised.forward(inputa * 3.0, unnormalised.weights).numpy(),
                           rtol=0, atol=2e-2)


def test_normalisation_offsets_are_meta_learned_but_not_adapted_in_the_inner_loop():
    model, batch = _omniglot_model('layer_norm')
    assert not any(k.startswith(('beta', 'gamma')) for k in model.weights)
    step = Steps(model).metatrain_step(*batch)
    assert np.abs(step['metagrads']['model/0/beta'].numpy()).max() > 0
    assert np.abs(step['metagrads']['model/0/gamma'].numpy()).max() > 0


def test_stop_grad_makes_the_meta_gradient_first_order():
    batch = _sine_batch()
    first_order, _ = _sine_model(stop_grad=True)
    second_order, _ = _sine_model()
    g1 = Steps(first_order).metatrain_step(*batch)['metagrads']
    g2 = Steps(second_order).metatrain_step(*batch)['metagrads']
    # First order: the gradient of split b's loss at the fast weights.
    model, config = _sine_model()
    inputa, inputb, labela, labelb = batch
    expected = {k: 0.0 for k in model.weights}
    for t in range(3):
        a, b, la, lb = inputa[t:t + 1], inputb[t:t + 1], labela[t:t + 1], labelb[t:t + 1]
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model.loss(model.forward(a, model.weights), la))
        grads = tape.gradient(loss, model.weights)
        fast = {k: tf.convert_to_tensor(v - config.update_lr * grads[k])
                for k, v in model.weights.items()}
        with tf.GradientTape() as tape:
            tape.watch(list(fast.values()))
            loss_b = tf.reduce_sum(model.loss(model.forward(b, fast), lb)) / 3.0
        for k, g in tape.gradient(loss_b, fast).items():
            expected[k] = expected[k] + g
    for key, tf1_name in zip(model.weights, first_order.named_variables()):
        np.testing.assert_allclose(g1[tf1_name].numpy(), expected[key].numpy(), rtol=1e-4,
                                   atol=1e-7)
    assert any(not np.allclose(g1[n].numpy(), g2[n].numpy(), rtol=1e-3, atol=1e-6) for n in g1)


@pytest.mark.parametrize('norm', ['batch_norm', 'layer_norm', 'None'])
def test_meta_gradient_of_the_conv_net_matches_finite_differences(norm):
    # The model's own meta-gradient (float32, through task_metalearn and its
    # shared first-step convolutions) against central differences of the
    # meta-objective recomputed independently in float64: the second-order
    # terms through batch norm and the inner gradient are exact.
    config = Config(datasource='omniglot', norm=norm, num_filters=3, update_batch_size=1,
                    update_lr=0.4, num_updates=2)
    model = MAML(config, seed=3)
    rng = np.random.default_rng(4)
    x = tf.constant(rng.uniform(0, 1, (1, 10, 784)))
    labels = tf.constant(np.eye(5)[None, np.tile(np.arange(5), 2)])
    x32, labels32 = tf.cast(x, tf.float32), tf.cast(labels, tf.float32)
    with tf.GradientTape() as tape:
        res = model.meta_batch(x32[:, :5], x32[:, 5:], labels32[:, :5], labels32[:, 5:], 2)
        objective = res['total_losses2'][-1]
    checked = {'w5': [(0, 0), (1, 3), (2, 4)], 'conv1': [(0, 0, 0, 0), (1, 2, 0, 1)],
               'conv3': [(2, 1, 0, 2)]}
    grads = tape.gradient(objective, [model.weights[k] for k in checked])
    eps = 1e-6  # small: a larger step in a first-layer kernel moves some ReLU inputs across 0
    for (key, indices), grad in zip(checked.items(), grads):
        for index in indices:
            delta = np.zeros(model.weights[key].shape)
            delta[index] = eps
            plus = _objective_f64(model, config, x, labels, {key: delta})
            minus = _objective_f64(model, config, x, labels, {key: -delta})
            numeric = (plus - minus) / (2 * eps)
            np.testing.assert_allclose(grad[index].numpy(), numeric.numpy(), rtol=2e-3,
                                       atol=2e-5, err_msg='%s%s' % (key, index))


def _objective_f64(model, config, x, labels, deltas):
    """The meta-objective recomputed in float64 (for finite differences)."""
    weights = {k: tf.cast(v, tf.float64) + deltas.get(k, 0.0) for k, v in model.weights.items()}
    saved = model.norm_params
    model.norm_params = {s: (None if p is None else {n: tf.cast(v, tf.float64) for n, v in p.items()})
                         for s, p in saved.items()}
    try:
        fast = {k: v[None] for k, v in weights.items()}
        for _ in range(config.num_updates):
            with tf.GradientTape() as tape:
                tape.watch(list(fast.values()))
                loss = tf.reduce_sum(model.loss(model.forward(x[:, :5], fast), labels[:, :5]))
            grads = tape.gradient(loss, fast)
            fast = {k: fast[k] - config.update_lr * grads[k] for k in fast}
        return tf.reduce_sum(model.loss(model.forward(x[:, 5:], fast), labels[:, 5:]))
    finally:
        model.norm_params = saved


def test_variables_carry_the_reference_checkpoint_names_and_shapes():
    config = Config(datasource='miniimagenet', num_filters=32, max_pool=True)
    model = MAML(config, seed=0)
    shapes = {n: v.shape.as_list() for n, v in model.named_variables().items()}
    # The released 5-way 1-shot MiniImagenet checkpoint's variables.
    assert shapes == {
        'model/conv1': [3, 3, 3, 32], 'model/Variable': [32],
        'model/conv2': [3, 3, 32, 32], 'model/Variable_1': [32],
        'model/conv3': [3, 3, 32, 32], 'model/Variable_2': [32],
        'model/conv4': [3, 3, 32, 32], 'model/Variable_3': [32],
        'model/w5': [800, 5], 'model/b5': [5],
        'model/0/beta': [32], 'model/1/beta': [32], 'model/2/beta': [32], 'model/3/beta': [32]}


def test_initial_weights_follow_the_reference_initialisers():
    model, _ = _omniglot_model('batch_norm', filters=64)
    w5 = model.weights['w5'].numpy()
    assert 0.7 < w5.std() < 1.3  # standard normal head for Omniglot
    conv2 = model.weights['conv2'].numpy()
    limit = np.sqrt(6.0 / (9 * 64 + 9 * 64))
    assert np.abs(conv2).max() <= limit and np.abs(conv2).max() > 0.9 * limit  # Glorot uniform
    sine, _ = _sine_model()
    w2 = sine.weights['w2'].numpy()
    assert np.abs(w2).max() <= 0.02 and 0.007 < w2.std() < 0.0095  # truncated normal, std 0.01
    assert not np.any(sine.weights['b1'].numpy())


def test_same_seed_gives_the_same_initial_weights():
    a, _ = _sine_model()
    b, _ = _sine_model()
    for key in a.weights:
        np.testing.assert_array_equal(a.weights[key].numpy(), b.weights[key].numpy())


@pytest.mark.slow  # builds the reference's TF1 graph
@pytest.mark.parametrize('golden, grad_atol_frac', [('g4_omni_conv_bn', 1e-3),
                                                    ('g8_mini_maxpool_bn', 1e-2)])
def test_first_order_meta_gradient_with_fused_batch_norm_matches_the_reference(
        golden, grad_atol_frac):
    # First order uses TensorFlow's fused batch norm (no second derivative is
    # ever taken). The golden files are all second order, so the oracle is the
    # reference's own graph (bench/reference_graph.py, itself checked against
    # the golden files) with stop_grad, at the golden tolerances.
    z = np.load(os.path.join(GOLDEN, golden + '.npz'))
    flags = json.loads(str(z['flags_json']))
    config = Config.from_dict(flags, stop_grad=True)
    batch = [z[k] for k in ('inputa', 'inputb', 'labela', 'labelb')]
    init = {n: z['init/' + n] for n in z['var_names']}
    model = MAML(config, seed=0)
    for name, var in model.named_variables().items():
        var.assign(init[name])
    mine = Steps(model).metatrain_step(*batch)['metagrads_unclipped']

    session, placeholders, _, fetches = build_reference_step(
        config, init, test_num_updates=config.num_updates, clip=False)
    expected = session.run(fetches['metagrads'], dict(zip(placeholders, batch)))
    largest = max(np.abs(g).max() for g in expected.values())
    assert largest > 0
    for name, g in expected.items():
        np.testing.assert_allclose(mine[name].numpy(), g, rtol=0, atol=grad_atol_frac * largest,
                                   err_msg=name)


@pytest.mark.parametrize('xla', [True, False])
@pytest.mark.parametrize('kind', ['metatrain', 'pretrain'])
def test_steps_run_in_one_call_equal_the_same_steps_called_one_by_one(kind, xla):
    looped, _ = _sine_model(xla=xla)
    stepwise, _ = _sine_model(xla=xla)
    batches = [_sine_batch(seed=s) for s in range(3)]
    # Five slots, three used: the padding slots must not be run.
    stacked = [tf.stack(parts + (tf.zeros_like(parts[0]),) * 2) for parts in zip(*batches)]
    objectives = getattr(Steps(looped), kind + '_steps')(*stacked, 3).numpy()
    one_by_one = Steps(stepwise)
    expected = [float(getattr(one_by_one, kind + '_step')(*b)['objective']) for b in batches]
    # Compiled with XLA (the default) the loop's steps are the same to the
    # bit; without XLA, TensorFlow optimises the loop body's graph on its own
    # and an update can differ in the last bits of float32 rounding.
    tol = 0 if xla else 1e-6
    np.testing.assert_allclose(objectives, np.float32(expected + [0, 0]), rtol=tol, atol=0)
    for a, b in zip(looped.trainable_variables, stepwise.trainable_variables):
        scale = float(np.max(np.abs(b.numpy())))
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=tol, atol=tol * scale,
                                   err_msg=a.name)
