"""The compiled steps on several replicas equal one device's. Each test one sentence.

The golden files split evenly; these split a meta-batch unevenly, and over
more replicas than tasks, on two logical CPU devices (the code path of two GPUs).
"""
import numpy as np
import pytest

from config import Config
from conftest import two_cpu_strategy
from distribute import Replicas
from maml import MAML
from steps import Steps


def _omniglot_batch(tasks):
    rng = np.random.default_rng(4)
    labels = np.broadcast_to(np.eye(5, dtype=np.float32), (tasks, 5, 5)).copy()
    return [rng.uniform(0, 1, (tasks, 5, 784)).astype(np.float32),
            rng.uniform(0, 1, (tasks, 5, 784)).astype(np.float32), labels, labels]


def _on_one_device_and_on_two_replicas(tasks, datasource='omniglot'):
    config = Config(datasource=datasource, num_filters=4, update_batch_size=1, update_lr=0.4,
                    num_updates=2, meta_batch_size=tasks)
    batch = _omniglot_batch(tasks)
    results = []
    for replicas in (Replicas(), Replicas(two_cpu_strategy())):
        with replicas.strategy.scope():
            model = MAML(config, seed=0)
        steps = Steps(model, replicas)
        evaluated = steps.evaluate(*batch, 3)
        step = steps.metatrain_step(*batch)
        results.append((evaluated, step))
    return results


def _assert_close(mine, expected, rtol=1e-5):
    mine, expected = np.asarray(mine), np.asarray(expected)
    np.testing.assert_allclose(mine, expected, rtol=0,
                               atol=rtol * max(1e-6, float(np.abs(expected).max())))


@pytest.mark.parametrize('tasks', [3, 1], ids=['3 tasks on 2 replicas', '1 task on 2 replicas'])
def test_a_meta_batch_split_over_two_replicas_gives_one_devices_results(tasks):
    (ev1, step1), (ev2, step2) = _on_one_device_and_on_two_replicas(tasks)
    for key in ('total_loss1', 'total_accuracy1'):
        _assert_close(ev2[key], ev1[key])
    _assert_close(np.stack(ev2['total_losses2']), np.stack(ev1['total_losses2']))
    _assert_close(ev2['task_values'], ev1['task_values'])
    assert ev2['task_values'].shape == (tasks, 4)
    _assert_close(ev2['outputa'], ev1['outputa'])
    _assert_close(np.stack(ev2['outputbs']), np.stack(ev1['outputbs']))
    _assert_close(step2['objective'], step1['objective'])
    largest = max(float(np.abs(g).max()) for g in step1['metagrads'].values())
    for name, grad in step1['metagrads'].items():
        np.testing.assert_allclose(step2['metagrads'][name], grad, rtol=0, atol=1e-4 * largest,
                                   err_msg=name)


def test_clipping_applies_to_the_meta_gradient_summed_over_replicas():
    config = Config(datasource='miniimagenet', num_filters=2, update_batch_size=1,
                    update_lr=0.01, num_updates=1, meta_batch_size=3, max_pool=True)
    rng = np.random.default_rng(5)
    labels = np.broadcast_to(np.eye(5, dtype=np.float32), (3, 5, 5)).copy()
    batch = [rng.uniform(0, 1, (3, 5, 84 * 84 * 3)).astype(np.float32),
             rng.uniform(0, 1, (3, 5, 84 * 84 * 3)).astype(np.float32), labels, labels]
    with two_cpu_strategy().scope():
        model = MAML(config, seed=0)
    # Scaled weights give meta-gradients far beyond the clip value of 10.
    model.weights['w5'].assign(model.weights['w5'] * 300.0)
    step = Steps(model, Replicas(two_cpu_strategy())).metatrain_step(*batch)
    unclipped = step['metagrads_unclipped']['model/w5'].numpy()
    assert np.abs(unclipped).max() > 10
    np.testing.assert_array_equal(step['metagrads']['model/w5'].numpy(),
                                  np.clip(unclipped, -10, 10))


@pytest.mark.parametrize('tasks,two_replicas', [(3, False), (1, True)],
                         ids=['3 tasks on one device', '1 task on 2 replicas'])
def test_a_summary_iteration_reports_and_trains_as_evaluate_then_the_step(tasks, two_replicas):
    config = Config(datasource='omniglot', num_filters=4, update_batch_size=1, update_lr=0.4,
                    num_updates=1, meta_batch_size=tasks)
    batch = _omniglot_batch(tasks)
    models, outputs = [], []
    for summarised in (False, True):
        replicas = Replicas(two_cpu_strategy()) if two_replicas else Replicas()
        with replicas.strategy.scope():
            model = MAML(config, seed=0)
        steps = Steps(model, replicas)
        if summarised:
            outputs.append(steps.summarised_metatrain_step(*batch, 3))
        else:
            outputs.append(dict(steps.evaluate(*batch, 3), **steps.metatrain_step(*batch)))
        models.append(model)
    separate, summarised = outputs
    for key in ('total_loss1', 'total_accuracy1', 'objective'):
        np.testing.assert_array_equal(summarised[key], separate[key], err_msg=key)
    for key in ('total_losses2', 'total_accuracies2'):
        assert len(summarised[key]) == 3
        np.testing.assert_array_equal(np.stack(summarised[key]), np.stack(separate[key]), key)
    for name, var in models[0].named_variables().items():
        np.testing.assert_array_equal(models[1].named_variables()[name].numpy(), var.numpy(),
                                      err_msg=name)
