"""--model: a network named on the command line (model_source.py).

The models live in small modules that each test writes into its tmp_path, as
a user's own file would be; bad ones must each give one line naming the problem.
"""
import os
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import checkpoint
import model_source
from config import Config, ConfigError
from conftest import SINE, SINE_EXP, run_main
from networks import NetworkError

MODELS = '''
import keras
import numpy as np
from keras_network import ExactBatchNormalization
from networks import ForwardFunction


def mlp(config):
    model = keras.Sequential([keras.layers.Dense(16, activation='relu'),
                              keras.layers.Dense(config.dim_output)])
    model.build((None, config.dim_input))
    return model


def unbuilt(config):
    return keras.Sequential([keras.layers.Dense(16, activation='relu'),
                             keras.layers.Dense(config.dim_output)])


class TwoLayers(keras.Model):
    def __init__(self, outputs):
        super().__init__()
        self.hidden, self.head = keras.layers.Dense(16), keras.layers.Dense(outputs)

    def call(self, x):
        return self.head(keras.activations.relu(self.hidden(x)))


def unbuilt_subclassed(config):
    return TwoLayers(config.dim_output)


def exact_batch_norm(config):
    return keras.Sequential([keras.Input((config.dim_input,)), keras.layers.Dense(8),
                             ExactBatchNormalization(), keras.layers.ReLU(),
                             keras.layers.Dense(config.dim_output)])


def forward_function(config):
    def forward(inp, weights):
        return inp @ weights['w'] + weights['b']
    return ForwardFunction(forward, {'w': np.zeros((config.dim_input, config.dim_output),
                                                   np.float32),
                                     'b': np.zeros(config.dim_output, np.float32)})


def three_outputs(config):
    return keras.Sequential([keras.Input((config.dim_input,)), keras.layers.Dense(3)])


def keras_batch_norm(config):
    return keras.Sequential([keras.Input((config.dim_input,)), keras.layers.Dense(8),
                             keras.layers.BatchNormalization(), keras.layers.Dense(1)])


def dropout(config):
    return keras.Sequential([keras.Input((config.dim_input,)), keras.layers.Dense(8),
                             keras.layers.Dropout(0.5, name='dropout'), keras.layers.Dense(1)])


def not_a_model(config):
    return 'mlp'


def fails(config):
    return 1 / 0


def wrong_input(config):
    return keras.Sequential([keras.Input((7,)), keras.layers.Dense(1)])


NOT_CALLABLE = 3
'''


@pytest.fixture
def models(tmp_path):
    path = tmp_path / 'my_models.py'
    path.write_text(MODELS)
    return str(path)


def _load(spec, **flags):
    config = Config(**dict(dict(datasource='sinusoid', norm='None', model=spec), **flags))
    return model_source.load(config.validate())


def test_without_model_the_reference_network_is_used_and_its_folder_name_is_unchanged():
    assert model_source.load(Config()) is None
    assert Config(model=None).exp_string == Config().exp_string


def test_the_experiment_folder_names_the_model_so_it_never_shares_the_reference_nets():
    base = Config().exp_string
    assert Config(model='my_models:resnet12').exp_string == base + '.model_my_models.resnet12'
    assert Config(model='lib/my models.py:cnn').exp_string == base + '.model_my_models.cnn'
    assert Config(model='pkg.nets:wide').exp_string == base + '.model_nets.wide'
    assert Config(model='saved/net.keras').exp_string == base + '.model_net'


@pytest.mark.parametrize('spec', ['my_models', 'my_models:', ':fn', 'file.py:1fn', 'net.h5'])
def test_a_model_flag_of_no_valid_form_is_a_config_error_naming_the_forms(spec):
    with pytest.raises(ConfigError, match='give module:function, path/to/file.py:function'):
        Config(model=spec).validate()


@pytest.mark.parametrize('function', ['mlp', 'exact_batch_norm', 'forward_function'])
def test_a_file_and_function_give_a_network_with_the_data_sources_output_size(models, function):
    network = _load(models + ':' + function)
    weights = network.initial_weights()
    out = network.forward_tasks(tf.zeros([2, 3, 1]), {k: weights[k] for k in network.adapted})
    assert out.shape == (2, 3, 1)


def test_a_module_in_the_current_folder_is_found_by_its_name(models, monkeypatch):
    monkeypatch.chdir(os.path.dirname(models))
    assert _load('my_models:mlp').checkpoint_names  # named by Keras paths


@pytest.mark.parametrize('function', ['unbuilt', 'unbuilt_subclassed'])
def test_an_unbuilt_keras_model_is_built_for_the_data_sources_input_saying_so(
        models, capsys, function):
    network = _load(models + ':' + function)
    assert network.model.built and len(network.initial_weights()) == 4
    assert 'built it for input shape (None, 1) (sinusoid x)' in capsys.readouterr().err


def test_a_saved_keras_model_with_the_exact_layers_loads_with_its_weights(models, tmp_path):
    import keras
    from keras_network import ExactBatchNormalization
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(8),
                              ExactBatchNormalization(), keras.layers.Dense(1)])
    path = str(tmp_path / 'net.keras')
    model.save(path)
    network = _load(path)
    loaded = list(network.initial_weights().values())  # in the model's order
    assert len(loaded) == len(model.trainable_variables)
    for value, v in zip(loaded, model.trainable_variables):
        np.testing.assert_array_equal(value.numpy(), v.numpy())


@pytest.mark.parametrize('suffix, message', [
    (':nowhere', 'my_models.py has no nowhere'),
    (':NOT_CALLABLE', 'NOT_CALLABLE is of type int, not a function'),
    (':not_a_model', 'returned an object of type str: return a keras.Model or a networks.Network'),
    (':fails', 'fails(config) raised ZeroDivisionError: division by zero (at '),
    (':three_outputs', 'gives outputs of shape [2, 3] for one task of 2 examples; '
                       '--datasource=sinusoid needs 1 prediction per example'),
    (':wrong_input', "fails on the data source's input, shape (examples, 1) (sinusoid x)"),
    (':keras_batch_norm', "Keras's BatchNormalization, whose statistics stop the gradient"),
    (':dropout', "layer 'dropout' (Dropout) draws random numbers in training"),
])
def test_a_bad_model_is_one_network_error_line_naming_the_problem(models, suffix, message):
    with pytest.raises(NetworkError) as error:
        _load(models + suffix)
    assert message in str(error.value) and '\n' not in str(error.value)
    assert str(error.value).startswith('--model=' + models + suffix)


def test_missing_modules_and_files_are_named(tmp_path):
    with pytest.raises(NetworkError, match='no module no_such_module_here on the Python path'):
        _load('no_such_module_here:fn')
    with pytest.raises(NetworkError, match='no file'):
        _load(str(tmp_path / 'absent.py') + ':fn')
    with pytest.raises(NetworkError, match='no such file'):
        _load(str(tmp_path / 'absent.keras'))


def test_keras_own_batch_norm_is_accepted_for_first_order_maml(models):
    assert _load(models + ':keras_batch_norm', stop_grad=True).adapted


# ------------------------------------------------------------- the command line
def _keras_weights(exp_dir, iteration):
    """{name: array} of the network weights (Keras paths, no optimiser slots) in a checkpoint."""
    reader = tf.train.load_checkpoint(os.path.join(exp_dir, 'model%d' % iteration))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if '/Adam' not in n and 'power' not in n and n != checkpoint.STATE_KEY}


@pytest.mark.slow
def test_a_custom_keras_model_trains_resumes_exactly_and_tests_like_the_builtin_network(
        models, tmp_path):
    args = SINE + ['--model=' + models + ':exact_batch_norm', '--seed=3', '--progress=False']
    exp = SINE_EXP + '.model_my_models.exact_batch_norm'
    whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
    run_main(args + ['--metatrain_iterations=2001', '--logdir=' + whole])
    first = run_main(args + ['--metatrain_iterations=1001', '--logdir=' + parts])
    assert first.stdout.splitlines() == ['Done initializing, starting training.',
                                         first.stdout.splitlines()[1]]
    assert first.stdout.splitlines()[1].startswith('Iteration 1000: ')
    resumed = run_main(args + ['--metatrain_iterations=2001', '--logdir=' + parts])
    assert resumed.stdout.splitlines()[0] == 'Restoring model weights from ' + os.path.join(
        parts, exp, 'model1000')
    assert resumed.stdout.splitlines()[2].startswith('Iteration 2000: ')

    a, b = _keras_weights(os.path.join(whole, exp), 2000), _keras_weights(
        os.path.join(parts, exp), 2000)
    assert a and sorted(a) == sorted(b) and all('/' in name for name in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)

    tested = run_main(args + ['--train=False', '--logdir=' + parts])
    assert 'Mean validation accuracy/loss, stddev, and confidence intervals' in tested.stdout
    assert os.path.exists(os.path.join(parts, exp, 'test_ubs5_stepsize0.01.csv'))
    assert os.path.exists(os.path.join(parts, exp, 'test_ubs5_stepsize0.01.pkl'))


@pytest.mark.slow
def test_a_checkpoint_of_another_model_gives_one_line_naming_the_variable(models, tmp_path):
    logdir = str(tmp_path)
    run_main(SINE + ['--model=' + models + ':mlp', '--metatrain_iterations=1',
                     '--logdir=' + logdir, '--progress=False'])
    # The same name, another architecture: the module changed since training.
    with open(models, 'a') as f:
        f.write(textwrap.dedent('''
            def mlp(config):
                return keras.Sequential([keras.Input((config.dim_input,)),
                                         keras.layers.Dense(config.dim_output)])
            '''))
    proc = run_main(SINE + ['--model=' + models + ':mlp', '--train=False', '--logdir=' + logdir,
                            '--progress=False'], check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith('error: checkpoint ') and proc.stderr.count('\n') == 1
    assert 'written by another model or other flags' in proc.stderr


@pytest.mark.slow
def test_a_bad_model_on_the_command_line_is_one_line_and_leaves_no_folder(models, tmp_path):
    logdir = str(tmp_path / 'logs')
    proc = run_main(SINE + ['--model=' + models + ':dropout', '--metatrain_iterations=1',
                            '--logdir=' + logdir], check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith('error: --model=') and proc.stderr.count('\n') == 1
    assert "draws random numbers in training" in proc.stderr
    assert not os.path.exists(logdir)


@pytest.mark.slow
def test_export_model_saves_the_checkpoints_weights_as_a_keras_model_instead_of_testing(
        models, tmp_path):
    import keras
    import keras_network  # noqa: F401 (the exact layers, for loading)
    args = SINE + ['--model=' + models + ':exact_batch_norm', '--logdir=' + str(tmp_path),
                   '--progress=False']
    run_main(args + ['--metatrain_iterations=2'])
    path = str(tmp_path / 'meta_learned.keras')
    proc = run_main(args + ['--train=False', '--export_model=' + path])
    exp_dir = os.path.join(str(tmp_path), SINE_EXP + '.model_my_models.exact_batch_norm')
    assert 'Exported the meta-learned initial weights of %s to %s' % (
        os.path.join(exp_dir, 'model1'), path) in proc.stderr
    assert 'Mean validation accuracy/loss' not in proc.stdout
    saved = _keras_weights(exp_dir, 1)
    reloaded = keras.saving.load_model(path, compile=False)
    # A loaded Sequential's paths lack the model's own name ('sequential/').
    by_layer = {name.split('/', 1)[1]: value for name, value in saved.items()}
    assert sorted(v.path for v in reloaded.trainable_variables) == sorted(by_layer)
    for v in reloaded.trainable_variables:
        np.testing.assert_array_equal(v.numpy(), by_layer[v.path], err_msg=v.path)


@pytest.mark.parametrize('flags', [['--train=False'], ['--train=True', '--model=m:f'],
                                   ['--train=False', '--model=m:f', '--export_model=x.h5']])
def test_export_model_needs_a_model_testing_and_a_keras_file_name(flags):
    values = dict(f[2:].split('=') for f in flags)
    values['train'] = values['train'] == 'True'
    with pytest.raises(ConfigError, match='--export_model='):
        Config(**dict(dict(export_model='x.keras'), **values)).validate()


@pytest.mark.slow
def test_the_reference_nets_sinusoid_batch_norm_note_is_not_given_for_a_custom_model(
        models, tmp_path):
    # --norm shapes only the built-in network; the default batch_norm says nothing of a --model.
    proc = run_main(['--datasource=sinusoid', '--model=' + models + ':mlp', '--meta_batch_size=2',
                     '--metatrain_iterations=1', '--logdir=' + str(tmp_path),
                     '--progress=False'])
    assert proc.stderr == ''


# ----------------------------------------------------------- on several replicas
def _batch(config, tasks, seed=4):
    """A random meta-batch shaped as the data source gives it (tasks on axis 0)."""
    rng = np.random.default_rng(seed)
    examples = config.num_classes * config.update_batch_size if config.classification \
        else config.update_batch_size
    inputs = [rng.uniform(0, 1, (tasks, examples, config.dim_input)).astype(np.float32)
              for _ in range(2)]
    if config.classification:
        one_hot = np.eye(config.num_classes, dtype=np.float32)
        labels = [np.tile(one_hot, (tasks, config.update_batch_size, 1)) for _ in range(2)]
    else:
        labels = [rng.normal(0, 1, (tasks, examples, 1)).astype(np.float32) for _ in range(2)]
    return inputs + labels


def _close(mine, expected, rtol=1e-5):
    mine, expected = np.asarray(mine), np.asarray(expected)
    np.testing.assert_allclose(mine, expected, rtol=0,
                               atol=rtol * max(1e-6, float(np.abs(expected).max())))


@pytest.mark.parametrize('spec, flags', [
    ('examples/keras_cnn_omniglot.py:cnn', dict(datasource='omniglot', num_filters=4,
                                                update_lr=0.4, num_updates=2)),
    ('examples/mlp_sinusoid.py:mlp', dict(datasource='sinusoid', norm='None', update_lr=0.01,
                                          update_batch_size=5, num_updates=2)),
    (':unbuilt_subclassed', dict(datasource='sinusoid', norm='None', update_lr=0.01,
                                 update_batch_size=5, num_updates=1)),
    ('saved.keras', dict(datasource='sinusoid', norm='None', update_lr=0.01,
                         update_batch_size=5, num_updates=1)),
], ids=['keras cnn', 'forward function', 'unbuilt subclassed keras', 'saved keras file'])
def test_a_model_split_over_two_replicas_gives_one_devices_losses_and_weights(
        models, tmp_path, spec, flags):
    from conftest import REPO_ROOT, two_cpu_strategy
    from distribute import Replicas
    from maml import MAML
    from steps import Steps
    if spec.endswith('.keras'):
        import keras
        from keras_network import ExactBatchNormalization
        spec = str(tmp_path / spec)
        keras.Sequential([keras.Input((1,)), keras.layers.Dense(8), ExactBatchNormalization(),
                          keras.layers.ReLU(), keras.layers.Dense(1)]).save(spec)
    elif spec.startswith(':'):
        spec = models + spec
    else:
        spec = os.path.join(REPO_ROOT, spec)
    tasks = 3  # shares of 2 and 1
    config = Config(**dict(dict(model=spec, meta_batch_size=tasks, update_batch_size=1,
                                seed=6), **flags)).validate()
    batch = _batch(config, tasks)
    built = []
    for replicas in (Replicas(), Replicas(two_cpu_strategy())):
        # As experiment.run builds it: the model's variables made inside the strategy's scope.
        with replicas.strategy.scope():
            model = MAML(config, seed=config.seed, network=model_source.load(config))
        built.append((model, replicas))
    (one, _), (two, _) = built
    # The same initial weights (a Keras model draws new ones each time it is made).
    assert [v.shape for v in two.trainable_variables] == [v.shape for v in one.trainable_variables]
    for var, value in zip(two.trainable_variables, one.trainable_variables):
        var.assign(value)
    results = []
    for model, replicas in built:
        steps = Steps(model, replicas)
        evaluated = steps.evaluate(*batch, config.num_updates + 1)
        trained = [steps.metatrain_step(*batch) for _ in range(3)]
        results.append((model, evaluated, trained))
    (one, ev1, steps1), (two, ev2, steps2) = results
    # Mirrored: one copy of every variable on each of the two devices.
    assert all(len(v.values) == 2 for v in two.trainable_variables)
    for key in [k for k in ev1 if k.startswith('total_')] + ['task_values']:
        _close(np.asarray(ev2[key]), np.asarray(ev1[key]))
    _close(np.stack(ev2['outputbs']), np.stack(ev1['outputbs']))
    for step1, step2 in zip(steps1, steps2):
        _close(step2['objective'], step1['objective'])
    # The first meta-gradient, by name: the names are the network's own (Keras paths).
    largest = max(float(np.abs(g).max()) for g in steps1[0]['metagrads'].values())
    for (name1, grad1), (name2, grad2) in zip(steps1[0]['metagrads'].items(),
                                              steps2[0]['metagrads'].items()):
        assert name1.rsplit('/', 1)[-1] == name2.rsplit('/', 1)[-1]
        np.testing.assert_allclose(grad2, grad1, rtol=0, atol=1e-4 * largest, err_msg=name1)
    # After three Adam steps. A bias right before a batch norm has a true
    # meta-gradient of zero; Adam turns its rounding noise into steps of
    # +-meta_lr, so those are left out (and only those: biases whose gradient
    # is zero within the tolerance above).
    grads1 = list(steps1[0]['metagrads'].values())
    noise = [i for i, g in enumerate(grads1) if float(np.abs(g).max()) < 1e-4 * largest]
    assert all(list(one.named_variables())[i].endswith('bias') for i in noise)
    assert len(noise) < len(grads1)
    for i, (var1, var2) in enumerate(zip(one.trainable_variables, two.trainable_variables)):
        if i not in noise:
            scale = float(np.abs(var1.numpy()).max())
            np.testing.assert_allclose(var2.numpy(), var1.numpy(), rtol=0, atol=1e-4 * scale,
                                       err_msg=var1.name)
