"""Reptile: the inner loop, the meta step and its schedule, on any network."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from config import Config, ConfigError
from keras_network import KerasNetwork
from networks import ForwardFunction
from reptile import Reptile, meta_step_size, mini_batch_indices, refuse_where_unsupported, \
    task_mini_batches


def _sine(**overrides):
    values = dict(datasource='sinusoid', norm='None', algorithm='reptile', update_lr=0.01,
                  inner_iters=3, inner_batch=5, meta_batch_size=3, metatrain_iterations=100)
    return Config(**dict(values, **overrides)).validate()


def _sine_batches(config, seed=0):
    """[tasks, inner_iters, inner_batch, 1] inputs and sine targets."""
    rng = np.random.default_rng(seed)
    settings = config.reptile
    shape = (config.meta_batch_size, settings.inner_iters, settings.inner_batch, 1)
    x = rng.uniform(-5, 5, shape).astype(np.float32)
    amp = rng.uniform(0.1, 5, (config.meta_batch_size, 1, 1, 1))
    return x, (amp * np.sin(x)).astype(np.float32)


def _omniglot(norm='batch_norm', **overrides):
    values = dict(datasource='omniglot', norm=norm, num_filters=4, algorithm='reptile',
                  inner_iters=2, inner_batch=5, meta_batch_size=3, metatrain_iterations=10)
    config = Config(**dict(values, **overrides)).validate()
    rng = np.random.default_rng(1)
    shape = (config.meta_batch_size, config.reptile.inner_iters, config.reptile.inner_batch)
    x = rng.uniform(0, 1, shape + (784,)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, shape)]
    return config, x, y


def _values(reptile):
    return {k: v.numpy().copy() for k, v in reptile.variables.items()}


def test_epsilon_falls_linearly_from_meta_step_to_meta_step_final_over_the_run():
    config = _sine(meta_step=0.5, meta_step_final=0.1, metatrain_iterations=1000)
    assert meta_step_size(config, 0) == pytest.approx(0.5)
    assert meta_step_size(config, 500) == pytest.approx(0.3)
    assert meta_step_size(config, 1000) == pytest.approx(0.1)
    assert meta_step_size(config, 250) - meta_step_size(config, 251) == \
        pytest.approx(0.4 / 1000)


def test_one_sgd_inner_step_is_gradient_descent_on_the_mean_loss_of_the_mini_batch():
    config = _sine(inner_optimizer='sgd', inner_iters=1, meta_batch_size=1)
    reptile = Reptile(config, seed=0)
    x, y = _sine_batches(config)
    with tf.GradientTape() as tape:
        pred = reptile.network.forward_tasks(x[:, 0], reptile.variables)
        loss = tf.reduce_mean(tf.square(pred - y[:, 0]))
    grads = tape.gradient(loss, reptile.variables)
    adapted, losses = reptile.adapt(x, y)
    np.testing.assert_allclose(losses.numpy()[0, 0], loss.numpy(), rtol=1e-6)
    for key, var in reptile.variables.items():
        np.testing.assert_allclose(adapted[key].numpy()[0],
                                   (var - config.update_lr * grads[key]).numpy(),
                                   rtol=1e-6, atol=1e-7)


def test_the_first_adam_step_is_the_learning_rate_times_the_gradient_over_its_size():
    # Adam with beta1 = 0 from a fresh state: v = (1 - beta2) g^2, so the first
    # step is lr sqrt(1 - beta2) g / (sqrt(1 - beta2) |g| + eps), about lr sign(g).
    config = _sine(inner_optimizer='adam', inner_iters=1, meta_batch_size=2)
    reptile = Reptile(config, seed=0)
    x, y = _sine_batches(config)
    copies = {k: tf.broadcast_to(v, [2] + v.shape.as_list())
              for k, v in reptile.variables.items()}
    with tf.GradientTape() as tape:
        tape.watch(list(copies.values()))
        pred = reptile.network.forward_tasks(x[:, 0], copies)
        loss = tf.reduce_sum(tf.reduce_mean(tf.square(pred - y[:, 0]), axis=[1, 2]))
    grads = tape.gradient(loss, copies)
    adapted, _ = reptile.adapt(x, y)
    root = np.sqrt(1 - 0.999)
    for key, copy in copies.items():
        grad = grads[key].numpy()
        expected = copy.numpy() - config.update_lr * root * grad / (root * np.abs(grad) + 1e-8)
        # float32 rounding of a step of size lr
        np.testing.assert_allclose(adapted[key].numpy(), expected, rtol=1e-5,
                                   atol=1e-5 * config.update_lr)


# Not Adam with batch norm: the biases before a batch norm have a true gradient
# of 0, which Adam turns from float noise into steps of up to update_lr.
@pytest.mark.parametrize('optimizer, norm', [('adam', 'layer_norm'), ('sgd', 'batch_norm')])
def test_each_task_of_a_meta_batch_adapts_as_if_it_were_alone(optimizer, norm):
    # Also: each task's Adam starts from a fresh state, whatever came before it.
    config, x, y = _omniglot(norm=norm, inner_optimizer=optimizer, update_lr=0.01)
    reptile = Reptile(config, seed=0)
    together, losses = reptile.adapt(x, y)
    for t in range(config.meta_batch_size):
        alone, alone_losses = reptile.adapt(x[t:t + 1], y[t:t + 1])
        np.testing.assert_allclose(losses.numpy()[t], alone_losses.numpy()[0], rtol=1e-5)
        for key in reptile.variables:
            np.testing.assert_allclose(together[key].numpy()[t], alone[key].numpy()[0],
                                       rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.parametrize('norm', ['batch_norm', 'layer_norm'])
def test_the_inner_loop_trains_the_normalisation_offsets_and_scales_too(norm):
    config, x, y = _omniglot(norm=norm, inner_optimizer='sgd', update_lr=0.1)
    reptile = Reptile(config, seed=0)
    adapted, _ = reptile.adapt(x, y)
    norm_keys = [k for k in reptile.variables if '/' in k]
    assert norm_keys
    for key in norm_keys:
        assert not np.allclose(adapted[key].numpy(), reptile.variables[key].numpy()), key


def test_the_meta_step_moves_phi_epsilon_of_the_way_to_the_mean_of_the_adapted_weights():
    config = _sine(meta_step=0.25, meta_step_final=0.25)
    reptile = Reptile(config, seed=0)
    phi = _values(reptile)
    x, y = _sine_batches(config)
    adapted, _ = reptile.adapt(x, y)
    step = reptile.metatrain_step(x, y, iteration=7, return_adapted=True)
    for key, var in reptile.variables.items():
        np.testing.assert_allclose(step['adapted'][key].numpy(), adapted[key].numpy(),
                                   rtol=1e-6, atol=1e-7)
        expected = phi[key] + 0.25 * (adapted[key].numpy() - phi[key]).mean(0)
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_the_iteration_gives_the_meta_step_so_a_later_iteration_moves_less():
    config = _sine(meta_step=1.0, meta_step_final=0.0, metatrain_iterations=100)
    x, y = _sine_batches(config)
    moves = []
    for iteration in (0, 90):
        reptile = Reptile(config, seed=0)
        phi = _values(reptile)
        step = reptile.metatrain_step(x, y, iteration)
        assert float(step['epsilon']) == pytest.approx(meta_step_size(config, iteration))
        moves.append(max(np.abs(v.numpy() - phi[k]).max() for k, v in reptile.variables.items()))
    assert moves[1] == pytest.approx(0.1 * moves[0], rel=1e-4)


def test_meta_training_lowers_the_loss_of_new_sine_tasks_after_adaptation():
    config = _sine(inner_optimizer='sgd', update_lr=0.05, inner_iters=5, inner_batch=10,
                   meta_batch_size=5, meta_step=1.0, meta_step_final=0.0,
                   metatrain_iterations=300)
    reptile = Reptile(config, seed=0)
    test_x, test_y = _sine_batches(config, seed=1000)  # tasks never trained on

    def adapted_loss():  # the last mini-batch's loss, after the task's first 4 steps
        return float(tf.reduce_mean(reptile.adapt(test_x, test_y)[1][:, -1]))
    before = adapted_loss()
    for iteration in range(config.metatrain_iterations):
        reptile.metatrain_step(*_sine_batches(config, seed=iteration), iteration)
    assert adapted_loss() < 0.5 * before


def test_any_network_works_a_forward_function_and_a_keras_model_alike():
    config = _sine(inner_optimizer='adam')
    x, y = _sine_batches(config)
    keras_model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(8, activation='relu'),
                                    keras.layers.Dense(1)])
    values = {v.path: v.numpy() for v in keras_model.trainable_variables}
    paths = [v.path for v in keras_model.trainable_variables]

    def forward(inp, weights):
        hidden = tf.nn.relu(tf.matmul(inp, weights[paths[0]]) + weights[paths[1]])
        return tf.matmul(hidden, weights[paths[2]]) + weights[paths[3]]
    by_keras = Reptile(config, network=KerasNetwork(keras_model))
    by_function = Reptile(config, network=ForwardFunction(forward, values))
    for reptile in (by_keras, by_function):
        reptile.metatrain_step(x, y, 0)
    for key in paths:
        np.testing.assert_allclose(by_keras.variables[key].numpy(),
                                   by_function.variables[key].numpy(), rtol=1e-5, atol=1e-7)
        assert not np.allclose(by_keras.variables[key].numpy(), values[key]), key


@pytest.mark.parametrize('what', ['meta-training or testing from the command line',
                                  'learner.MetaLearner'])
def test_what_runs_maml_only_refuses_reptile_in_one_line_naming_it(what):
    with pytest.raises(ConfigError) as e:
        refuse_where_unsupported(_sine(), what)
    message = str(e.value)
    assert '\n' not in message and what in message and 'not supported yet' in message
    refuse_where_unsupported(dataclasses.replace(_sine(), algorithm='maml', inner_iters=None,
                                                 inner_batch=None), what)


def test_the_command_line_run_and_the_learner_refuse_reptile_before_doing_anything(tmp_path):
    import experiment
    import learner
    config = dataclasses.replace(_sine(), logdir=str(tmp_path))
    with pytest.raises(ConfigError, match='command line is not supported yet'):
        experiment.run(config)
    with pytest.raises(ConfigError, match='learner.MetaLearner is not supported yet'):
        learner.MetaLearner(None, config)
    assert list(tmp_path.iterdir()) == []


def test_mini_batches_go_through_every_sample_once_before_reshuffling():
    # 10 samples, 3 batches of 4: one whole shuffle, then 2 of the next one.
    picks = mini_batch_indices(10, 4, 3, np.random.default_rng(0)).ravel()
    assert sorted(picks[:10]) == list(range(10))
    assert len(set(picks[10:])) == 2
    assert mini_batch_indices(10, 4, 3, np.random.default_rng(0)).shape == (3, 4)


def test_a_mini_batch_larger_than_the_samples_repeats_them_across_shuffles():
    picks = mini_batch_indices(3, 7, 2, np.random.default_rng(1)).ravel()
    for start in range(0, 12, 3):
        assert sorted(picks[start:start + 3]) == [0, 1, 2]


def test_each_tasks_mini_batches_hold_its_own_samples_with_their_labels():
    rng = np.random.default_rng(2)
    inputs = np.arange(3 * 10, dtype=np.float32).reshape(3, 10, 1)  # task t: 10t .. 10t + 9
    labels = -inputs
    batch_x, batch_y = task_mini_batches(inputs, labels, 4, 5, rng)
    assert batch_x.shape == (3, 5, 4, 1)
    np.testing.assert_array_equal(batch_y, -batch_x)
    for t in range(3):
        assert set(batch_x[t].ravel()) <= set(inputs[t].ravel())
