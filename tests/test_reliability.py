"""Nothing lost to a kill, a Ctrl-C or a bad input. Each test one sentence.

Every test here runs main.py (or a script importing it) in a subprocess: all
are marked slow.
"""
import glob
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import (REPO_ROOT, SINE, SINE_EXP, final_weights, finish, run_main, start_main,
                      tiny_miniimagenet, wait_for_file, wait_for_line)

SEEDED = SINE + ['--seed=11']


def files_snapshot(folder):
    snapshot = {}
    for path in glob.glob(os.path.join(folder, '*')):
        if os.path.isfile(path):
            with open(path, 'rb') as f:
                snapshot[path] = f.read()
    return snapshot


def checkpoint_iterations(exp_dir):
    return sorted(int(os.path.basename(p)[len('model'):-len('.index')])
                  for p in glob.glob(os.path.join(exp_dir, 'model*.index')))


# ------------------------------------------------------------------ resuming
# Three ways a run stops before its end; each case: (the flags of the run,
# without --logdir, made in tmp_path; its experiment folder name; the
# iteration of its final checkpoint; how to stop it; whether to compare the
# test CSVs too).

def _sinusoid_run(seed, iterations):
    return SINE + ['--seed=%d' % seed, '--metatrain_iterations=%d' % iterations]


def _kill_with_sigkill_after_the_first_checkpoint(args, logdir):
    proc = start_main(args + ['--logdir=' + logdir])
    wait_for_file(proc, os.path.join(logdir, SINE_EXP, 'model1000.index'))
    # The next progress line: the run is past model1000 and still going (a
    # sinusoid run makes a few thousand iterations a second; 20,000 to go).
    wait_for_line(proc, 'Iteration 2000:')
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _stop_with_a_shorter_run(args, logdir):
    # 1250: the restarted run's training calls start mid-way through the
    # uninterrupted run's 100-step calls.
    shorter = [a for a in args if not a.startswith('--metatrain_iterations=')]
    run_main(shorter + ['--metatrain_iterations=1250', '--logdir=' + logdir])
    assert checkpoint_iterations(os.path.join(logdir, SINE_EXP)) == [1000, 1249]


MINIIMAGENET_EXP = 'cls_5.mbs_2.ubs_1.numstep1.updatelr0.01hidden2maxpoolbatchnorm'


def _tiny_miniimagenet_run(tmp_path):
    data = tiny_miniimagenet(str(tmp_path / 'data'))
    return ['--datasource=miniimagenet', '--num_filters=2', '--meta_batch_size=2',
            '--update_batch_size=1', '--update_lr=0.01', '--max_pool=True', '--seed=3',
            '--metatrain_iterations=250', '--data_folder=' + data]


def _interrupt_with_ctrl_c_after_iteration_100(args, logdir):
    proc = start_main(args + ['--logdir=' + logdir])
    wait_for_line(proc, 'Iteration 100:')  # well into training, 150 iterations to go
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 130 and 'Interrupted after iteration' in out, err[-2000:]
    stopped = int(out.split('Interrupted after iteration ')[1].split(':')[0])
    assert 100 <= stopped < 249
    assert checkpoint_iterations(os.path.join(logdir, MINIIMAGENET_EXP)) == [stopped]


STOPPED_RUNS = {
    'sinusoid_killed_with_sigkill': (
        lambda tmp_path: _sinusoid_run(11, 20000), SINE_EXP, 19999,
        _kill_with_sigkill_after_the_first_checkpoint, True),
    'sinusoid_stopped_by_a_shorter_run': (
        lambda tmp_path: _sinusoid_run(5, 1500), SINE_EXP, 1499,
        _stop_with_a_shorter_run, False),
    'miniimagenet_interrupted_with_ctrl_c': (
        _tiny_miniimagenet_run, MINIIMAGENET_EXP, 249,
        _interrupt_with_ctrl_c_after_iteration_100, False),
}


@pytest.mark.slow
@pytest.mark.parametrize('case', list(STOPPED_RUNS))
def test_a_stopped_run_restarted_with_the_same_command_ends_exactly_like_an_uninterrupted_one(
        tmp_path, case):
    make_args, exp, last, stop, compare_test_csv = STOPPED_RUNS[case]
    args = make_args(tmp_path)
    whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
    run_main(args + ['--logdir=' + whole])

    stop(args, parts)
    saved = checkpoint_iterations(os.path.join(parts, exp))
    assert saved and saved[-1] < last  # stopped before the end, with a checkpoint
    restarted = run_main(args + ['--logdir=' + parts])
    assert 'Restoring model weights from' in restarted.stdout
    assert 'Restoring model weights from ' + os.path.join(parts, exp, 'model%d' % saved[-1]) \
        in restarted.stdout.splitlines()

    a = final_weights(os.path.join(whole, exp), last)
    b = final_weights(os.path.join(parts, exp), last)
    assert a and sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    if compare_test_csv:
        for logdir in (whole, parts):
            run_main(args + ['--logdir=' + logdir, '--train=False'])
        csv_name = os.path.join(exp, 'test_ubs5_stepsize0.01.csv')
        with open(os.path.join(whole, csv_name)) as f, open(os.path.join(parts, csv_name)) as g:
            assert f.read() == g.read()


# ------------------------------------------------------------------ Ctrl-C, bad input
@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_next_run_resumes_from_it(tmp_path):
    logdir = str(tmp_path)
    args = SEEDED + ['--metatrain_iterations=100000', '--logdir=' + logdir]
    proc = start_main(args)
    wait_for_file(proc, os.path.join(logdir, SINE_EXP, 'model1000.index'))
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc, timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert 'Interrupted after iteration' in out and 'Traceback' not in err
    # The iteration the run was at when the signal came; at least 1000, and
    # exactly 1000 when the signal lands in the iteration that saved model1000.
    saved = int(out.split('Interrupted after iteration ')[1].split(':')[0])
    assert saved >= 1000
    assert saved == checkpoint_iterations(os.path.join(logdir, SINE_EXP))[-1]
    resumed = run_main(SEEDED + ['--metatrain_iterations=%d' % (saved + 2), '--logdir=' + logdir])
    assert 'model%d' % saved in resumed.stdout
    assert os.path.exists(os.path.join(logdir, SINE_EXP, 'model%d.index' % (saved + 1)))


@pytest.mark.slow
@pytest.mark.parametrize('bad_flags, first_bad_iteration', [
    # An absurd inner step size overflows the fast weights at once: the first
    # step of the call (1001 to 1099) already has a non-finite loss.
    (['--update_lr=1e30', '--train_update_lr=0.01'], 1001),
    # An absurd meta step size: step 1001 starts from the good checkpoint, its
    # Adam update moves every weight by about 1e10, so the loss of step 1002,
    # part-way through the call, is the first non-finite one.
    (['--meta_lr=1e10'], 1002),
], ids=['at_the_first_step_of_a_call', 'part_way_through_a_call'])
def test_a_non_finite_loss_stops_training_naming_the_iteration_and_keeps_the_checkpoint(
        tmp_path, bad_flags, first_bad_iteration):
    logdir = str(tmp_path)
    run_main(SEEDED + ['--metatrain_iterations=1001', '--logdir=' + logdir])
    before = files_snapshot(os.path.join(logdir, SINE_EXP))
    bad = SEEDED + ['--metatrain_iterations=3000', '--logdir=' + logdir] + bad_flags
    proc = run_main(bad, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: the training loss became'), last
    assert 'iteration %d;' % first_bad_iteration in last, last
    after = files_snapshot(os.path.join(logdir, SINE_EXP))
    assert {p: v for p, v in after.items() if 'tfevents' not in p} == \
        {p: v for p, v in before.items() if 'tfevents' not in p}


def _last_error(proc):
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_bad_inputs_give_one_line_and_damage_nothing(tmp_path):
    logdir = str(tmp_path / 'logs')
    run_main(SEEDED + ['--metatrain_iterations=1001', '--logdir=' + logdir])
    run_main(SEEDED + ['--logdir=' + logdir, '--train=False'])
    before = files_snapshot(os.path.join(logdir, SINE_EXP))

    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    last = _last_error(run_main(SEEDED + ['--logdir=%s/sub' % blocker], check=False))
    assert last.startswith('error: cannot write to') and 'choose another --logdir' in last

    last = _last_error(run_main(SEEDED + ['--logdir=' + logdir, '--train=False', '--test_iter=5000'],
                                check=False))
    assert 'no checkpoint' in last and 'model5000' in last and 'existing iterations: 1000' in last

    # Same experiment name, other shapes: a hand-made clash of flags and checkpoint.
    other = str(tmp_path / 'other')
    run_main(['--datasource=sinusoid', '--norm=None', '--update_batch_size=5',
              '--meta_batch_size=4', '--update_lr=0.01', '--baseline=oracle',
              '--metatrain_iterations=10', '--logdir=' + other])
    os.rename(os.path.join(other, SINE_EXP.replace('nonorm', 'oraclenonorm')), os.path.join(other, SINE_EXP))
    last = _last_error(run_main(SEEDED + ['--logdir=' + other, '--train=False'], check=False))
    assert 'model/Variable has shape [3, 40] but these flags need [1, 40]' in last

    last = _last_error(run_main(SEEDED + ['--logdir=' + str(tmp_path / 'empty'), '--train=False'],
                                check=False))
    assert 'no checkpoint to test' in last

    assert files_snapshot(os.path.join(logdir, SINE_EXP)) == before


@pytest.mark.slow
def test_a_logdir_whose_path_says_model_and_log_false_simply_work(tmp_path):
    logdir = str(tmp_path / 'model42' / 'my_models')
    run_main(SEEDED + ['--metatrain_iterations=1001', '--log=False', '--logdir=' + logdir])
    files = os.listdir(os.path.join(logdir, SINE_EXP))
    assert 'model1000.index' in files and not [f for f in files if 'tfevents' in f]
    resumed = run_main(SEEDED + ['--metatrain_iterations=1003', '--log=False', '--logdir=' + logdir])
    assert 'model1000' in resumed.stdout
    assert 'model1002.index' in os.listdir(os.path.join(logdir, SINE_EXP))


@pytest.mark.slow
def test_the_same_seed_gives_identical_runs(tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    out_a = run_main(SEEDED + ['--metatrain_iterations=1001', '--logdir=' + a]).stdout
    out_b = run_main(SEEDED + ['--metatrain_iterations=1001', '--logdir=' + b]).stdout
    assert out_a == out_b
    wa = final_weights(os.path.join(a, SINE_EXP), 1000)
    wb = final_weights(os.path.join(b, SINE_EXP), 1000)
    assert wa and sorted(wa) == sorted(wb)
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name])


@pytest.mark.slow
def test_ctrl_c_outside_the_training_loop_stops_with_one_line_and_no_traceback(tmp_path):
    # A Ctrl-C while images load or the step traces (or a second one while
    # training) arrives as KeyboardInterrupt anywhere in run(); simulated here
    # by a run() that raises it, in a real main.py process.
    script = ('import sys; sys.argv = ["main.py", "--logdir=%s"]; import main\n'
              'def interrupted(config): raise KeyboardInterrupt\n'
              'main.run = interrupted\n'
              'from absl import app; app.run(main.main)\n' % tmp_path)
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 130
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith('Interrupted: stopped at once')


# ------------------------------------------------- damaged checkpoints, failed saves
@pytest.fixture(scope='module')
def two_checkpoints(tmp_path_factory):
    """A sinusoid experiment folder holding model9 and model19 (two real runs)."""
    logdir = str(tmp_path_factory.mktemp('two_checkpoints'))
    run_main(SEEDED + ['--metatrain_iterations=10', '--logdir=' + logdir])
    run_main(SEEDED + ['--metatrain_iterations=20', '--logdir=' + logdir])
    exp_dir = os.path.join(logdir, SINE_EXP)
    assert checkpoint_iterations(exp_dir) == [9, 19]
    return logdir


def _copy(logdir, tmp_path):
    copy = str(tmp_path / 'logs')
    shutil.copytree(logdir, copy)
    return copy, os.path.join(copy, SINE_EXP)


def _truncate(exp_dir, iteration):
    """Cut a checkpoint's data file to half its size (a copy cut short, a full disk)."""
    path = os.path.join(exp_dir, 'model%d.data-00000-of-00001' % iteration)
    os.truncate(path, os.path.getsize(path) // 2)


def _only_line(proc):
    """The one error line a failed run printed, last, on stderr."""
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith('error:')] == lines[-1:], proc.stderr[-3000:]
    return lines[-1]


@pytest.mark.slow
def test_a_truncated_latest_checkpoint_is_skipped_for_the_earlier_one_with_a_warning(
        two_checkpoints, tmp_path):
    logdir, exp_dir = _copy(two_checkpoints, tmp_path)
    _truncate(exp_dir, 19)
    proc = run_main(SEEDED + ['--metatrain_iterations=22', '--logdir=' + logdir])
    assert 'warning: checkpoint %s cannot be read (Read less bytes than requested); using the ' \
        'previous checkpoint' % os.path.join(exp_dir, 'model19') in proc.stderr.splitlines()
    assert 'Restoring model weights from ' + os.path.join(exp_dir, 'model9') \
        in proc.stdout.splitlines()
    assert checkpoint_iterations(exp_dir) == [9, 19, 21]


@pytest.mark.slow
def test_a_truncated_only_checkpoint_stops_training_and_testing_with_one_line_naming_it(
        two_checkpoints, tmp_path):
    logdir, exp_dir = _copy(two_checkpoints, tmp_path)
    for name in glob.glob(os.path.join(exp_dir, 'model9.*')):
        os.remove(name)
    _truncate(exp_dir, 19)
    before = files_snapshot(exp_dir)
    bad = 'error: checkpoint %s cannot be read (Read less bytes than requested): ' \
        % os.path.join(exp_dir, 'model19')
    trained = run_main(SEEDED + ['--metatrain_iterations=30', '--logdir=' + logdir], check=False)
    assert _only_line(trained) == bad + 'move it away, or --resume=False to start afresh'
    tested = run_main(SEEDED + ['--logdir=' + logdir, '--train=False'], check=False)
    assert _only_line(tested) == bad + 'train again (--resume=False moves it aside)'
    assert files_snapshot(exp_dir) == before  # nothing started afresh over it


@pytest.mark.slow
def test_testing_a_truncated_checkpoint_named_by_test_iter_stops_with_one_line_naming_it(
        two_checkpoints, tmp_path):
    logdir, exp_dir = _copy(two_checkpoints, tmp_path)
    _truncate(exp_dir, 19)
    proc = run_main(SEEDED + ['--logdir=' + logdir, '--train=False', '--test_iter=19'],
                    check=False)
    assert _only_line(proc) == (
        'error: checkpoint %s cannot be read (Read less bytes than requested): test another '
        'iteration with --test_iter' % os.path.join(exp_dir, 'model19'))


@pytest.mark.slow
def test_a_state_file_left_naming_an_older_checkpoint_is_repaired_even_with_nothing_to_train(
        two_checkpoints, tmp_path):
    logdir, exp_dir = _copy(two_checkpoints, tmp_path)
    # What a kill just before the state file's final rename leaves: the file
    # naming the checkpoint before, and its temporary (long ago).
    with open(os.path.join(exp_dir, 'checkpoint'), 'w') as f:
        f.write('model_checkpoint_path: "model9"\nall_model_checkpoint_paths: "model9"\n')
    tmp = os.path.join(exp_dir, '.checkpoint.tmp')
    with open(tmp, 'w') as f:
        f.write('model_checkpoint_path: "model19"\n')
    os.utime(tmp, (0, 0))
    proc = run_main(SEEDED + ['--metatrain_iterations=20', '--logdir=' + logdir])
    assert proc.stdout.startswith('Nothing to train')
    assert tf.train.latest_checkpoint(exp_dir) == os.path.join(exp_dir, 'model19')
    assert not os.path.exists(tmp)


@pytest.mark.slow
def test_a_save_failing_at_the_file_size_limit_stops_with_one_line_and_keeps_the_last_checkpoint(
        two_checkpoints, tmp_path):
    logdir, exp_dir = _copy(two_checkpoints, tmp_path)
    before = {p: v for p, v in files_snapshot(exp_dir).items() if 'tfevents' not in p}
    # Half a checkpoint's data file: the save fails, the few lines of events do
    # not. Python ignores SIGXFSZ, so the write fails with EFBIG.
    limit = os.path.getsize(os.path.join(exp_dir, 'model19.data-00000-of-00001')) // 2
    limited = ['-c', 'import os, resource, sys; '
               'resource.setrlimit(resource.RLIMIT_FSIZE, (%d, %d)); '
               'os.execv(sys.executable, [sys.executable] + sys.argv[1:])' % (limit, limit)]
    proc = subprocess.run(
        [sys.executable] + limited + [os.path.join(REPO_ROOT, 'main.py')] + SEEDED
        + ['--metatrain_iterations=25', '--logdir=' + logdir],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert _only_line(proc) == (
        'error: could not save checkpoint model24 in %s (File too large): free space (or raise '
        'the file-size limit) and run the same command again; the last complete checkpoint '
        'model19 is kept' % exp_dir)
    assert not glob.glob(os.path.join(exp_dir, '.saving-model*'))
    assert {p: v for p, v in files_snapshot(exp_dir).items() if 'tfevents' not in p} == before


# ------------------------------------------------------- one job per folder
def test_a_second_training_run_on_a_folder_in_use_stops_at_once_naming_the_first(tmp_path):
    args = SINE + ['--metatrain_iterations=1000000', '--logdir=%s' % tmp_path]
    first = start_main(args)
    wait_for_file(first, os.path.join(str(tmp_path), SINE_EXP, 'model1000.index'))
    second = run_main(args, check=False, timeout=120)
    assert second.returncode == 1
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith('error: %s is in use: process %d on host'
                           % (os.path.join(str(tmp_path), SINE_EXP), first.pid))
    assert first.poll() is None  # the first run goes on


def test_testing_a_folder_while_it_trains_is_allowed(tmp_path):
    args = SINE + ['--metatrain_iterations=1000000', '--logdir=%s' % tmp_path]
    first = start_main(args)
    wait_for_file(first, os.path.join(str(tmp_path), SINE_EXP, 'model1000.index'))
    run_main(args + ['--train=False'], timeout=300)
    assert first.poll() is None
