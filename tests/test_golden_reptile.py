"""The independent float64 Reptile that writes the golden Reptile step files
(tests/golden_reptile.py), checked on its own: against closed forms and hand
computations, for determinism against the committed files, its networks
against the original program's variables and outputs in the MAML step files,
and every Reptile step file in MAML_GOLDEN_DIR for consistency with the
format's rules.

These test the generator, not the project.
"""
import ast
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import golden_reptile as reptile

GOLDEN_DIR = os.environ.get('MAML_GOLDEN_DIR', reptile.GOLDEN_DIR)
PROJECT_MODULES = {'networks', 'maml', 'steps', 'keras_network', 'utils'}


def _reptile_files():
    if not os.path.isdir(GOLDEN_DIR):
        return []
    return [name for name in sorted(os.listdir(GOLDEN_DIR))
            if reptile.is_reptile_step_file(os.path.join(GOLDEN_DIR, name))]


def _linear_flags(**overrides):
    """A sinusoid net without hidden layers: y = x w + b, a linear regression."""
    return dict(reptile._flags(dim_hidden=[], **overrides))


def test_the_generator_imports_none_of_the_projects_model_or_algorithm_modules():
    tree = ast.parse(open(reptile.__file__).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or '').split('.')[0])
    assert not imported & PROJECT_MODULES, imported & PROJECT_MODULES


def test_sgd_on_a_linear_regression_follows_the_closed_form_gradient_step_by_step():
    flags = _linear_flags(inner_optimizer='sgd', update_lr=0.05, inner_iters=4)
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-2, 2, (4, 6, 1))
    labels = 3 * inputs - 1 + rng.normal(0, 0.1, inputs.shape)
    init = {'model/Variable': np.array([[0.5]]), 'model/Variable_1': np.array([0.2])}
    adapted, losses = reptile.adapt(init, inputs, labels, flags)
    w, b = 0.5, 0.2
    for step, (x, y) in enumerate(zip(inputs, labels)):
        residual = x[:, 0] * w + b - y[:, 0]
        assert losses[step] == pytest.approx(np.mean(residual ** 2), rel=1e-12)
        # d/dw mean(r^2) = 2 mean(r x), d/db = 2 mean(r)
        w, b = w - 0.05 * 2 * np.mean(residual * x[:, 0]), b - 0.05 * 2 * np.mean(residual)
    assert adapted['model/Variable'][0, 0] == pytest.approx(w, rel=1e-12)
    assert adapted['model/Variable_1'][0] == pytest.approx(b, rel=1e-12)


def test_adam_with_beta1_zero_matches_two_steps_computed_by_hand():
    g1, g2 = np.array([0.3, -2.0, 1e-9]), np.array([-0.1, -1.0, 0.5])
    weight, state, lr = np.array([1.0, 2.0, 3.0]), {}, 0.01
    weight1 = reptile.adam_update(tf.constant(weight), tf.constant(g1), state, lr)
    weight2 = reptile.adam_update(weight1, tf.constant(g2), state, lr)
    v1 = 0.001 * g1 ** 2
    by_hand1 = weight - lr * np.sqrt(1 - 0.999) * g1 / (np.sqrt(v1) + 1e-8)
    v2 = 0.999 * v1 + 0.001 * g2 ** 2
    by_hand2 = by_hand1 - lr * np.sqrt(1 - 0.999 ** 2) * g2 / (np.sqrt(v2) + 1e-8)
    np.testing.assert_allclose(weight1.numpy(), by_hand1, rtol=1e-14)
    np.testing.assert_allclose(weight2.numpy(), by_hand2, rtol=1e-14)


def test_adam_in_the_inner_loop_matches_the_hand_computation_on_a_linear_regression():
    flags = _linear_flags(inner_optimizer='adam', update_lr=0.1, inner_iters=2)
    rng = np.random.default_rng(1)
    inputs = rng.uniform(-2, 2, (2, 5, 1))
    labels = -2 * inputs + 0.5
    init = {'model/Variable': np.array([[0.5]]), 'model/Variable_1': np.array([0.2])}
    adapted, _ = reptile.adapt(init, inputs, labels, flags)
    params, v = np.array([0.5, 0.2]), np.zeros(2)
    for t, (x, y) in enumerate(zip(inputs, labels), start=1):
        residual = x[:, 0] * params[0] + params[1] - y[:, 0]
        grad = np.array([2 * np.mean(residual * x[:, 0]), 2 * np.mean(residual)])
        v = 0.999 * v + 0.001 * grad ** 2
        params = params - 0.1 * np.sqrt(1 - 0.999 ** t) * grad / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose([adapted['model/Variable'][0, 0], adapted['model/Variable_1'][0]],
                               params, rtol=1e-12)


def test_each_task_starts_with_a_fresh_adam_state():
    flags = reptile._flags(inner_optimizer='adam', update_lr=0.01, inner_iters=2, inner_batch=3)
    rng = np.random.default_rng(2)
    init = reptile.initial_values(flags, rng)
    inputs, labels = rng.uniform(-5, 5, (2, 3, 1)), rng.uniform(-1, 1, (2, 3, 1))
    first, _ = reptile.adapt(init, inputs, labels, flags)
    reptile.adapt(init, inputs[::-1], labels[::-1], flags)  # another task in between
    again, _ = reptile.adapt(init, inputs, labels, flags)
    for name in init:
        np.testing.assert_array_equal(first[name], again[name])


def test_the_meta_step_moves_phi_by_epsilon_times_the_mean_of_the_task_displacements():
    phi = {'a': np.array([1.0, -2.0]), 'b': np.array([[0.5]])}
    adapted = [{'a': np.array([2.0, -2.0]), 'b': np.array([[1.5]])},
               {'a': np.array([0.0, 1.0]), 'b': np.array([[0.0]])},
               {'a': np.array([1.0, -5.0]), 'b': np.array([[0.5]])}]
    after = reptile.reptile_meta_step(phi, adapted, 0.3)
    np.testing.assert_allclose(after['a'], [1.0 + 0.3 * 0.0, -2.0 + 0.3 * 0.0])
    np.testing.assert_allclose(after['b'], [[0.5 + 0.3 * (1.0 - 0.5 + 0.0) / 3]])


def test_epsilon_is_annealed_linearly_from_meta_step_to_meta_step_final():
    assert reptile.annealed_meta_step(1.0, 0.2, 0, 100) == 1.0
    assert reptile.annealed_meta_step(1.0, 0.2, 50, 100) == pytest.approx(0.6)
    assert reptile.annealed_meta_step(1.0, 0.2, 100, 100) == pytest.approx(0.2)


def test_minibatches_cycle_through_reshuffled_passes_over_the_task_samples():
    order = reptile.minibatch_indices(10, 4, 5, np.random.default_rng(3))
    assert order.shape == (5, 4)
    flat = order.ravel()
    for start in (0, 10):  # two whole passes, each a permutation of the samples
        assert sorted(flat[start:start + 10]) == list(range(10))


def test_batch_norm_leaves_each_channel_with_mean_beta_and_the_definitions_variance():
    flags = {'norm': 'batch_norm'}
    x = tf.constant(np.random.default_rng(4).normal(2, 3, (6, 5, 5, 3)))
    beta = np.array([0.1, -0.2, 0.3])
    out = reptile.normalise(x, flags, {'model/0/beta': tf.constant(beta)}, '0').numpy()
    xs = x.numpy()
    mean, var = xs.mean((0, 1, 2)), xs.var((0, 1, 2))
    np.testing.assert_allclose(out, np.maximum((xs - mean) / np.sqrt(var + 1e-3) + beta, 0),
                               rtol=1e-12, atol=1e-12)


def test_the_biases_before_a_batch_norm_have_a_zero_gradient_and_stay_put_under_adam():
    flags = reptile._flags(**dict(reptile.OMNIGLOT, norm='batch_norm', inner_optimizer='adam',
                                  update_lr=0.001, inner_iters=2, inner_batch=5))
    rng = np.random.default_rng(5)
    init = reptile.initial_values(flags, rng)
    inputs, labels, _ = reptile.task_samples(flags, rng)
    order = reptile.minibatch_indices(len(inputs), 5, 2, rng)
    adapted, _ = reptile.adapt(init, inputs[order], labels[order], flags)
    for name in reptile.biases_feeding_batch_norm(flags):
        np.testing.assert_allclose(adapted[name], init[name], rtol=0, atol=1e-9)
    # and the other variables do move
    assert np.abs(adapted['model/conv1'] - init['model/conv1']).max() > 1e-4


@pytest.mark.parametrize('name', sorted(reptile.STEP_FILES))
def test_regenerating_a_committed_step_file_gives_its_numbers(name):
    path = os.path.join(reptile.GOLDEN_DIR, name + '.npz')
    assert os.path.exists(path), '%s missing: run python tests/golden_reptile.py' % path
    fresh = reptile.step_file_record(name)
    with np.load(path) as z:
        assert sorted(z.files) == sorted(fresh), name
        for key, value in fresh.items():
            stored = z[key]
            if key.startswith(('adapted/', 'after_step/')) or key.endswith('/losses'):
                # float64 results: the same up to the summation order of the kernels
                np.testing.assert_allclose(stored, value, rtol=1e-10, atol=1e-13, err_msg=key)
            else:  # flags, names, initial values and batches: bit for bit
                assert stored.dtype == np.asarray(value).dtype, key
                np.testing.assert_array_equal(stored, value, err_msg=key)


def test_the_golden_directory_holds_reptile_step_files():
    assert _reptile_files(), 'no Reptile step files (algorithm = reptile) in %s' % GOLDEN_DIR


@pytest.mark.parametrize('filename', _reptile_files())
def test_a_reptile_step_file_keeps_the_formats_rules(filename):
    """The rules of tests/golden/README.md, section 4, that need no model."""
    z = np.load(os.path.join(GOLDEN_DIR, filename))
    flags = json.loads(str(z['flags_json']))
    var_names = [str(n) for n in z['var_names']]
    shapes = json.loads(str(z['var_shapes_json']))
    assert int(z['format_version']) == reptile.FORMAT_VERSION
    assert flags['algorithm'] == 'reptile' and flags['inner_optimizer'] in ('sgd', 'adam')
    assert str(z['inner_adam_state']) == 'per_task'
    assert sorted(str(n) for n in z['inner_var_names']) == sorted(var_names)
    assert float(z['epsilon']) == flags['epsilon'] == pytest.approx(reptile.annealed_meta_step(
        flags['meta_step'], flags['meta_step_final'], flags['iteration'],
        flags['metatrain_iterations']), rel=1e-12)
    k, batch = flags['inner_iters'], flags['inner_batch']
    tasks = flags['meta_batch_size']
    for name in var_names:
        assert z['init/' + name].dtype == np.float32
        assert list(z['init/' + name].shape) == shapes[name]
        displacement = np.mean([z['adapted/%d/%s' % (i, name)] - z['init/' + name]
                                for i in range(tasks)], axis=0)
        np.testing.assert_allclose(z['after_step/' + name],
                                   z['init/' + name] + flags['epsilon'] * displacement,
                                   rtol=1e-12, atol=1e-15, err_msg=name)
    for i in range(tasks):
        assert z['task%d/inputs' % i].dtype == np.float32
        assert z['task%d/inputs' % i].shape[:2] == (k, batch)
        assert z['task%d/labels' % i].shape[:2] == (k, batch)
        assert z['task%d/losses' % i].shape == (k,)


def _maml_step_files():
    names = []
    for name in sorted(os.listdir(GOLDEN_DIR)) if os.path.isdir(GOLDEN_DIR) else []:
        if name.endswith('.npz'):
            with np.load(os.path.join(GOLDEN_DIR, name)) as z:
                if 'config_name' in z.files and 'algorithm' not in z.files:
                    names.append(name)
    return names


@pytest.mark.parametrize('filename', _maml_step_files())
def test_the_generators_network_reproduces_the_reference_programs_variables_and_outputs(
        filename):
    """The MAML step files hold the original program's variables and its
    pre-update outputs: the generator's own nets must give the same."""
    z = np.load(os.path.join(GOLDEN_DIR, filename))
    maml_flags = json.loads(str(z['flags_json']))
    flags = {key: maml_flags[key] for key in
             ('datasource', 'num_classes', 'norm', 'conv', 'max_pool', 'num_filters')}
    architecture = reptile.architecture(flags)
    shapes = json.loads(str(z['var_shapes_json']))
    assert [name for name, _, _ in architecture] == [str(n) for n in z['var_names']]
    assert {name: list(shape) for name, _, shape in architecture} == shapes
    params = {name: tf.constant(z['init/' + name], tf.float64) for name, _, _ in architecture}
    for task, inputs in enumerate(z['inputa']):
        outputs = reptile.forward(params, tf.constant(inputs, tf.float64), flags).numpy()
        expected = z['outputas'][task]
        np.testing.assert_allclose(outputs, expected, rtol=1e-4,
                                   atol=1e-4 * np.abs(expected).max(), err_msg=filename)
