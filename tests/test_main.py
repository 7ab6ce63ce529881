"""The command line, end to end on short sinusoid runs: each test one sentence.

Every test here runs main.py in a subprocess (marked slow). Resuming a stopped
run is tested in test_reliability.py."""
import contextlib
import csv
import glob
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import time
from xml.etree import ElementTree

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from config import DISTRIBUTIONS, Config
from conftest import MAIN, REPO_ROOT, SINE, SINE_EXP, WAIT_TIMEOUT, run_main, wait_for_line

INTERRUPTED = ('Interrupted: stopped at once; the last complete checkpoint (if any) is kept. '
               'Run the same command to resume.\n')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp('logs'))
    proc = run_main(SINE + ['--metatrain_iterations=2001', '--logdir=' + logdir, '--seed=1'])
    return logdir, proc.stdout


@pytest.mark.slow
def test_training_prints_the_reference_lines(trained):
    _, stdout = trained
    lines = stdout.splitlines()
    assert 'Done initializing, starting training.' in lines
    progress = [l for l in lines if l.startswith('Iteration ')]
    assert [l.split(':')[0] for l in progress] == ['Iteration 1000', 'Iteration 2000']
    pre, post = (float(v) for v in progress[-1].split(': ')[1].split(', '))
    assert post < pre  # one inner step already helps after 2000 meta-updates


@pytest.mark.slow
def test_training_saves_checkpoints_every_thousand_iterations_and_at_the_end(trained):
    logdir, _ = trained
    names = sorted(os.path.basename(p)
                   for p in glob.glob(os.path.join(logdir, SINE_EXP, 'model*.index')))
    assert names == ['model1000.index', 'model2000.index']


@pytest.mark.slow
def test_training_writes_tensorboard_scalars_with_the_reference_tags(trained):
    logdir, _ = trained
    tags = {}
    for path in glob.glob(os.path.join(logdir, SINE_EXP, 'events.out.tfevents.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    expected = {'metatrain_Pre-update loss'} | {
        'metatrain_Post-update loss, step %d' % j for j in range(1, 6)}
    assert set(tags) == expected
    assert tags['metatrain_Pre-update loss'] == list(range(0, 2001, 100))


@pytest.fixture(scope='module')
def tested(trained):
    logdir, _ = trained
    return run_main(SINE + ['--train=False', '--logdir=' + logdir])


@pytest.mark.slow
def test_testing_writes_the_reference_csv_and_pkl(trained, tested):
    logdir, _ = trained
    proc = tested
    assert 'Mean validation accuracy/loss, stddev, and confidence intervals' in proc.stdout
    with open(os.path.join(logdir, SINE_EXP, 'test_ubs5_stepsize0.01.csv')) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['update%d' % i for i in range(11)]
    assert len(rows) == 4 and all(len(r) == 11 for r in rows)
    with open(os.path.join(logdir, SINE_EXP, 'test_ubs5_stepsize0.01.pkl'), 'rb') as f:
        mses = pickle.load(f)['mses']
    assert mses.shape == (600, 11)
    np.testing.assert_allclose([float(v) for v in rows[1]], mses.mean(0), rtol=1e-5)
    np.testing.assert_allclose([float(v) for v in rows[3]],
                               1.96 * mses.std(0) / np.sqrt(600), rtol=1e-5)


@pytest.mark.slow
def test_testing_shows_its_progress_and_ends_with_the_mean_squared_errors_labelled_on_stderr(
        trained, tested):
    logdir, _ = trained
    lines = tested.stderr.splitlines()
    assert lines[:2] == ['compiling the test step...', lines[1]]
    assert re.fullmatch(r'compiled the test step in [\d.]+ s', lines[1])
    assert re.fullmatch(r'testing: 600/600 tasks in [\d.]+ s \([\d.]+ s of it compiling\)',
                        lines[2])
    assert lines[3].startswith('Test mean squared error over 600 tasks, mean +- 95% confidence '
                               'interval')
    labels = [l.split('  ')[1].strip() for l in lines[4:15]]
    assert labels == ['before adaptation', 'after 1 step'] + [
        'after %d steps' % j for j in range(2, 11)]
    with open(os.path.join(logdir, SINE_EXP, 'test_ubs5_stepsize0.01.csv')) as f:
        means = [float(v) for v in list(csv.reader(f))[1]]
    shown = [float(l.split()[-3]) for l in lines[4:15]]
    np.testing.assert_allclose(shown, means, atol=5e-5)
    exp_dir = os.path.join(logdir, SINE_EXP)
    assert lines[15:] == ['Wrote %s (rows: mean, stddev, 95%% CI; columns update0..update10) and '
                          '%s (every task\'s values)'
                          % (os.path.join(exp_dir, 'test_ubs5_stepsize0.01.csv'),
                             os.path.join(exp_dir, 'test_ubs5_stepsize0.01.pkl'))]


@pytest.mark.slow
def test_training_afresh_moves_the_earlier_runs_checkpoints_aside(tmp_path):
    logdir, exp_dir = str(tmp_path), os.path.join(str(tmp_path), SINE_EXP)
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


@pytest.mark.slow
@pytest.mark.parametrize('args, message', [
    (['--datasource=imagenet'], 'unknown --datasource=imagenet'),
    (['--norm=batchnorm'], 'unknown --norm=batchnorm'),
    (['--datasource=omniglot', '--baseline=oracle'], '--baseline=oracle needs --datasource=sinusoid'),
    (['--meta_batch_size=0'], '--meta_batch_size=0 must be positive'),
    (['--train=False'], 'no checkpoint to test'),
    (['--inter_op_threads=-2'], '--inter_op_threads=-2: use a thread count'),
    (['--seed=-1'], '--seed=-1: numpy takes seeds from 0 to 2**32 - 1'),
    (['--meta_batch_size=99999999999999999999'], '--meta_batch_size=99999999999999999999 is too '
                                                  'large: at most 2147483647'),
    (['--meta_batch_size=1000000000'], 'GB of memory for one step'),
    (['--update_batch_size=300000000'], 'GB of memory for one step'),
    (['--num_updates=100000'], '--num_updates=100000: at most 100'),
    (['--meta_lr=nan'], '--meta_lr=nan: a learning rate must be a positive number'),
    (['--update_lr=-0.0'], '--update_lr=-0.0: a learning rate must be a positive number'),
    (['--test_iter=-5'], '--test_iter=-5: give a checkpoint'),
    (['--meta_batch_size=many'], "flag --meta_batch_size=many: invalid literal for int()"),
    (['--no_such_flag=1'], "Unknown command line flag 'no_such_flag'"),
    (['logs/'], 'unexpected arguments: logs/'),
    (['--datasource=a\nb'], 'unknown --datasource=a\\nb'),
    (['--inner_iters=3'], '--inner_iters is a Reptile flag: add --algorithm=reptile'),
    (['--algorithm=reptile', '--meta_step=2'], '--meta_step=2.0: a meta step size is a number'),
    (['--algorithm=reptile'], '--algorithm=reptile: meta-training or testing from the command '
                              'line is not supported yet'),
    (['--algorithm=reptile', '--train=False', '--datasource=omniglot'],
     '--algorithm=reptile: meta-training or testing from the command line is not supported'),
])
def test_bad_input_gives_one_clear_line_and_a_failing_exit(tmp_path, args, message):
    proc = run_main(args + ['--logdir=' + str(tmp_path)], check=False)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.count('\n') == 1 and proc.stderr.startswith('error: '), proc.stderr
    assert message in proc.stderr, proc.stderr


@pytest.mark.slow
def test_help_exits_with_status_0_and_names_the_new_flags():
    proc = run_main(['--help'], check=False)
    assert proc.returncode == 0
    assert '--distribute:' in proc.stdout and '--[no]progress:' in proc.stdout


@pytest.mark.slow
def test_the_help_states_each_reptile_flags_default_for_every_data_source():
    from config import REPTILE_DEFAULTS
    proc = run_main(['--helpxml'], check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    helps = {f.findtext('name'): ' '.join(f.findtext('meaning').split())
             for f in ElementTree.fromstring(proc.stdout).iter('flag')}
    for name in REPTILE_DEFAULTS['omniglot']:
        for source, defaults in REPTILE_DEFAULTS.items():
            assert '%s %s' % (source, defaults[name]) in helps[name], (name, source)


def _flag_default(flag):
    """A flag's default as --helpxml shows it, read back as a Python value."""
    text, kind = flag.findtext('default'), flag.findtext('type')
    if text == '':
        return None
    return {'bool': lambda t: t == 'true', 'int': int, 'float': float}.get(kind, str)(text)


@pytest.mark.slow
def test_the_flags_are_the_configs_fields_with_its_defaults_and_choices():
    proc = run_main(['--helpxml'], check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    flags = {f.findtext('name'): f for f in ElementTree.fromstring(proc.stdout).iter('flag')
             if os.path.basename(f.findtext('file')) == 'main.py'}
    assert sorted(flags) == sorted(Config.__dataclass_fields__)
    for name, field in Config.__dataclass_fields__.items():
        assert _flag_default(flags[name]) == field.default, name
    assert tuple(v.text for v in flags['distribute'].iter('enum_value')) == DISTRIBUTIONS


@pytest.mark.slow
def test_a_short_cpu_run_prints_on_stderr_what_its_numbers_are_its_compiling_and_its_files(
        tmp_path):
    proc = run_main(SINE + ['--metatrain_iterations=20', '--logdir=%s' % tmp_path])
    exp_dir = os.path.join(str(tmp_path), SINE_EXP)
    lines = proc.stderr.splitlines()
    assert lines[0] == ('Iteration lines show the mean squared error before adaptation (on the '
                        'examples each task adapts on) and after 1 step of adaptation (on its '
                        'held-out examples), each the mean over the meta-batches summarised '
                        'every 100 iterations since the previous line.')
    # Iteration 0 is summarised: the evaluation step, then the training step.
    assert lines[1] == 'compiling the evaluation step...'
    assert re.fullmatch(r'compiled the evaluation step in [\d.]+ s', lines[2])
    assert lines[3] == 'compiling the training step...'
    assert re.fullmatch(r'compiled the training step in [\d.]+ s', lines[4])
    assert re.fullmatch(r'training: 20/20 iterations in [\d.]+ s \([\d.]+ s of it compiling\)',
                        lines[5])
    assert lines[6:] == ['Trained to iteration 19. Checkpoints (model{N}, the last 10 kept) '
                         'and TensorBoard events are in %s' % exp_dir]
    quiet = run_main(SINE + ['--metatrain_iterations=40', '--logdir=%s' % tmp_path,
                             '--progress=False'])
    assert quiet.stderr == ''
    assert quiet.stdout.splitlines()[-1] == 'Done initializing, starting training.'


@pytest.mark.slow
def test_a_finished_run_says_nothing_to_train_before_building_anything_and_writes_nothing(
        tmp_path):
    args = SINE + ['--metatrain_iterations=20', '--logdir=%s' % tmp_path]
    run_main(args)
    exp_dir = os.path.join(str(tmp_path), SINE_EXP)
    before = sorted(os.listdir(exp_dir))
    again = run_main(args)
    assert again.stdout.startswith('Nothing to train: the checkpoint in %s is already at '
                                   'iteration 20 of 20' % exp_dir)
    assert 'Done initializing' not in again.stdout
    assert sorted(os.listdir(exp_dir)) == before


@pytest.mark.slow
def test_sinusoid_with_the_bare_defaults_gets_a_hint_on_stderr_only(tmp_path):
    proc = run_main(['--metatrain_iterations=20', '--logdir=%s' % tmp_path, '--progress=False'])
    assert proc.stderr.startswith('note: sinusoid with --norm=batch_norm and '
                                  '--update_batch_size=5 (the reference\'s bare defaults) does '
                                  'not learn')
    assert proc.stdout == 'Done initializing, starting training.\n'


@pytest.mark.slow
def test_on_a_terminal_progress_is_a_live_bar_on_stderr(tmp_path):
    import pty
    import subprocess
    import sys
    from conftest import MAIN, REPO_ROOT
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, MAIN] + SINE + ['--metatrain_iterations=3000',
                                                            '--logdir=%s' % tmp_path],
                            stdout=subprocess.PIPE, stderr=follower, cwd=REPO_ROOT)
    os.close(follower)
    stdout, _ = proc.communicate(timeout=300)
    shown = b''
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert proc.returncode == 0
    assert b'training:' in shown and b'it/s' in shown and b'\r' in shown
    assert b'\rcompiling the training step... 00:00' in shown  # a timer while it compiles
    # The bar starts after the compiling call: no rate, no time left from it.
    assert re.search(rb'training: +3%\|[^|]*\| 100/3000 \[00:00<\?, \?it/s\]', shown), shown
    assert stdout.decode().splitlines() == ['Done initializing, starting training.',
                                            'Iteration 1000: ' + stdout.decode().split(
                                                'Iteration 1000: ')[1].splitlines()[0],
                                            'Iteration 2000: ' + stdout.decode().split(
                                                'Iteration 2000: ')[1].splitlines()[0]]


# ------------------------------------------------------------- interruptions
@contextlib.contextmanager
def _started(args, **env):
    """main.py running with these flags (and environment variables); killed on the way out."""
    # Ctrl-C as from a terminal: a test runner started in the background
    # (`cmd &`) hands its children SIGINT ignored, and Python then installs no
    # KeyboardInterrupt for it.
    proc = subprocess.Popen([sys.executable, MAIN] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                            env=dict(os.environ, **env),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.stdout_read, proc.lines_scanned = b'', 0  # for wait_for_line
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _wait_for_tensorflow_to_load(proc):
    """Return once TensorFlow's library is mapped into the process (its import is under way)."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with open('/proc/%d/maps' % proc.pid) as f:
                if 'libtensorflow' in f.read():
                    return
        except OSError:
            pass
        time.sleep(0.01)
    pytest.fail('TensorFlow never loaded (exit %s)' % proc.poll())


def _half_a_second_after_start(proc):
    time.sleep(0.5)


def _as_tensorflow_loads(proc):
    _wait_for_tensorflow_to_load(proc)


def _a_second_after_tensorflow_loads(proc):
    _wait_for_tensorflow_to_load(proc)
    time.sleep(1)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir('/proc'), reason='reads /proc/PID/maps')
@pytest.mark.parametrize('moment, signum', [
    (_half_a_second_after_start, signal.SIGINT),
    (_as_tensorflow_loads, signal.SIGINT),
    (_a_second_after_tensorflow_loads, signal.SIGINT),
    (_as_tensorflow_loads, signal.SIGTERM),
], ids=['ctrl-c half a second in', 'ctrl-c as tensorflow loads',
        'ctrl-c a second after tensorflow loads', 'sigterm as tensorflow loads'])
def test_a_signal_during_start_up_stops_with_one_line_and_status_130(tmp_path, moment, signum):
    with _started(SINE + ['--metatrain_iterations=1000000', '--logdir=%s' % tmp_path]) as proc:
        moment(proc)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=WAIT_TIMEOUT)
    assert (proc.returncode, err, out) == (130, INTERRUPTED, '')


@pytest.mark.slow
def test_sigterm_while_testing_stops_with_one_line_and_status_130(trained):
    logdir, _ = trained
    # Unbuffered: the line saying the checkpoint is restored arrives at once.
    # --progress=False: the compiling line and the progress would come before it.
    with _started(SINE + ['--train=False', '--progress=False', '--logdir=' + logdir],
                  PYTHONUNBUFFERED='1') as proc:
        wait_for_line(proc, 'Restoring model weights from ')
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT_TIMEOUT)
    assert (proc.returncode, err) == (130, INTERRUPTED)
    assert 'Mean validation accuracy/loss' not in out


# ------------------------------------------------------------------- fuzzing
_NOT_A_NUMBER = st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\0'),
                        min_size=1, max_size=8).filter(lambda t: not _parses(t))
_BAD_SIZE = st.one_of(st.integers(max_value=0), st.integers(min_value=2 ** 31),
                      _NOT_A_NUMBER)
_BAD_RATE = st.one_of(st.sampled_from(['nan', 'inf', '-inf', '-0.0', '0']),
                      st.floats(max_value=0), _NOT_A_NUMBER)
_BAD_CHOICE = st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\0'),
                      max_size=8)
# For each flag, values that are wrong whatever the other flags say.
_BAD_VALUES = {
    'meta_batch_size': _BAD_SIZE, 'update_batch_size': _BAD_SIZE, 'num_classes': _BAD_SIZE,
    'num_filters': _BAD_SIZE, 'num_updates': st.one_of(_BAD_SIZE, st.integers(101, 10 ** 6)),
    'metatrain_iterations': st.one_of(st.integers(max_value=-1), st.integers(min_value=2 ** 31)),
    'pretrain_iterations': st.integers(max_value=-1),
    'meta_lr': _BAD_RATE, 'update_lr': _BAD_RATE,
    'train_update_lr': _BAD_RATE.filter(lambda v: v not in (-1, -1.0)),
    'train_update_batch_size': st.one_of(st.integers(max_value=-2), st.just(0)),
    'test_iter': st.integers(max_value=-2), 'seed': st.integers(max_value=-1),
    'inter_op_threads': st.one_of(st.integers(max_value=-2), st.integers(min_value=4097)),
    'worker_timeout': st.integers(max_value=0),
    'datasource': _BAD_CHOICE.filter(lambda t: t not in ('sinusoid', 'omniglot',
                                                         'miniimagenet')),
    'norm': _BAD_CHOICE.filter(lambda t: t not in ('batch_norm', 'layer_norm', 'None')),
    'distribute': _BAD_CHOICE.filter(lambda t: t not in ('auto', 'one_device', 'mirrored',
                                                         'multi_worker')),
    'train': st.sampled_from(['maybe', '2', '']),
}
_BAD_COMMAND_LINES = st.lists(st.sampled_from(sorted(_BAD_VALUES)), min_size=1, max_size=3,
                              unique=True).flatmap(
    lambda names: st.tuples(*[_BAD_VALUES[n].map(lambda v, n=n: '--%s=%s' % (n, v))
                              for n in names]))


def _parses(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


@pytest.mark.slow
# No shrinking: each example is a process start; a failure shows its line as drawn.
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate])
@given(bad=_BAD_COMMAND_LINES)
def test_any_bad_flag_values_give_one_error_line_and_a_failing_exit_without_hanging(bad):
    with tempfile.TemporaryDirectory() as logdir:
        # Should a line be valid after all, it trains one iteration and fails the test.
        proc = run_main(['--logdir=' + logdir, '--metatrain_iterations=1', '--progress=False']
                        + list(bad), check=False, timeout=WAIT_TIMEOUT)
    assert proc.returncode == 1, (bad, proc.stderr[-2000:])
    assert proc.stderr.startswith('error: ') and proc.stderr.count('\n') == 1, (bad, proc.stderr)
