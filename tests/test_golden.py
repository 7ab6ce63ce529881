"""Parity with the reference program, file by file.

Every file in MAML_GOLDEN_DIR (default: tests/golden, a copy of the numbers the
original TF1 program produced) becomes its own test case:
- model step files (`*.npz` with a `config_name` key): build the model from the
  file's flags, load its initial variables by their reference names, feed its
  batch and compare losses, accuracies, outputs, meta-gradients and the
  variables after one Adam step; twice, on one device and with the meta-batch
  split over two replicas (a MirroredStrategy over two logical CPU devices),
  and as a summary iteration (the totals returned by the training step); and
  once more on the generic path: the same network written as a plain Keras
  model (keras_network.reference_keras_model) behind KerasNetwork, at the
  same tolerances;
- Reptile step files (`*.npz` whose `algorithm` key is `reptile`, README
  section 4 of tests/golden): build reptile.Reptile from the file's flags,
  load its initial variables, replay each task's mini-batches, and compare the
  inner losses, each task's adapted weights and the weights after the meta
  step, with epsilon from the port's own schedule checked against the file's;
  on the built-in network and on the same network as a Keras model;
- `sinusoid_batches*.npz`: the sinusoid generator reproduces every batch bit for bit;
- `tasks_*.json`: the image task lists (class folder split and first tasks).
(test_golden_reptile.py checks the Reptile files' own generator.)
Any other file fails: the test does not silently ignore what it cannot read.
"""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from config import Config
from conftest import two_cpu_strategy
from data_generator import DataGenerator
from distribute import Replicas
from keras_network import KerasNetwork, reference_checkpoint_names, reference_keras_model
from maml import MAML
from reptile import INNER_LOSSES, Reptile, meta_step_size
from steps import Steps

GOLDEN_DIR = os.environ.get('MAML_GOLDEN_DIR',
                            os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden'))
IGNORED = {'README.md'}


def _golden_files():
    if not os.path.isdir(GOLDEN_DIR):
        return []
    return sorted(f for f in os.listdir(GOLDEN_DIR) if f not in IGNORED)


def test_golden_directory_exists_and_is_not_empty():
    assert os.path.isdir(GOLDEN_DIR), (
        'golden directory %s not found: set MAML_GOLDEN_DIR or restore tests/golden' % GOLDEN_DIR)
    assert _golden_files(), 'golden directory %s holds no files' % GOLDEN_DIR


def _kind(filename, path):
    if filename.endswith('.json') and filename.startswith('tasks_'):
        return 'tasks'
    if filename.endswith('.npz'):
        with np.load(path) as z:
            # Reptile step files have a config_name too; their algorithm key tells them apart.
            if 'algorithm' in z.files and str(z['algorithm']) == 'reptile':
                return 'reptile_step'
            if 'config_name' in z.files:
                return 'model_step'
            if filename.startswith('sinusoid_batches'):
                return 'sinusoid_batches'
    return None


def _cases():
    # Task-list files prepare the real data sets first: slow.
    return [pytest.param(f, marks=pytest.mark.slow) if f.startswith('tasks_') else f
            for f in _golden_files()]


@pytest.mark.parametrize('filename', _cases())
def test_golden_file(filename):
    path = os.path.join(GOLDEN_DIR, filename)
    kind = _kind(filename, path)
    if kind == 'model_step':
        check_model_step(path, Replicas())
    elif kind == 'reptile_step':
        check_reptile_step(path, build=_builtin_reptile)
    elif kind == 'sinusoid_batches':
        check_sinusoid_batches(path)
    elif kind == 'tasks':
        from golden_tasks import check_task_list
        check_task_list(path)
    else:
        pytest.fail('cannot interpret golden file %s: not a model step .npz (with config_name), '
                    'a Reptile step .npz (algorithm reptile), a sinusoid_batches*.npz or a '
                    'tasks_*.json' % filename)


# ------------------------------------------------------------- model steps
def _close(actual, expected, rtol, atol=0.0, what=''):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol,
                               err_msg=what)


def _model_step_files():
    return [f for f in _golden_files() if _kind(f, os.path.join(GOLDEN_DIR, f)) == 'model_step']


@pytest.mark.parametrize('filename', _model_step_files())
def test_golden_model_step_split_over_two_replicas(filename):
    check_model_step(os.path.join(GOLDEN_DIR, filename),
                     Replicas(two_cpu_strategy()))


@pytest.mark.parametrize('filename', _model_step_files())
def test_golden_model_step_as_a_summary_iteration_with_its_totals_from_the_training_step(
        filename):
    check_model_step(os.path.join(GOLDEN_DIR, filename), Replicas(), summarised=True)


@pytest.mark.parametrize('filename', _model_step_files())
def test_golden_model_step_on_the_same_network_written_as_a_keras_model(filename):
    check_model_step(os.path.join(GOLDEN_DIR, filename), Replicas(), build=_keras_maml)


@pytest.mark.parametrize('filename', _model_step_files())
def test_golden_model_step_on_the_keras_model_split_over_two_replicas(filename):
    check_model_step(os.path.join(GOLDEN_DIR, filename), Replicas(two_cpu_strategy()),
                     build=_keras_maml)


def _builtin_maml(config):
    return MAML(config, seed=0)


def _keras_maml(config):
    """The reference's net as a plain Keras model on the generic path, its
    variables named by the reference's names so that the file's apply."""
    keras_model = reference_keras_model(config)
    return MAML(config, network=KerasNetwork(
        keras_model, stop_grad=config.stop_grad,
        checkpoint_names=reference_checkpoint_names(keras_model, config)))


def check_model_step(path, replicas, summarised=False, build=_builtin_maml):
    z = np.load(path)
    flags = json.loads(str(z['flags_json']))
    config = Config.from_dict(flags)
    name = str(z['config_name'])
    num_updates = int(flags['num_updates'])
    eval_steps = max(num_updates, int(flags.get('test_num_updates', num_updates)))
    inputa, inputb = z['inputa'], z['inputb']
    labela, labelb = z['labela'], z['labelb']
    assert (config.dim_input, config.dim_output) == (inputa.shape[-1], labela.shape[-1]), \
        'input and output sizes differ from the reference (%s)' % name
    with replicas.strategy.scope():
        model = build(config)

    # Load the initial values by the reference's names; the model must have
    # exactly the reference's variables.
    named = model.named_variables()
    var_names = [str(n) for n in np.atleast_1d(z['var_names'])]
    if len(var_names) == 1 and '[' in var_names[0]:
        var_names = re.findall(r"'([^']+)'", var_names[0])
    weights_keys = re.findall(r"'([^']+)'", str(z['weights_keys']))
    weights_var_names = re.findall(r"'([^']+)'", str(z['weights_var_names']))
    if build is _builtin_maml:  # the reference's own creation order and keys
        assert list(named) == var_names, 'variables differ from the reference (%s)' % name
        assert list(model.weights) == weights_keys
    else:  # a Keras model orders its variables layer by layer
        assert sorted(named) == sorted(var_names), \
            'variables differ from the reference (%s)' % name
    adapted = [model.tf1_names[v.ref()] for v in model.weights.values()]
    assert sorted(adapted) == sorted(weights_var_names), 'adapted variables differ (%s)' % name
    for var_name, var in named.items():
        var.assign(z['init/' + var_name])

    forward_rtol = 1e-4 if config.datasource == 'miniimagenet' or not config.conv else 1e-5
    if config.datasource == 'sinusoid':
        forward_rtol = 1e-5
    # Elementwise arrays (outputs, per-example losses) hold values near zero
    # whose float32 error is set by the array's scale, not their own size: the
    # absolute part of the tolerance is rtol times the array's largest value.
    def scaled(expected):
        return forward_rtol * float(np.abs(expected).max())
    batch = [tf.constant(x) for x in (inputa, inputb, labela, labelb)]
    steps = Steps(model, replicas)

    def check_totals(res):
        _close(res['total_loss1'], z['total_loss1'], forward_rtol, what='total_loss1')
        _close(np.stack(res['total_losses2']), z['total_losses2'], forward_rtol,
               what='total_losses2')
        if config.classification:
            _close(res['total_accuracy1'], z['total_accuracy1'], 0, 1e-6, 'total_accuracy1')
            _close(np.stack(res['total_accuracies2']), z['total_accuracies2'], 0, 1e-6,
                   'total_accuracies2')

    if summarised:  # a summary iteration: the totals come with the training step
        step = steps.summarised_metatrain_step(*batch, eval_steps)
        check_totals(step)
    else:
        res = steps.evaluate(*batch, eval_steps)
        check_totals(res)
        _close(res['lossa'], z['lossesa'], forward_rtol, scaled(z['lossesa']), 'lossesa')
        _close(np.stack(res['lossesb']), z['lossesb'], forward_rtol, scaled(z['lossesb']),
               'lossesb')
        _close(res['outputa'], z['outputas'], forward_rtol, scaled(z['outputas']), 'outputas')
        _close(np.stack(res['outputbs']), z['outputbs'], forward_rtol, scaled(z['outputbs']),
               'outputbs')
        if config.classification:
            _close(res['accuracya'], z['accuraciesa'], 0, 1e-6, 'accuraciesa')
            _close(np.stack(res['accuraciesb']), z['accuraciesb'], 0, 1e-6, 'accuraciesb')
        step = steps.metatrain_step(*batch)
    _close(step['objective'], z['total_losses2'][num_updates - 1], forward_rtol, what='objective')
    if config.datasource == 'miniimagenet':
        grad_atol_frac, grad_rtol = 1e-2, 5e-3
    else:
        grad_atol_frac, grad_rtol = 1e-3, 1e-4
    for key, mine in (('metagrad_unclipped', step['metagrads_unclipped']),
                      ('metagrad', step['metagrads'])):
        largest = max(np.abs(z['%s/%s' % (key, v)]).max() for v in var_names)
        atol = grad_atol_frac * largest
        for var_name in var_names:
            expected = z['%s/%s' % (key, var_name)]
            rtol = grad_rtol
            if _feeds_batch_norm(config, weights_keys, weights_var_names, var_name):
                rtol = 0.0  # true gradient is exactly 0; the recorded value is float noise
            _close(mine[var_name], expected, rtol, atol, '%s %s' % (key, var_name))

    largest = max(np.abs(z['metagrad/' + v]).max() for v in var_names)
    for var_name, var in named.items():
        grad = z['metagrad/' + var_name]
        after, init, now = z['after_step/' + var_name], z['init/' + var_name], var.numpy()
        significant = np.abs(grad) > 1e-3 * largest
        np.testing.assert_allclose(now[significant], after[significant], rtol=0, atol=1e-5,
                                   err_msg='after_step ' + var_name)
        assert np.all(np.abs(now - init) <= config.meta_lr * (1 + 1e-4) + 1e-7), var_name


def _feeds_batch_norm(config, weights_keys, weights_var_names, var_name):
    """The biases right before a batch norm (every bias but the output layer's):
    their true meta-gradient is 0."""
    if config.norm != 'batch_norm':
        return False
    biases = [(int(k[1:]), n) for k, n in zip(weights_keys, weights_var_names)
              if re.fullmatch(r'b\d+', k)]
    return var_name in [n for _, n in sorted(biases)[:-1]]


# ------------------------------------------------------------ Reptile steps
def _reptile_step_files():
    return [f for f in _golden_files()
            if _kind(f, os.path.join(GOLDEN_DIR, f)) == 'reptile_step']


@pytest.mark.parametrize('filename', _reptile_step_files())
def test_golden_reptile_step_on_the_same_network_written_as_a_keras_model(filename):
    check_reptile_step(os.path.join(GOLDEN_DIR, filename), build=_keras_reptile)


def _builtin_reptile(config):
    return Reptile(config, seed=0)


def _keras_reptile(config):
    keras_model = reference_keras_model(config)
    return Reptile(config, network=KerasNetwork(
        keras_model, checkpoint_names=reference_checkpoint_names(keras_model, config)))


def _names(z, key):
    names = [str(n) for n in np.atleast_1d(z[key])]
    if len(names) == 1 and '[' in names[0]:
        names = re.findall(r"'([^']+)'", names[0])
    return names


def _adam_reach(update_lr, inner_iters):
    """How far Adam with beta1 = 0 can move one element in inner_iters steps."""
    return update_lr * sum(np.sqrt((1 - 0.999 ** t) / 0.001) for t in range(1, inner_iters + 1))


def check_reptile_step(path, build):
    """One Reptile meta-step against the file, by the rules and tolerances of
    tests/golden/README.md section 4."""
    z = np.load(path)
    name = os.path.basename(path)
    # Rule 1: the format and the inner loop's definition this port implements.
    assert int(z['format_version']) == 1, 'unknown Reptile format_version in %s' % name
    flags = json.loads(str(z['flags_json']))
    config = Config.from_dict(flags).validate()
    assert config.algorithm == 'reptile'
    assert flags['inner_loss'] == INNER_LOSSES[config.classification], \
        'unknown inner_loss %s in %s' % (flags['inner_loss'], name)
    assert flags['inner_optimizer'] in ('sgd', 'adam'), \
        'unknown inner_optimizer %s in %s' % (flags['inner_optimizer'], name)
    assert config.reptile.inner_optimizer == flags['inner_optimizer']
    assert str(z['inner_adam_state']) == 'per_task', \
        'unknown inner_adam_state %s in %s' % (z['inner_adam_state'], name)
    adam = json.loads(str(z['inner_adam_json']))
    assert (adam['beta1'], adam['beta2'], adam['epsilon']) == (0, 0.999, 1e-8), name

    # Rule 2: the network, its variables set to the file's initial values.
    model = build(config)
    named = model.named_variables()
    var_names = _names(z, 'var_names')
    assert sorted(named) == sorted(var_names), 'variables differ from the file (%s)' % name
    assert sorted(_names(z, 'inner_var_names')) == sorted(var_names), \
        'the inner loop trains every variable (%s)' % name
    for var_name, var in named.items():
        var.assign(z['init/' + var_name])

    # Rules 3 and 4: replay the mini-batches; epsilon from the port's schedule.
    tasks = config.meta_batch_size
    inputs = np.stack([z['task%d/inputs' % i] for i in range(tasks)])
    labels = np.stack([z['task%d/labels' % i] for i in range(tasks)])
    assert inputs.shape[:3] == (tasks, config.reptile.inner_iters, config.reptile.inner_batch)
    epsilon = meta_step_size(config, int(flags['iteration']))
    np.testing.assert_allclose(epsilon, float(z['epsilon']), rtol=1e-12,
                               err_msg='epsilon from the schedule')
    step = model.metatrain_step(inputs, labels, int(flags['iteration']), return_adapted=True)

    for i in range(tasks):
        _close(step['losses'][i], z['task%d/losses' % i], 1e-4, what='task%d/losses' % i)
    # The file's float64 values, by name; mine by name.
    by_name = {n: k for k, n in model.network.checkpoint_names.items()}
    f = 1e-2 if config.reptile.inner_optimizer == 'adam' else 1e-3
    weights_keys, weights_var_names = _names(z, 'weights_keys'), _names(z, 'weights_var_names')
    reach = _adam_reach(config.update_lr, config.reptile.inner_iters)

    def check(mine, expected, init, largest_move, what, var_name):
        if _feeds_batch_norm(config, weights_keys, weights_var_names, var_name):
            # True gradient 0: the file has it unmoved; float32 moves it by noise.
            moved = np.abs(mine - init).max()
            assert moved <= largest_move * (1 + 1e-6), '%s moved %g > %g' % (
                what, moved, largest_move)
            return
        tolerance = 1e-5 * np.abs(expected) + f * np.abs(expected - init).max()
        excess = np.abs(mine - expected) - tolerance
        assert np.all(excess <= 0), '%s: off by up to %g beyond the tolerance' % (
            what, excess.max())

    for i in range(tasks):
        file_moves = {n: np.abs(z['adapted/%d/%s' % (i, n)] - z['init/' + n]).max()
                      for n in var_names}
        bound = reach if config.reptile.inner_optimizer == 'adam' else \
            1e-3 * max(file_moves.values())
        for var_name in var_names:
            check(step['adapted'][by_name[var_name]].numpy()[i],
                  z['adapted/%d/%s' % (i, var_name)], z['init/' + var_name], bound,
                  'adapted/%d/%s' % (i, var_name), var_name)
    after_moves = {n: np.abs(z['after_step/' + n] - z['init/' + n]).max() for n in var_names}
    bound = epsilon * reach if config.reptile.inner_optimizer == 'adam' else \
        1e-3 * max(after_moves.values())
    for var_name, var in named.items():
        check(var.numpy(), z['after_step/' + var_name], z['init/' + var_name], bound,
              'after_step/' + var_name, var_name)


# -------------------------------------------------------- sinusoid batches
def check_sinusoid_batches(path):
    z = np.load(path)
    groups = sorted({k.rsplit('/', 1)[0] for k in z.files})
    assert groups, 'no batches in %s' % path
    by_run = {}
    for group in groups:
        m = re.fullmatch(r'seed(\d+)_n(\d+)_b(\d+)_(call(\d+)|inputidx(\d+))', group)
        assert m, 'cannot interpret key %s in %s' % (group, path)
        by_run.setdefault(m.group(1, 2, 3), []).append((group, m))
    for (seed, n, b), entries in by_run.items():
        calls = sorted((int(m.group(5)), g) for g, m in entries if m.group(5) is not None)
        config = Config(datasource='sinusoid')
        if calls:
            assert [c for c, _ in calls] == list(range(len(calls))), 'calls must start at 0'
            np.random.seed(int(seed))
            generator = DataGenerator(int(n), int(b), config)
            for _, group in calls:
                _check_sine_batch(z, group, generator.generate())
        for group, m in entries:
            if m.group(6) is not None:
                np.random.seed(int(seed))
                generator = DataGenerator(int(n), int(b), config)
                _check_sine_batch(z, group, generator.generate(input_idx=int(m.group(6))))


def _check_sine_batch(z, group, batch):
    for key, value in zip(('inputs', 'outputs', 'amp', 'phase'), batch):
        expected = z['%s/%s' % (group, key)]
        assert value.dtype == expected.dtype and value.shape == expected.shape, (group, key)
        assert np.array_equal(value, expected), '%s/%s differs' % (group, key)
