"""The command line, end to end on short sinusoid runs: each test one sentence."""
import csv
import glob
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from config import Config

SINE = ['--datasource=sinusoid', '--norm=None', '--update_batch_size=5', '--meta_batch_size=4',
        '--update_lr=0.01']
EXP = 'cls_5.mbs_4.ubs_5.numstep1.updatelr0.01nonorm'


def run_main(args, check=True):
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'main.py')] + args,
                          capture_output=True, text=True, cwd=REPO_ROOT)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp('logs'))
    proc = run_main(SINE + ['--metatrain_iterations=2001', '--logdir=' + logdir, '--seed=1'])
    return logdir, proc.stdout


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


def test_training_prints_the_reference_lines(trained):
    _, stdout = trained
    lines = stdout.splitlines()
    assert 'Done initializing, starting training.' in lines
    progress = [l for l in lines if l.startswith('Iteration ')]
    assert [l.split(':')[0] for l in progress] == ['Iteration 1000', 'Iteration 2000']
    pre, post = (float(v) for v in progress[-1].split(': ')[1].split(', '))
    assert post < pre  # one inner step already helps after 2000 meta-updates


def test_training_saves_checkpoints_every_thousand_iterations_and_at_the_end(trained):
    logdir, _ = trained
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(logdir, EXP, 'model*.index')))
    assert names == ['model1000.index', 'model2000.index']


def test_training_writes_tensorboard_scalars_with_the_reference_tags(trained):
    logdir, _ = trained
    tags = {}
    for path in glob.glob(os.path.join(logdir, EXP, 'events.out.tfevents.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    expected = {'metatrain_Pre-update loss'} | {
        'metatrain_Post-update loss, step %d' % j for j in range(1, 6)}
    assert set(tags) == expected
    assert tags['metatrain_Pre-update loss'] == list(range(0, 2001, 100))


def test_testing_writes_the_reference_csv_and_pkl(trained):
    logdir, _ = trained
    proc = run_main(SINE + ['--train=False', '--logdir=' + logdir])
    assert 'Mean validation accuracy/loss, stddev, and confidence intervals' in proc.stdout
    with open(os.path.join(logdir, EXP, 'test_ubs5_stepsize0.01.csv')) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['update%d' % i for i in range(11)]
    assert len(rows) == 4 and all(len(r) == 11 for r in rows)
    with open(os.path.join(logdir, EXP, 'test_ubs5_stepsize0.01.pkl'), 'rb') as f:
        mses = pickle.load(f)['mses']
    assert mses.shape == (600, 11)
    np.testing.assert_allclose([float(v) for v in rows[1]], mses.mean(0), rtol=1e-5)
    np.testing.assert_allclose([float(v) for v in rows[3]],
                               1.96 * mses.std(0) / np.sqrt(600), rtol=1e-5)


def test_a_run_resumed_from_its_checkpoint_ends_like_an_uninterrupted_one(tmp_path):
    whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
    run_main(SINE + ['--metatrain_iterations=1500', '--logdir=' + whole, '--seed=5'])
    # 1250: the resumed run's training calls start mid-way through the
    # uninterrupted run's 100-step calls.
    run_main(SINE + ['--metatrain_iterations=1250', '--logdir=' + parts, '--seed=5'])
    proc = run_main(SINE + ['--metatrain_iterations=1500', '--logdir=' + parts, '--seed=5'])
    assert 'Restoring model weights from' in proc.stdout and 'model1249' in proc.stdout
    a = tf.train.load_checkpoint(os.path.join(whole, EXP, 'model1499'))
    b = tf.train.load_checkpoint(os.path.join(parts, EXP, 'model1499'))
    for name in a.get_variable_to_shape_map():
        if name.startswith('model/'):
            np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name), err_msg=name)


def test_training_afresh_moves_the_earlier_runs_checkpoints_aside(tmp_path):
    logdir, exp_dir = str(tmp_path), os.path.join(str(tmp_path), EXP)
    run_main(SINE + ['--metatrain_iterations=1500', '--logdir=' + logdir])
    proc = run_main(SINE + ['--metatrain_iterations=1001', '--logdir=' + logdir,
                            '--resume=False'])
    assert "moved the earlier run's checkpoints and events" in proc.stdout
    assert sorted(f for f in os.listdir(exp_dir) if f.endswith('.index')) == ['model1000.index']
    with open(os.path.join(exp_dir, 'checkpoint')) as f:
        assert f.readline().strip() == 'model_checkpoint_path: "model1000"'
    earlier = glob.glob(os.path.join(exp_dir, 'earlier_run_*'))
    assert len(earlier) == 1
    assert sorted(f for f in os.listdir(earlier[0]) if f.endswith('.index')) == \
        ['model1000.index', 'model1499.index']


@pytest.mark.parametrize('args, message', [
    (['--datasource=imagenet'], 'unknown --datasource=imagenet'),
    (['--norm=batchnorm'], 'unknown --norm=batchnorm'),
    (['--datasource=omniglot', '--baseline=oracle'], '--baseline=oracle needs --datasource=sinusoid'),
    (['--meta_batch_size=0'], '--meta_batch_size=0 must be positive'),
    (['--train=False'], 'no checkpoint to test'),
    (['--inter_op_threads=-2'], '--inter_op_threads=-2: use a thread count'),
    (['--seed=-1'], '--seed=-1: numpy takes seeds from 0 to 2**32 - 1'),
])
def test_bad_input_gives_one_clear_line_and_a_failing_exit(tmp_path, args, message):
    proc = run_main(args + ['--logdir=' + str(tmp_path)], check=False)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and message in last, proc.stderr


@pytest.mark.parametrize('start, total, pretrain, steps_per_call', [
    (0, 3001, 1050, 100), (1051, 3001, 1050, 100), (0, 2000, 2000, 100), (0, 1200, 50, 1)])
def test_a_training_call_never_spans_a_summary_a_report_or_the_end_of_pretraining(
        start, total, pretrain, steps_per_call):
    from main import SUMMARY_INTERVAL, call_end

    def reports_after(itr):
        return itr != 0 and itr % 1000 == 0

    calls, first = [], start
    while start < total:
        end = call_end(start, total, pretrain, steps_per_call, reports_after)
        calls.append(range(start, end))
        start = end
    assert [i for c in calls for i in c] == list(range(first, total))
    for c in calls:
        assert 1 <= len(c) <= steps_per_call
        assert all(i % SUMMARY_INTERVAL != 0 and i != pretrain for i in c[1:]), c
        assert not any(reports_after(i) for i in c[:-1]), c
        # ... and is as long as it may be between those boundaries.
        end = c[-1] + 1
        assert len(c) == steps_per_call or end in (total, pretrain) or \
            end % SUMMARY_INTERVAL == 0 or reports_after(c[-1]), c
