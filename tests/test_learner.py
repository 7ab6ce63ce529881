"""The notebook API (learner.py): build from a model, meta-train, adapt to one task, evaluate."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from config import Config
from learner import MetaLearner
from networks import ForwardFunction, NetworkError


def _sine_config(**overrides):
    return Config(**dict(dict(datasource='sinusoid', norm='None', update_batch_size=5,
                              meta_batch_size=4, num_updates=1, update_lr=0.01), **overrides))


def _sine_task(seed, k=5):
    """One sinusoid task's K training and K query examples."""
    rng = np.random.default_rng(seed)
    amp, phase = rng.uniform(0.1, 5), rng.uniform(0, np.pi)
    x = rng.uniform(-5, 5, (2 * k, 1)).astype(np.float32)
    y = (amp * np.sin(x - phase)).astype(np.float32)
    return x[:k], y[:k], x[k:], y[k:]


def _mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.layers.Dense(20, activation='relu'), keras.layers.Dense(1)])


def _forward_function():
    def forward(inp, weights):
        return tf.matmul(tf.tanh(tf.matmul(inp, weights['w1']) + weights['b1']),
                         weights['w2']) + weights['b2']
    rng = np.random.default_rng(0)
    return ForwardFunction(forward, {
        'w1': rng.normal(0, 0.5, (1, 20)).astype(np.float32), 'b1': np.zeros(20, np.float32),
        'w2': rng.normal(0, 0.5, (20, 1)).astype(np.float32), 'b2': np.zeros(1, np.float32)})


@pytest.mark.parametrize('make_model', [_mlp, _forward_function], ids=['keras', 'forward'])
def test_predictions_with_adapted_weights_have_the_loss_evaluation_reports_after_as_many_steps(
        make_model):
    learner = MetaLearner(make_model(), _sine_config())
    x, y, x_query, y_query = _sine_task(seed=1)
    batch = [a[None] for a in (x, x_query, y, y_query)]
    reported = learner.evaluate(1, num_steps=3, batches=iter([batch]))
    # Before adaptation the reference reports the loss on the task's own examples,
    # after each step the loss on its queries.
    np.testing.assert_allclose(np.mean((learner.predict(x).numpy() - y) ** 2),
                               reported[0], rtol=1e-5)
    for steps in (1, 3):
        fast = learner.adapt(x, y, num_steps=steps)
        loss = np.mean((learner.predict(x_query, fast).numpy() - y_query) ** 2)
        np.testing.assert_allclose(loss, reported[steps], rtol=1e-5)


def test_adapting_leaves_the_meta_learned_weights_as_they_were():
    learner = MetaLearner(_forward_function(), _sine_config())
    before = {k: v.numpy().copy() for k, v in learner.maml.weights.items()}
    x, y, _, _ = _sine_task(seed=2)
    fast = learner.adapt(x, y, num_steps=2)
    assert any(not np.allclose(fast[k], before[k]) for k in before)
    for key, value in learner.maml.weights.items():
        np.testing.assert_array_equal(value.numpy(), before[key])


def test_meta_training_on_the_data_source_lowers_the_loss_after_adaptation_on_new_tasks():
    np.random.seed(0)
    learner = MetaLearner(_mlp(), _sine_config(meta_batch_size=10, meta_lr=0.01))
    tasks = [[a[None] for a in (x, xq, y, yq)] for x, y, xq, yq in map(_sine_task, range(50))]
    before = learner.evaluate(50, num_steps=1, batches=iter(tasks))
    objectives = learner.meta_train(300)
    after = learner.evaluate(50, num_steps=1, batches=iter(tasks))
    assert len(objectives) == 300 and all(np.isfinite(objectives))
    assert after[1] < 0.85 * before[1]  # 300 of the 70,000 iterations a sinusoid run makes


def test_evaluation_averages_each_tasks_values_before_and_after_each_step():
    learner = MetaLearner(_forward_function(), _sine_config())
    tasks = [_sine_task(seed) for seed in (3, 4, 5)]
    batches = [[a[None] for a in (x, xq, y, yq)] for x, y, xq, yq in tasks]
    each = [learner.evaluate(1, num_steps=2, batches=iter([b])) for b in batches]
    mean = learner.evaluate(3, num_steps=2, batches=iter(batches))
    assert mean.shape == (3,)
    np.testing.assert_allclose(mean, np.mean(each, axis=0), rtol=1e-6)


def test_the_reference_conv_net_adapts_to_one_omniglot_shaped_task_as_evaluation_does():
    config = Config(datasource='omniglot', num_filters=4, update_batch_size=1, update_lr=0.4,
                    meta_batch_size=2, num_updates=1)
    learner = MetaLearner(None, config, seed=0)
    rng = np.random.default_rng(0)
    x, x_query = (rng.uniform(0, 1, (5, 784)).astype(np.float32) for _ in range(2))
    y = np.eye(5, dtype=np.float32)
    reported = learner.evaluate(1, num_steps=2, batches=iter([[x[None], x_query[None], y[None],
                                                                y[None]]]))
    for steps in (1, 2):
        logits = learner.predict(x_query, learner.adapt(x, y, num_steps=steps)).numpy()
        accuracy = np.mean(np.argmax(logits, 1) == np.arange(5))
        assert accuracy == pytest.approx(reported[steps])


def test_an_object_that_is_no_model_is_refused_in_one_line():
    with pytest.raises(NetworkError, match='return a keras.Model or a networks.Network') as e:
        MetaLearner(object(), _sine_config())
    assert '\n' not in str(e.value)
