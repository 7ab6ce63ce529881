"""Networks apart from the algorithm: the reference's nets and forward functions."""
import numpy as np
import pytest
import tensorflow as tf

from config import Config
from maml import MAML
from networks import ForwardFunction, NetworkError, ReferenceNetwork


def _sine_config(**overrides):
    return Config(datasource='sinusoid', norm='None', update_batch_size=5, update_lr=0.01,
                  **overrides)


def _sine_batch(tasks=3, k=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 5, (tasks, 2 * k, 1)).astype(np.float32)
    y = (rng.uniform(0.1, 5, (tasks, 1, 1)) * np.sin(x)).astype(np.float32)
    return [tf.constant(v) for v in (x[:, :k], x[:, k:], y[:, :k], y[:, k:])]


def _fc_forward(inp, weights):
    """The reference's sinusoid net for ONE task, in the reference's own style."""
    hidden = tf.nn.relu(tf.matmul(inp, weights['w1']) + weights['b1'])
    hidden = tf.nn.relu(tf.matmul(hidden, weights['w2']) + weights['b2'])
    return tf.matmul(hidden, weights['w3']) + weights['b3']


def test_the_reference_net_adapts_weights_and_biases_but_not_its_norm_offsets():
    network = ReferenceNetwork(Config(datasource='omniglot', norm='layer_norm', num_filters=4))
    assert network.adapted == ('conv1', 'b1', 'conv2', 'b2', 'conv3', 'b3', 'conv4', 'b4',
                               'w5', 'b5')
    meta_only = [k for k in network.initial_weights() if k not in network.adapted]
    assert meta_only == ['0/beta', '0/gamma', '1/beta', '1/gamma', '2/beta', '2/gamma',
                         '3/beta', '3/gamma']
    assert network.checkpoint_names['0/gamma'] == 'model/0/gamma'
    assert network.checkpoint_names['b1'] == 'model/Variable'


def test_a_forward_function_for_one_task_gives_the_builtin_nets_meta_gradient():
    config = _sine_config(num_updates=2)
    builtin = MAML(config, seed=0)
    initial = {k: v.numpy() for k, v in builtin.weights.items()}
    names = {k: builtin.tf1_names[v.ref()] for k, v in builtin.weights.items()}
    generic = MAML(config, network=ForwardFunction(_fc_forward, initial, checkpoint_names=names))
    batch = _sine_batch()
    res, grads = builtin.metatrain_gradients(*batch)
    res2, grads2 = generic.metatrain_gradients(*batch)
    np.testing.assert_allclose(res2['objective'].numpy(), res['objective'].numpy(), rtol=1e-6)
    assert list(grads2) == list(grads)
    for name in grads:
        np.testing.assert_allclose(grads2[name].numpy(), grads[name].numpy(), rtol=1e-5,
                                   atol=1e-7, err_msg=name)


def test_the_loop_and_vectorized_task_maps_give_the_same_meta_gradient():
    config = _sine_config(num_updates=2)
    initial = {k: v.numpy() for k, v in MAML(config, seed=1).weights.items()}
    batch = _sine_batch(seed=2)
    grads = {}
    for map_tasks in ('loop', 'vectorized'):
        model = MAML(config, network=ForwardFunction(_fc_forward, initial, map_tasks=map_tasks))
        grads[map_tasks] = tf.function(model.metatrain_gradients)(*batch)[1]
    for name in grads['loop']:
        np.testing.assert_allclose(grads['vectorized'][name].numpy(), grads['loop'][name].numpy(),
                                   rtol=1e-5, atol=1e-7, err_msg=name)


def test_weights_left_out_of_adapted_are_meta_learned_but_not_adapted():
    def forward(inp, weights):
        return weights['scale'] * (inp * weights['w'] + weights['b'])
    network = ForwardFunction(forward, {'w': np.ones([1, 1], np.float32),
                                        'b': np.zeros([1], np.float32),
                                        'scale': np.full([1], 2.0, np.float32)},
                              adapted=['w', 'b'])
    model = MAML(_sine_config(num_updates=1), network=network)
    assert list(model.weights) == ['w', 'b']
    inputa, inputb, labela, labelb = _sine_batch(tasks=2)
    res = model.task_metalearn(inputa, inputb, labela, labelb, 1)
    # The inner step by hand: gradient descent on w and b only, scale fixed at 2.
    for t in range(2):
        x, y = inputa[t].numpy(), labela[t].numpy()
        residual = 2.0 * x - y  # w=1, b=0
        grad_w = np.mean(2 * residual * 2.0 * x)
        grad_b = np.mean(2 * residual * 2.0)
        w, b = 1 - 0.01 * grad_w, -0.01 * grad_b
        np.testing.assert_allclose(res['outputbs'][0][t].numpy(),
                                   2.0 * (inputb[t].numpy() * w + b), rtol=1e-5)
    _, grads = model.metatrain_gradients(inputa, inputb, labela, labelb)
    assert np.abs(grads['scale'].numpy()).max() > 0


def test_checkpoint_names_default_to_the_keys():
    network = ForwardFunction(_fc_forward, {'w1': np.zeros([1, 2], np.float32)})
    assert network.checkpoint_names == {'w1': 'w1'}
    assert list(MAML(_sine_config(), network=network).named_variables()) == ['w1']


def test_adapted_names_must_be_among_the_initial_weights():
    with pytest.raises(NetworkError, match=r"\['w9'\] are not among the initial weights"):
        ForwardFunction(_fc_forward, {'w1': np.zeros([1, 2], np.float32)}, adapted=['w9'])
