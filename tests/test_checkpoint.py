"""Checkpoints: reference names, crash safety, round trips. Each test one sentence."""
import os
import resource
import shutil
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import checkpoint
from checkpoint import CheckpointError, RunState
from conftest import require_data
from config import Config
from maml import MAML
from optimizers import Optimizers
from steps import Steps


def _model(**overrides):
    values = dict(datasource='omniglot', num_filters=4, norm='batch_norm')
    values.update(overrides)
    return MAML(Config(**values), seed=0)


def _save(folder, iteration, model, state=None, optimizers=None):
    return checkpoint.save(str(folder), iteration, checkpoint.contents(
        model, optimizers or Optimizers.create(model),
        state or RunState(next_iteration=iteration + 1)))


def _omniglot_batch():
    return [tf.random.uniform([2, 5, 784], seed=1), tf.random.uniform([2, 5, 784], seed=2),
            tf.one_hot([[0, 1, 2, 3, 4]] * 2, 5), tf.one_hot([[0, 1, 2, 3, 4]] * 2, 5)]


def test_checkpoints_hold_the_reference_names_and_the_adam_state(tmp_path):
    model = _model()
    prefix = _save(tmp_path, 1000, model)
    names = set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
    assert {'model/conv1', 'model/Variable', 'model/Variable_3', 'model/w5', 'model/b5',
            'model/0/beta', 'model/3/beta'} <= names
    assert {'model/conv1/Adam_2', 'model/conv1/Adam_3', 'beta1_power_1', 'beta2_power_1',
            'model/conv1/Adam', 'beta1_power', checkpoint.STATE_KEY} <= names


def test_a_tf1_saver_restores_a_checkpoint_written_here(tmp_path):
    model = _model()
    _save(tmp_path, 1000, model)
    expected = {n: v.numpy() for n, v in model.named_variables().items()}
    with tf.Graph().as_default():
        variables = {}
        with tf.compat.v1.variable_scope('model'):
            for name, value in expected.items():
                variables[name] = tf.compat.v1.get_variable(
                    name[len('model/'):], shape=value.shape, dtype=tf.float32)
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as sess:
            saver.restore(sess, tf.train.latest_checkpoint(str(tmp_path)))
            for name, var in variables.items():
                np.testing.assert_array_equal(sess.run(var), expected[name])


def test_the_adam_state_and_run_state_come_back_after_a_round_trip(tmp_path):
    model = _model()
    batch = _omniglot_batch()
    steps = Steps(model)
    steps.pretrain_step(*batch)  # both Adams hold state of their own
    steps.metatrain_step(*batch)
    state = RunState(next_iteration=8, batch_seed=12, val_batches_used=3,
                     numpy_random_state=['MT19937', [1, 2], 3, 0, 0.0])
    _save(tmp_path, 7, model, state, steps.optimizers)
    other = _model()
    other_steps = Steps(other)
    iteration, prefix, contents = checkpoint.latest_readable(str(tmp_path))
    assert checkpoint.restore(other, contents, prefix, other_steps.optimizers) == state
    assert iteration == 7
    saved = checkpoint.contents(model, steps.optimizers, state)
    restored = checkpoint.contents(other, other_steps.optimizers, state)
    assert list(saved) == list(restored)
    for name in saved:
        if name != checkpoint.STATE_KEY:
            np.testing.assert_array_equal(saved[name].numpy(), restored[name].numpy(),
                                          err_msg=name)
    # Both continue identically.
    steps.metatrain_step(*batch)
    other_steps.metatrain_step(*batch)
    for a, b in zip(model.trainable_variables, other.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_the_two_adams_are_saved_under_their_own_tf1_names(tmp_path):
    model = _model()
    steps = Steps(model)
    steps.metatrain_step(*_omniglot_batch())  # only the meta-training Adam moves
    contents = checkpoint.read(_save(tmp_path, 7, model, optimizers=steps.optimizers))
    assert contents['beta1_power'] == np.float32(0.9)
    assert not np.any(contents['model/conv1/Adam'])
    assert contents['beta1_power_1'] == np.float32(0.9) * np.float32(0.9)
    np.testing.assert_array_equal(contents['model/conv1/Adam_2'],
                                  steps.optimizers.metatrain.m['model/conv1'].numpy())
    np.testing.assert_array_equal(contents['model/conv1/Adam_3'],
                                  steps.optimizers.metatrain.v['model/conv1'].numpy())
    assert np.any(contents['model/conv1/Adam_2'])


def test_restoring_without_optimizers_reads_only_the_weights(tmp_path):
    model = _model()
    Steps(model).metatrain_step(*_omniglot_batch())
    prefix = _save(tmp_path, 7, model)
    # Without its Adam slots the checkpoint still serves testing, which needs
    # the weights only, but not training, which needs both Adams.
    weights_and_state = {name: value for name, value in checkpoint.read(prefix).items()
                         if '/Adam' not in name and 'power' not in name}
    other = _model()
    assert checkpoint.restore(other, weights_and_state, prefix) == RunState(next_iteration=8)
    np.testing.assert_array_equal(other.weights['conv1'].numpy(), model.weights['conv1'].numpy())
    with pytest.raises(CheckpointError, match='has no variable model/conv1/Adam'):
        checkpoint.restore(other, weights_and_state, prefix, Optimizers.create(other))


def test_a_run_state_written_by_an_earlier_version_reads_with_defaults_for_what_it_lacks():
    contents = {checkpoint.STATE_KEY: np.array(b'{"next_iteration": 1000, '
                                               b'"numpy_random_state": ["MT19937", [5], 1, 0, 0.0]}')}
    assert checkpoint.read_state(contents) == RunState(
        next_iteration=1000, numpy_random_state=['MT19937', [5], 1, 0, 0.0])
    assert checkpoint.read_state({}) is None  # the reference's checkpoints hold weights only


def test_a_save_killed_between_its_renames_leaves_the_previous_checkpoint_the_latest(
        tmp_path, monkeypatch):
    model = _model()
    _save(tmp_path, 1000, model)
    real_replace = os.replace
    renamed = []

    def rename_once_then_die(src, dst):
        if renamed:
            raise KeyboardInterrupt  # the process dies after the save's first rename
        renamed.append(os.path.basename(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', rename_once_then_die)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2000, model)
    monkeypatch.undo()
    assert renamed[0].startswith('model2000.data')  # data first: no index without its data
    assert not os.path.exists(tmp_path / 'model2000.index')
    warnings = []
    assert checkpoint.latest_readable(str(tmp_path), warn=warnings.append)[0] == 1000
    assert warnings == []
    _save(tmp_path, 3000, model)  # the next save clears the dead save's temporary folder
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.saving-')]
    assert checkpoint.latest_readable(str(tmp_path))[0] == 3000


def test_a_corrupt_latest_checkpoint_is_skipped_for_the_previous_one(tmp_path):
    model = _model()
    _save(tmp_path, 1000, model)
    _save(tmp_path, 2000, model)
    with open(tmp_path / 'model2000.index', 'wb') as f:
        f.write(b'\0' * 10)
    warnings = []
    found = checkpoint.latest_readable(str(tmp_path), warn=warnings.append)
    assert found[0] == 1000
    assert len(warnings) == 1 and 'model2000' in warnings[0]


def _truncate_data_file(prefix):
    """Cut a checkpoint's data file to a fraction of its size, as a full disk or a
    copy cut short leaves it (TensorFlow then reads short: IndexError)."""
    data, = [f for f in os.listdir(os.path.dirname(prefix))
             if f.startswith(os.path.basename(prefix) + '.data-')]
    path = os.path.join(os.path.dirname(prefix), data)
    os.truncate(path, os.path.getsize(path) // 2)


def test_a_truncated_latest_checkpoint_is_skipped_for_the_previous_one_with_a_warning(tmp_path):
    model = _model()
    _save(tmp_path, 1000, model)
    _truncate_data_file(_save(tmp_path, 2000, model))
    warnings = []
    found = checkpoint.latest_readable(str(tmp_path), warn=warnings.append)
    assert found[0] == 1000
    assert len(warnings) == 1 and 'model2000 cannot be read' in warnings[0]


def test_when_no_checkpoint_reads_the_error_names_the_newest_instead_of_starting_afresh(
        tmp_path):
    model = _model()
    _truncate_data_file(_save(tmp_path, 1000, model))
    _truncate_data_file(_save(tmp_path, 2000, model))
    warnings = []
    with pytest.raises(checkpoint.UnreadableCheckpoint,
                       match=r'model2000 cannot be read \(.+\), nor can the 1 before it$'):
        checkpoint.latest_readable(str(tmp_path), warn=warnings.append)
    assert warnings == []  # the error is the one line


def test_a_truncated_checkpoint_asked_for_by_its_iteration_is_an_unreadable_checkpoint_error(
        tmp_path):
    model = _model()
    _save(tmp_path, 1000, model)
    _truncate_data_file(_save(tmp_path, 2000, model))
    with pytest.raises(checkpoint.UnreadableCheckpoint, match='model2000 cannot be read'):
        checkpoint.find(str(tmp_path), 2000)


def test_a_state_file_left_naming_an_older_checkpoint_is_repaired_and_its_stale_temporary_removed(
        tmp_path):
    model = _model(num_filters=2)
    _save(tmp_path, 1000, model)
    _save(tmp_path, 2000, model)
    # What a kill just before the state file's rename leaves.
    (tmp_path / 'checkpoint').write_text('model_checkpoint_path: "model1000"\n'
                                         'all_model_checkpoint_paths: "model1000"\n')
    tmp = tmp_path / '.checkpoint.tmp'
    tmp.write_text('model_checkpoint_path: "model2000"\n')
    long_ago = time.time() - 2 * checkpoint.STALE_SECONDS
    os.utime(tmp, (long_ago, long_ago))
    checkpoint.repair_state_file(str(tmp_path))
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / 'model2000')
    assert not tmp.exists()


def test_a_state_file_naming_the_newest_checkpoint_is_left_as_it_is(tmp_path):
    model = _model(num_filters=2)
    _save(tmp_path, 1000, model)
    # Written by another program (an absolute path, no list): still right, kept.
    text = 'model_checkpoint_path: "%s"\n' % (tmp_path / 'model1000')
    (tmp_path / 'checkpoint').write_text(text)
    checkpoint.repair_state_file(str(tmp_path))
    assert (tmp_path / 'checkpoint').read_text() == text


def test_a_save_that_hits_the_file_size_limit_names_the_last_checkpoint_and_leaves_no_temporary(
        tmp_path):
    model = _model(num_filters=2)
    prefix = _save(tmp_path, 1000, model)
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}
    data_size = os.path.getsize(prefix + '.data-00000-of-00001')
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG.
    resource.setrlimit(resource.RLIMIT_FSIZE, (data_size // 2, hard))
    try:
        with pytest.raises(CheckpointError) as raised:
            _save(tmp_path, 2000, model)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(raised.value) == (
        'could not save checkpoint model2000 in %s (File too large): free space (or raise the '
        'file-size limit) and run the same command again; the last complete checkpoint '
        'model1000 is kept' % tmp_path)
    assert {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)} == before


def test_atomic_writes_of_one_file_from_two_threads_at_once_all_succeed(tmp_path):
    path = str(tmp_path / 'result.pkl')
    failures = []

    def write_many(byte):
        try:
            for _ in range(100):
                checkpoint.write_atomically(path, lambda f: f.write(byte * 1000), 'wb')
        except Exception as e:  # the test reports it below
            failures.append(e)

    threads = [threading.Thread(target=write_many, args=(b,)) for b in (b'a', b'b')]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == [] and not any(t.is_alive() for t in threads)
    assert (tmp_path / 'result.pkl').read_bytes() in (b'a' * 1000, b'b' * 1000)
    assert os.listdir(tmp_path) == ['result.pkl']


def test_only_the_last_ten_checkpoints_are_kept(tmp_path):
    model = _model(num_filters=2)
    for i in range(1, 13):
        _save(tmp_path, i * 1000, model)
    assert [i for i, _ in checkpoint.list_checkpoints(str(tmp_path))] == \
        [i * 1000 for i in range(3, 13)]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(('model1000.', 'model2000.'))]
    with open(tmp_path / 'checkpoint') as f:
        assert f.readline().strip() == 'model_checkpoint_path: "model12000"'


def test_the_iteration_comes_from_the_file_name_even_under_a_folder_named_model(tmp_path):
    folder = tmp_path / 'model7' / 'my_model_runs'
    _save(folder, 3000, _model(num_filters=2))
    assert checkpoint.latest_readable(str(folder))[0] == 3000


def test_a_checkpoint_in_a_folder_named_like_a_glob_pattern_is_found_and_read(tmp_path):
    folder = tmp_path / 'run[1]'
    model = _model(num_filters=2)
    _save(folder, 3000, model)
    iteration, _, contents = checkpoint.latest_readable(str(folder))
    assert iteration == 3000
    np.testing.assert_array_equal(contents['model/conv1'], model.named_variables()['model/conv1'])


def test_a_checkpoint_of_another_shape_names_the_variable_and_both_shapes(tmp_path):
    prefix = _save(tmp_path, 1000, _model(num_filters=4))
    other = _model(num_filters=8)
    with pytest.raises(CheckpointError, match=r'model/conv1 has shape \[3, 3, 1, 4\] but these '
                                              r'flags need \[3, 3, 1, 8\]'):
        checkpoint.assign(other.named_variables(), checkpoint.read(prefix), prefix)


def test_the_released_reference_checkpoint_loads_by_name(tmp_path):
    folder, = require_data('checkpoints/miniimagenet1shot')
    exp = 'cls_5.mbs_4.ubs_1.numstep5.updatelr0.01hidden32maxpoolbatchnorm'
    shutil.copytree(folder, tmp_path / 'run')
    config = Config(datasource='miniimagenet', meta_batch_size=4, update_batch_size=1,
                    update_lr=0.01, num_updates=5, num_filters=32, max_pool=True, train=False)
    assert config.exp_string == exp
    model = MAML(config, seed=0)
    iteration, prefix, contents = checkpoint.latest_readable(str(tmp_path / 'run' / exp))
    assert iteration == 59000
    checkpoint.assign(model.named_variables(), contents, prefix)
    np.testing.assert_array_equal(model.weights['w5'].numpy(), contents['model/w5'])
