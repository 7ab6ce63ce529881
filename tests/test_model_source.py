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
