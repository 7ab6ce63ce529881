"""The configuration: validation, the reference's names and what follows from the flags."""
import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import config as config_module
from config import Config, ConfigError


def test_experiment_names_follow_the_reference():
    assert Config().exp_string == 'cls_5.mbs_25.ubs_5.numstep1.updatelr0.001batchnorm'
    assert Config(num_filters=32, max_pool=True, stop_grad=True, norm='layer_norm',
                  update_lr=0.4, meta_batch_size=4).exp_string == \
        'cls_5.mbs_4.ubs_5.numstep1.updatelr0.4hidden32maxpoolstopgradlayernorm'
    assert Config(baseline='oracle', norm='None', update_batch_size=10, train=False,
                  train_update_batch_size=5, train_update_lr=0.01).exp_string == \
        'cls_5.mbs_25.ubs_5.numstep1.updatelr0.01oraclenonorm'


def test_small_omniglot_tasks_train_one_op_per_core_and_other_runs_keep_tensorflow_threads():
    omniglot = dict(datasource='omniglot', meta_batch_size=32, update_batch_size=1)
    assert Config(**omniglot).thread_settings(2) == (2, 1)
    assert Config(num_classes=20, **omniglot).thread_settings(2) == (0, 0)
    assert Config(train=False, **omniglot).thread_settings(2) == (0, 0)
    assert Config(datasource='miniimagenet').thread_settings(2) == (0, 0)
    assert Config(datasource='sinusoid').thread_settings(2) == (0, 0)
    assert Config(inter_op_threads=0, intra_op_threads=0, **omniglot).thread_settings(2) == (0, 0)
    assert Config(intra_op_threads=2, **omniglot).thread_settings(4) == (4, 2)


def test_a_config_is_frozen_and_variants_are_made_with_replace():
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.update_lr = 0.4
    assert dataclasses.replace(config, update_lr=0.4).update_lr == 0.4


def test_network_shape_and_sizes_follow_the_data_source():
    sine, oracle = Config(datasource='sinusoid'), Config(datasource='sinusoid', baseline='oracle')
    omniglot = Config(datasource='omniglot', num_classes=20)
    mini = Config(datasource='miniimagenet')
    assert (sine.dim_input, sine.dim_output, oracle.dim_input) == (1, 1, 3)
    assert (omniglot.dim_input, omniglot.dim_output, omniglot.channels) == (784, 20, 1)
    assert (mini.dim_input, mini.img_size, mini.channels) == (84 * 84 * 3, 84, 3)
    assert mini.flattened_head and not omniglot.flattened_head
    assert mini.meta_gradient_clip == 10.0 and omniglot.meta_gradient_clip is None
    assert omniglot.conv_net and not Config(datasource='omniglot', conv=False).conv_net
    assert not sine.conv_net


def test_xla_compiles_only_the_fully_connected_nets():
    assert Config(datasource='sinusoid').jit_compile
    assert Config(datasource='omniglot', conv=False).jit_compile
    assert not Config(datasource='omniglot').jit_compile
    assert not Config(datasource='sinusoid', xla=False).jit_compile


def test_miniimagenet_training_tasks_hold_fifteen_queries_per_class():
    assert Config(datasource='miniimagenet', update_batch_size=1).num_samples_per_class == 16
    assert Config(datasource='miniimagenet', update_batch_size=1,
                  train=False).num_samples_per_class == 2
    assert Config(datasource='omniglot', update_batch_size=5).num_samples_per_class == 10


@pytest.mark.parametrize('values, message', [
    (dict(datasource='imagenet'), 'unknown --datasource=imagenet'),
    (dict(norm='batchnorm'), 'unknown --norm=batchnorm'),
    (dict(datasource='omniglot', baseline='oracle'), '--baseline=oracle needs --datasource=sinusoid'),
    (dict(meta_batch_size=0), '--meta_batch_size=0 must be positive'),
    (dict(pretrain_iterations=0, metatrain_iterations=0), 'nothing to train'),
    (dict(datasource='omniglot', num_classes=1), 'classification needs at least 2 classes'),
    (dict(meta_batch_size=99999999999999999999),
     '--meta_batch_size=99999999999999999999 is too large: at most 2147483647'),
    (dict(worker_timeout=2 ** 31), '--worker_timeout=2147483648 is too large'),
    (dict(num_updates=100000), '--num_updates=100000: at most 100'),
    (dict(meta_lr=float('nan')), '--meta_lr=nan: a learning rate must be a positive number'),
    (dict(update_lr=float('inf')), '--update_lr=inf: a learning rate must be a positive'),
    (dict(update_lr=-0.0), '--update_lr=-0.0: a learning rate must be a positive'),
    (dict(train_update_lr=float('nan')), '--train_update_lr=nan: give the positive'),
    (dict(train_update_batch_size=0), '--train_update_batch_size=0: give the positive'),
    (dict(test_iter=-2), '--test_iter=-2: give a checkpoint'),
    (dict(intra_op_threads=100000), '--intra_op_threads=100000: use a thread count up to 4096'),
    (dict(meta_batch_size=2.5), r'--meta_batch_size=2\.5: expected an integer'),
    (dict(train='False'), "--train='False': expected true or false"),
    (dict(logdir='a\0b'), 'holds a NUL character'),
    (dict(algorithm='fomaml'), 'unknown --algorithm=fomaml: use maml or reptile'),
    (dict(inner_iters=3), '--inner_iters is a Reptile flag: add --algorithm=reptile'),
    (dict(transductive=True), '--transductive is a Reptile flag: add --algorithm=reptile'),
    (dict(algorithm='reptile', inner_batch=0), '--inner_batch=0 must be positive'),
    (dict(algorithm='reptile', train_shots=-1), '--train_shots=-1 must be positive'),
    (dict(algorithm='reptile', meta_step=1.5), '--meta_step=1.5: a meta step size is a number '
                                               'from 0 to 1'),
    (dict(algorithm='reptile', meta_step_final=float('nan')), '--meta_step_final=nan: a meta'),
    (dict(algorithm='reptile', inner_optimizer='rmsprop'),
     'unknown --inner_optimizer=rmsprop: use adam or sgd'),
])
def test_validation_refuses_what_cannot_work_naming_the_flag(values, message):
    with pytest.raises(ConfigError, match=message):
        Config(**values).validate()


def test_reptile_flags_left_unset_take_their_data_sources_defaults():
    omniglot = Config(datasource='omniglot', algorithm='reptile').validate().reptile
    assert omniglot == (5, 10, 1.0, 0.0, 10, 50, 5, 'adam', False)  # the paper's 5-way 1-shot
    mini = Config(datasource='miniimagenet', algorithm='reptile').validate().reptile
    assert (mini.inner_iters, mini.train_shots) == (8, 15)
    sine = Config(datasource='sinusoid', algorithm='reptile').validate().reptile
    assert sine.meta_step == config_module.REPTILE_DEFAULTS['sinusoid']['meta_step']
    given = Config(datasource='omniglot', algorithm='reptile', inner_iters=3, meta_step_final=0.5,
                   inner_optimizer='sgd', transductive=True).validate().reptile
    assert (given.inner_iters, given.meta_step_final, given.inner_optimizer,
            given.transductive) == (3, 0.5, 'sgd', True)
    assert given.inner_batch == 10


def test_maml_is_the_default_and_its_flags_are_unchanged_by_reptiles():
    config = Config()
    assert config.algorithm == 'maml'
    assert all(getattr(config, name) in (None, False) for name in config_module.REPTILE_FLAGS)
    assert config.exp_string == dataclasses.replace(config, algorithm='maml').exp_string


def test_a_valid_config_validates_to_itself():
    config = Config(datasource='omniglot')
    assert config.validate() is config


@pytest.mark.parametrize('values', [
    dict(meta_batch_size=1000000000),
    dict(update_batch_size=300000000),
    dict(datasource='omniglot', num_filters=100000),
    dict(datasource='miniimagenet', meta_batch_size=4000, num_updates=5),
])
def test_sizes_that_cannot_fit_in_memory_are_refused_naming_them(values, monkeypatch):
    monkeypatch.setattr(config_module, 'available_memory', lambda: 16 * 10 ** 9)
    with pytest.raises(ConfigError, match=r'need at least .* GB of memory for one step, more than '
                                          r'the 16 GB available: make them smaller') as e:
        Config(**values).validate()
    for name, value in values.items():
        if name != 'datasource':
            assert '--%s=%d' % (name, value) in str(e.value)


def test_the_papers_settings_fit_in_four_gigabytes(monkeypatch):
    monkeypatch.setattr(config_module, 'available_memory', lambda: 4 * 10 ** 9)
    for values in [dict(norm='None', update_batch_size=10),
                   dict(datasource='omniglot', meta_batch_size=32, update_batch_size=5),
                   dict(datasource='omniglot', meta_batch_size=16, num_classes=20,
                        update_batch_size=1, num_updates=5),
                   dict(datasource='miniimagenet', meta_batch_size=4, update_batch_size=5,
                        num_updates=5, num_filters=32, max_pool=True)]:
        Config(**values).validate()


def test_the_memory_needed_grows_with_every_size_flag():
    base = dict(datasource='miniimagenet', meta_batch_size=2, update_batch_size=1,
                num_updates=2, num_filters=8, num_classes=5)
    needed = Config(**base).memory_needed()
    for name in ('meta_batch_size', 'update_batch_size', 'num_updates', 'num_filters',
                 'num_classes'):
        assert Config(**dict(base, **{name: base[name] * 2})).memory_needed() > needed, name


def test_for_a_custom_model_the_memory_check_counts_the_meta_batch_only_and_says_so(
        monkeypatch):
    # The --model network is not known before it is loaded: the reference
    # net's sizes do not apply to it, the meta-batch's do.
    base = dict(datasource='omniglot', meta_batch_size=4, model='my_models:cnn')
    needed = Config(**base).memory_needed()
    assert Config(**dict(base, num_filters=100000)).memory_needed() == needed
    assert Config(**dict(base, model=None)).memory_needed() > needed
    assert Config(**dict(base, meta_batch_size=8)).memory_needed() == 2 * needed
    monkeypatch.setattr(config_module, 'available_memory', lambda: 16 * 10 ** 9)
    Config(**dict(base, num_filters=100000)).validate()
    with pytest.raises(ConfigError) as e:
        Config(**dict(base, meta_batch_size=10 ** 7)).validate()
    assert str(e.value).startswith('--meta_batch_size=10000000, --update_batch_size=5, '
                                   '--num_updates=1, --num_classes=5 need at least ')
    assert 'for one step (the meta-batch alone: the --model network is not counted), more ' \
        'than the 16 GB available' in str(e.value)


def test_available_memory_is_a_positive_number_of_bytes_here():
    assert config_module.available_memory() > 0


# ------------------------------------------------------------------- fuzzing
# Any values the flags can hold (absl parses integers of any size and floats
# with nan and inf), now and then one of another type (a Config built in a
# notebook): validation gives a Config or a ConfigError, never anything else.
_INTS = st.one_of(st.integers(-3, 40), st.integers(-2 ** 70, 2 ** 70))
_FLOATS = st.one_of(st.sampled_from([-1, 0.0, -0.0, 1e-3, 0.4]), st.floats())
_TEXTS = st.text(max_size=12)
_OTHER_TYPES = st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=3))
_CHOICES = {'datasource': config_module.DATASOURCES, 'norm': config_module.NORMS,
            'baseline': (None, 'oracle'), 'distribute': ('auto', 'one_device', 'mirrored'),
            'algorithm': config_module.ALGORITHMS,
            'inner_optimizer': config_module.INNER_OPTIMIZERS}


def _values_of(field):
    kind, optional = config_module._type_of(field)
    values = {int: _INTS, float: _FLOATS, bool: st.booleans(), str: _TEXTS}[kind]
    if field.name in _CHOICES:
        values = st.one_of(st.sampled_from(_CHOICES[field.name]), values)
    if optional:
        values = st.one_of(st.none(), values)
    return st.one_of(values, _OTHER_TYPES) if kind is not bool else values


_FLAG_VALUES = st.fixed_dictionaries(
    {}, optional={f.name: _values_of(f) for f in dataclasses.fields(Config)})


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(values=_FLAG_VALUES)
def test_any_flag_values_validate_to_a_config_or_a_config_error(values):
    try:
        config = Config(**values).validate()
    except ConfigError as e:
        assert str(e)
        return
    # What a run derives from a valid config works, within the bounds.
    assert config.exp_string and config.thread_settings(2)
    assert 0 < config.memory_needed()
    assert all(getattr(config, name) <= config_module.INT32_MAX
               for name in ('meta_batch_size', 'update_batch_size', 'num_classes',
                            'num_filters', 'metatrain_iterations', 'worker_timeout'))
    assert 0 < config.num_updates <= config_module.MAX_NUM_UPDATES
    assert math.isfinite(config.meta_lr) and math.isfinite(config.update_lr)
