"""The configuration: validation, the reference's names and what follows from the flags."""
import dataclasses

import pytest

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
])
def test_validation_refuses_what_cannot_work_naming_the_flag(values, message):
    with pytest.raises(ConfigError, match=message):
        Config(**values).validate()


def test_a_valid_config_validates_to_itself():
    config = Config(datasource='omniglot')
    assert config.validate() is config
