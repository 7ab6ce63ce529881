"""The experiment in-process: what a run saves. Each test one sentence."""
import dataclasses
import glob
import os
import re
import threading

import numpy as np
import pytest

import checkpoint
import distribute
import experiment
import schedule
import steps
from config import Config
from data_generator import DataError
from conftest import final_weights, tiny_miniimagenet, two_cpu_strategy


class _ShortSchedule(schedule.Schedule):
    """The reference's schedule compressed a hundredfold: summaries every 1,
    prints every 1, validations every 5 and saves every 10 iterations."""

    def __init__(self, config, validation):
        super().__init__(config, validation)
        self.print_interval, self.validation_interval = 1, 5 if validation else None


def test_a_checkpoint_saved_where_a_run_also_validates_counts_that_validation_batch(
        tmp_path, monkeypatch):
    # Iteration 10 saves and validates. A run resumed from model10 must draw
    # the validation batches after the one that validation used, as the
    # uninterrupted run does: 11 summary batches (0 to 10) and the
    # validations at 5 and 10.
    monkeypatch.setattr(schedule, 'SUMMARY_INTERVAL', 1)
    monkeypatch.setattr(schedule, 'SAVE_INTERVAL', 10)
    monkeypatch.setattr(experiment, 'Schedule', _ShortSchedule)
    config = Config(datasource='miniimagenet', num_filters=2, meta_batch_size=1,
                    update_batch_size=1, max_pool=True, metatrain_iterations=12, seed=4,
                    log=False, logdir=str(tmp_path / 'logs'),
                    data_folder=tiny_miniimagenet(str(tmp_path / 'data'), classes=5))
    assert experiment.run(config) == 0
    exp_dir = os.path.join(config.logdir, config.exp_string)
    assert [i for i, _ in checkpoint.list_checkpoints(exp_dir)] == [10, 11]
    state = checkpoint.read_state(checkpoint.read(os.path.join(exp_dir, 'model10')))
    assert state.next_iteration == 11
    assert state.val_batches_used == 11 + 2


def test_two_runs_checking_one_folder_at_once_both_find_it_writable(tmp_path):
    # Two tests of one folder may start together: neither may take the
    # other's probe file for a folder it cannot write to.
    failures = []

    def check_many():
        try:
            for _ in range(300):
                experiment.check_writable(str(tmp_path))
        except Exception as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=check_many) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == [] and not any(t.is_alive() for t in threads)
    assert os.listdir(tmp_path) == []


def _run_printing(config, capsys):
    assert experiment.run(config) == 0
    return capsys.readouterr().out


def _numbers(printed):
    """The numbers of the progress and validation lines, in order."""
    values = []
    for line in printed.splitlines():
        if line.startswith(('Iteration', 'Pretrain Iteration', 'Validation results')):
            values += [float(v) for v in line.split(':')[1].split(',')]
    return values


@pytest.mark.parametrize('flags', [
    dict(datasource='miniimagenet', num_filters=2, meta_batch_size=3, update_batch_size=1,
         max_pool=True, pretrain_iterations=4, metatrain_iterations=8, norm='layer_norm'),
    dict(datasource='sinusoid', baseline='oracle', norm='None', meta_batch_size=5,
         metatrain_iterations=12, xla=False),
], ids=['miniimagenet pretrained, clipped, validated', 'sinusoid oracle'])
def test_a_run_split_over_two_replicas_prints_and_saves_what_one_device_does(
        tmp_path, monkeypatch, capsys, flags):
    monkeypatch.setattr(schedule, 'SUMMARY_INTERVAL', 1)
    monkeypatch.setattr(schedule, 'SAVE_INTERVAL', 10)
    monkeypatch.setattr(experiment, 'Schedule', _ShortSchedule)
    if flags['datasource'] == 'miniimagenet':
        flags = dict(flags, data_folder=tiny_miniimagenet(str(tmp_path / 'data'), classes=5))
    one = Config(seed=4, logdir=str(tmp_path / 'one'), **flags)
    two = dataclasses.replace(one, logdir=str(tmp_path / 'two'))
    printed_one = _run_printing(one, capsys)
    monkeypatch.setattr(distribute, 'connect',
                        lambda config, cluster: distribute.Replicas(two_cpu_strategy()))
    printed_two = _run_printing(two, capsys)
    assert _numbers(printed_one) and len(_numbers(printed_one)) == len(_numbers(printed_two))
    np.testing.assert_allclose(_numbers(printed_two), _numbers(printed_one), rtol=1e-4, atol=1e-5)
    # The weights: Adam turns rounding in near-zero gradient entries into
    # differences of a small fraction of meta_lr per step.
    last = one.num_iterations - 1
    weights = [final_weights(os.path.join(c.logdir, c.exp_string), last) for c in (one, two)]
    for name in weights[0]:
        if '/Adam' not in name:
            scale = float(np.abs(weights[0][name]).max())
            np.testing.assert_allclose(weights[1][name], weights[0][name], rtol=0,
                                       atol=1e-3 * scale, err_msg=name)
    events = [glob.glob(os.path.join(c.logdir, c.exp_string, 'events.*')) for c in (one, two)]
    assert len(events[0]) == len(events[1]) == 1


def _tiny_classification(tmp_path, **flags):
    return Config(datasource='miniimagenet', num_filters=2, meta_batch_size=1, update_batch_size=1,
                  max_pool=True, metatrain_iterations=2, seed=4, log=False,
                  logdir=str(tmp_path / 'logs'),
                  data_folder=tiny_miniimagenet(str(tmp_path / 'data'), classes=5), **flags)


def test_training_names_its_printed_numbers_and_says_compiling_before_the_first_step(
        tmp_path, monkeypatch, capsys):
    stderr_at_first_step = []
    summarised_step = steps.Steps.summarised_metatrain_step

    def first_step(self, *args, **kwargs):
        if not stderr_at_first_step:
            stderr_at_first_step.append(capsys.readouterr().err)
        return summarised_step(self, *args, **kwargs)
    monkeypatch.setattr(steps.Steps, 'summarised_metatrain_step', first_step)
    assert experiment.run(_tiny_classification(tmp_path)) == 0
    before = stderr_at_first_step[0].splitlines()
    assert before[0].startswith('Iteration lines show the accuracy before adaptation')
    assert before[1].startswith('Validation results: the same two values')
    assert before[-1] == 'compiling the training step with its summaries...'
    after = capsys.readouterr().err.splitlines()
    assert after[0].startswith('compiled the training step with its summaries in ')
    assert 'compiling the training step...' in after  # iteration 1's plain step


def test_a_classification_test_ends_with_its_accuracies_labelled_on_stderr(
        tmp_path, monkeypatch, capsys):
    config = _tiny_classification(tmp_path)
    assert experiment.run(config) == 0
    capsys.readouterr()
    monkeypatch.setattr(experiment, 'NUM_TEST_POINTS', 20)  # the reference's 600 take minutes
    assert experiment.run(dataclasses.replace(config, train=False)) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1] == 'Mean validation accuracy/loss, stddev, and confidence intervals'
    lines = err.splitlines()
    title = [i for i, l in enumerate(lines) if l.startswith('Test accuracy over 20 tasks')]
    assert len(title) == 1
    rows = lines[title[0] + 1:title[0] + 12]
    assert rows[0].split()[:2] == ['before', 'adaptation']
    assert [r.split('  ')[1].strip() for r in rows[1:]] == \
        ['after 1 step'] + ['after %d steps' % j for j in range(2, 11)]
    assert all(re.fullmatch(r' +.+ +\d\.\d{4} \+- \d\.\d{4}', r) for r in rows), rows
    assert lines[-1].startswith('Wrote %s' % os.path.join(config.logdir, config.exp_string))


# ---------------------------------------------------------- data rejected
def _tiny_miniimagenet_config(tmp_path, **data):
    return Config(datasource='miniimagenet', num_filters=2, meta_batch_size=1,
                  update_batch_size=1, max_pool=True, metatrain_iterations=2, log=False,
                  progress=False, logdir=str(tmp_path / 'logs' / 'new'),
                  data_folder=tiny_miniimagenet(str(tmp_path / 'data'), **data))


def test_data_with_too_few_images_is_refused_before_any_experiment_folder_is_made(tmp_path):
    # Training tasks need 16 images per class (1 shot plus 15 queries).
    config = _tiny_miniimagenet_config(tmp_path, classes=5, images=10)
    with pytest.raises(DataError, match='has 10 images, fewer than the 16 per class'):
        experiment.run(config)
    assert os.listdir(str(tmp_path)) == ['data']


def test_an_unreadable_image_found_while_loading_leaves_no_experiment_folder_behind(tmp_path):
    config = _tiny_miniimagenet_config(tmp_path, classes=5)
    bad = sorted(glob.glob(os.path.join(config.data_folder, 'train', '*', '*.jpg')))[0]
    with open(bad, 'wb') as f:
        f.write(b'not a jpeg')
    with pytest.raises(DataError, match='cannot read image'):
        experiment.run(config)
    assert os.listdir(str(tmp_path)) == ['data']


def test_a_data_error_keeps_an_experiment_folder_that_existed_before(tmp_path):
    config = _tiny_miniimagenet_config(tmp_path, classes=5)
    exp_dir = os.path.join(config.logdir, config.exp_string)
    os.makedirs(exp_dir)
    bad = sorted(glob.glob(os.path.join(config.data_folder, 'train', '*', '*.jpg')))[0]
    with open(bad, 'wb') as f:
        f.write(b'not a jpeg')
    with pytest.raises(DataError):
        experiment.run(config)
    assert os.path.isdir(exp_dir)
