"""Several worker processes on localhost as one MultiWorkerMirroredStrategy job.

Each test starts main.py as a user would on several machines: the same flags,
one TF_CONFIG each (free ports on 127.0.0.1). All are slow.
"""
import csv
import json
import os
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from conftest import (SINE, SINE_EXP, WAIT_TIMEOUT, final_weights, run_main, start_main,
                      start_workers, tiny_omniglot, wait_all, wait_for_file)

pytestmark = pytest.mark.slow

# Five tasks over two workers: shares of 3 and 2.
SINE_5 = SINE + ['--meta_batch_size=5', '--seed=5', '--worker_timeout=20']
SINE_5_EXP = SINE_EXP.replace('mbs_4', 'mbs_5')
OMNIGLOT = ['--datasource=omniglot', '--num_filters=8', '--meta_batch_size=3',
            '--update_batch_size=1', '--update_lr=0.4', '--num_updates=1', '--seed=2',
            '--worker_timeout=20']
OMNIGLOT_EXP = 'cls_5.mbs_3.ubs_1.numstep1.updatelr0.4hidden8batchnorm'
# The biases right before a batch norm: their true gradient is 0, so Adam
# turns float noise into steps of +-meta_lr; every other weight must agree.
BIASES_BEFORE_BATCH_NORM = {'model/Variable', 'model/Variable_1', 'model/Variable_2',
                            'model/Variable_3'}


def assert_weights_close(mine, expected, rtol, skip=()):
    assert set(mine) == set(expected)
    for name in expected:
        if name in skip or '/Adam' in name:
            continue
        scale = float(np.abs(expected[name]).max())
        np.testing.assert_allclose(mine[name], expected[name], rtol=0, atol=rtol * scale,
                                   err_msg=name)


def test_two_workers_train_sinusoid_as_one_process_does(tmp_path):
    # One process without XLA: the same float32 operations as the workers run.
    run_main(SINE_5 + ['--metatrain_iterations=300', '--xla=False', '--logdir=%s/one' % tmp_path])
    workers = start_workers(2, SINE_5 + ['--metatrain_iterations=300', '--logdir=%s/two' % tmp_path],
                            str(tmp_path))
    (status0, out0, err0), (status1, out1, err1) = wait_all(workers)
    assert (status0, status1) == (0, 0), err0[-2000:] + err1[-2000:]
    assert out0.startswith('Done initializing, starting training.')
    assert out1 == ''  # only the chief prints
    assert not os.path.exists(os.path.join(str(tmp_path), 'two', SINE_5_EXP, 'worker1'))
    assert_weights_close(final_weights(os.path.join(str(tmp_path), 'two', SINE_5_EXP), 299),
                         final_weights(os.path.join(str(tmp_path), 'one', SINE_5_EXP), 299), 1e-4)


@pytest.fixture(scope='module')
def omniglot_folder(tmp_path_factory):
    return tiny_omniglot(str(tmp_path_factory.mktemp('omniglot')))


def _csv_rows(path):
    with open(path) as f:
        return [[float(v) for v in row] for row in list(csv.reader(f))[1:]]


def test_two_workers_train_and_test_omniglot_as_one_process_does(tmp_path, omniglot_folder):
    flags = OMNIGLOT + ['--data_folder=' + omniglot_folder, '--metatrain_iterations=101']
    one = run_main(flags + ['--logdir=%s/one' % tmp_path])
    workers = start_workers(2, flags + ['--logdir=%s/two' % tmp_path], str(tmp_path))
    (status0, out0, err0), (status1, _, err1) = wait_all(workers)
    assert (status0, status1) == (0, 0), err0[-2000:] + err1[-2000:]
    # Iteration 100's line: the mean pre- and post-update accuracy of the summaries.
    line_one = [l for l in one.stdout.splitlines() if l.startswith('Iteration 100:')][0]
    line_two = [l for l in out0.splitlines() if l.startswith('Iteration 100:')][0]
    np.testing.assert_allclose([float(v) for v in line_two.split(':')[1].split(',')],
                               [float(v) for v in line_one.split(':')[1].split(',')], atol=0.02)
    exp_one, exp_two = ('%s/%s/%s' % (tmp_path, run, OMNIGLOT_EXP) for run in ('one', 'two'))
    assert_weights_close(final_weights(exp_two, 100), final_weights(exp_one, 100), 1e-3,
                         skip=BIASES_BEFORE_BATCH_NORM)

    # Testing, the 600 tasks shared out, of the same checkpoint (the one-process run's).
    run_main(flags + ['--logdir=%s/one' % tmp_path, '--train=False'])
    expected = _csv_rows(os.path.join(exp_one, 'test_ubs1_stepsize0.4.csv'))
    os.remove(os.path.join(exp_one, 'test_ubs1_stepsize0.4.csv'))
    workers = start_workers(2, flags + ['--logdir=%s/one' % tmp_path, '--train=False'],
                            str(tmp_path))
    assert [s for s, _, _ in wait_all(workers)] == [0, 0]
    np.testing.assert_allclose(_csv_rows(os.path.join(exp_one, 'test_ubs1_stepsize0.4.csv')),
                               expected, rtol=1e-5, atol=1e-6)


# A custom Keras model for --model, in a file of the test's own (as a user's would be).
KERAS_MLP = """
import json
import os

import keras
import numpy as np


def mlp(config):
    model = keras.Sequential([keras.layers.Dense(16, activation='relu'),
                              keras.layers.Dense(16, activation='relu'),
                              keras.layers.Dense(config.dim_output)], name='mlp')
    model.build((None, config.dim_input))
    return model


def mlp_drawn_per_process(config):
    # Each worker draws other initial weights (seeded by its process id), and
    # writes down what it drew and what its variables hold once made.
    draw = keras.initializers.GlorotUniform(seed=os.getpid())
    model = keras.Sequential([keras.layers.Dense(16, activation='relu', kernel_initializer=draw),
                              keras.layers.Dense(config.dim_output, kernel_initializer=draw)])
    model.build((None, config.dim_input))
    index = json.loads(os.environ['TF_CONFIG'])['task']['index']
    np.savez(os.path.join(os.environ['MAML_TEST_DRAWN'], 'worker%d.npz' % index),
             drawn=np.asarray(draw((config.dim_input, 16))),
             variable=np.asarray(model.layers[0].kernel.numpy()))
    return model
"""


def _keras_weights(exp_dir, iteration):
    """{name: array} of the network weights (no optimiser slots, no run state) in a checkpoint."""
    import checkpoint
    import tensorflow as tf
    reader = tf.train.load_checkpoint(os.path.join(exp_dir, 'model%d' % iteration))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if '/Adam' not in n and 'power' not in n and n != checkpoint.STATE_KEY}


def test_two_workers_train_a_custom_keras_model_save_it_by_keras_paths_and_resume(tmp_path):
    models = tmp_path / 'my_models.py'
    models.write_text(KERAS_MLP)
    flags = SINE_5 + ['--model=%s:mlp' % models, '--progress=False']
    exp = SINE_5_EXP + '.model_my_models.mlp'
    run_main(flags + ['--metatrain_iterations=600', '--logdir=%s/one' % tmp_path])

    two = str(tmp_path / 'two')
    os.makedirs(two)
    workers = start_workers(2, flags + ['--metatrain_iterations=300', '--logdir=' + two], two)
    (status0, out0, err0), (status1, out1, err1) = wait_all(workers)
    assert (status0, status1) == (0, 0), err0[-2000:] + err1[-2000:]
    assert out0.startswith('Done initializing, starting training.') and out1 == ''
    # Every worker made the same experiment folder name; only the chief wrote in it.
    assert sorted(os.listdir(two)) == sorted([exp, 'worker0.err', 'worker0.out', 'worker1.err',
                                              'worker1.out'])
    saved = _keras_weights(os.path.join(two, exp), 299)
    names = sorted(v for v in saved)
    assert names == sorted(['mlp/dense/kernel', 'mlp/dense/bias', 'mlp/dense_1/kernel',
                            'mlp/dense_1/bias', 'mlp/dense_2/kernel', 'mlp/dense_2/bias'])

    resumed = start_workers(2, flags + ['--metatrain_iterations=600', '--logdir=' + two], two)
    (status0, out0, err0), (status1, _, err1) = wait_all(resumed)
    assert (status0, status1) == (0, 0), err0[-2000:] + err1[-2000:]
    assert out0.splitlines()[0] == 'Restoring model weights from ' + os.path.join(two, exp,
                                                                                   'model299')
    assert_weights_close(_keras_weights(os.path.join(two, exp), 599),
                         _keras_weights(os.path.join(str(tmp_path), 'one', exp), 599), 1e-4)


def test_unseeded_workers_start_a_custom_keras_model_from_the_chiefs_initial_weights(
        tmp_path, monkeypatch):
    # The variables are made in the strategy's scope, which hands every
    # worker the chief's initial values: without that each would train its own.
    models = tmp_path / 'my_models.py'
    models.write_text(KERAS_MLP)
    monkeypatch.setenv('MAML_TEST_DRAWN', str(tmp_path))
    flags = [f for f in SINE_5 if not f.startswith('--seed')] + [
        '--model=%s:mlp_drawn_per_process' % models, '--metatrain_iterations=1',
        '--progress=False', '--logdir=%s/logs' % tmp_path]
    workers = start_workers(2, flags, str(tmp_path))
    (status0, _, err0), (status1, _, err1) = wait_all(workers)
    assert (status0, status1) == (0, 0), err0[-2000:] + err1[-2000:]
    chief, other = (np.load(str(tmp_path / ('worker%d.npz' % i))) for i in (0, 1))
    assert not np.array_equal(other['drawn'], chief['drawn'])
    np.testing.assert_array_equal(chief['variable'], chief['drawn'])
    np.testing.assert_array_equal(other['variable'], chief['drawn'])


def test_a_killed_worker_stops_the_other_and_the_rerun_resumes_exactly(tmp_path):
    # Without progress lines: the survivor's stderr is then its one error line.
    flags = SINE_5 + ['--metatrain_iterations=1500', '--worker_timeout=10', '--progress=False']
    uninterrupted = start_workers(2, flags + ['--logdir=%s/whole' % tmp_path], str(tmp_path))
    assert [s for s, _, _ in wait_all(uninterrupted)] == [0, 0]

    logdir = '%s/killed' % tmp_path
    os.makedirs(logdir)
    workers = start_workers(2, flags + ['--logdir=' + logdir], logdir)
    wait_for_file(workers[0], os.path.join(logdir, SINE_5_EXP, 'model1000.index'))
    workers[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    (status0, _, err0), _ = wait_all(workers, timeout=120)
    assert time.monotonic() - killed_at < 60
    assert status0 == 1
    # One line (none of TensorFlow's gRPC and collective notices), no fragment.
    lines = err0.strip().splitlines()
    assert len(lines) == 1, err0
    assert lines[0].startswith('error: worker 1 (127.0.0.1:') and 'stopped answering' in lines[0]
    assert 'Rerun the same commands' in lines[0] and ':)' not in lines[0]

    resumed = start_workers(2, flags + ['--logdir=' + logdir], logdir)
    (status0, out0, _), (status1, _, _) = wait_all(resumed)
    assert (status0, status1) == (0, 0)
    assert 'Restoring model weights from' in out0
    whole = final_weights('%s/whole/%s' % (tmp_path, SINE_5_EXP), 1499)
    again = final_weights(os.path.join(logdir, SINE_5_EXP), 1499)
    for name in whole:
        np.testing.assert_array_equal(again[name], whole[name], err_msg=name)


def test_sigterm_on_one_worker_saves_once_and_stops_both(tmp_path):
    flags = SINE_5 + ['--metatrain_iterations=100000']
    workers = start_workers(2, flags + ['--logdir=%s' % tmp_path], str(tmp_path))
    exp_dir = os.path.join(str(tmp_path), SINE_5_EXP)
    wait_for_file(workers[0], os.path.join(exp_dir, 'model1000.index'))
    workers[1].send_signal(signal.SIGTERM)
    (status0, out0, _), (status1, _, _) = wait_all(workers, timeout=120)
    assert (status0, status1) == (130, 130)
    line = out0.strip().splitlines()[-1]
    assert line.startswith('Interrupted after iteration ')
    saved = int(line.split()[3].rstrip(':'))
    assert os.path.exists(os.path.join(exp_dir, 'model%d.index' % saved))


def test_workers_with_different_flags_stop_with_one_line_naming_the_flag(tmp_path):
    workers = start_workers(2, SINE_5 + ['--metatrain_iterations=10', '--logdir=%s' % tmp_path],
                            str(tmp_path), extra=[[], ['--meta_lr=0.002']])
    results = wait_all(workers, timeout=120)
    for status, out, err in results:
        assert status == 1
        last = err.strip().splitlines()[-1]
        assert last.startswith('error: --meta_lr differs between worker 0 (127.0.0.1:')
        assert 'and worker 1 (127.0.0.1:' in last
    assert not os.path.exists(os.path.join(str(tmp_path), SINE_5_EXP, 'model9.index'))


@pytest.mark.parametrize('index', [0, 1])
def test_a_worker_whose_peer_never_starts_stops_after_the_timeout_with_one_line(tmp_path, index):
    # Worker 0, the chief, hosts TensorFlow's coordination service; 1 joins it.
    from local_cluster import tf_configs
    tf_config = tf_configs(2)[index]
    peer = json.loads(tf_config)['cluster']['worker'][1 - index]
    start = time.monotonic()
    proc = run_main(SINE_5 + ['--worker_timeout=5', '--logdir=%s' % tmp_path], check=False,
                    env=dict(os.environ, TF_CONFIG=tf_config), timeout=180)
    assert time.monotonic() - start < 90
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('error: worker %d (127.0.0.1:' % index)
    assert 'could not reach the cluster within --worker_timeout=5 s: worker %d (%s) never ' \
        'answered' % (1 - index, peer) in lines[0]
    assert 'Start every worker' in lines[0]


def _wait_until_listening(proc, address, timeout=WAIT_TIMEOUT):
    """Return once something accepts connections at address; fail if proc ends first."""
    host, port = address.rsplit(':', 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, 'nothing listened at %s' % address
            time.sleep(0.2)


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_signal_stops_a_worker_waiting_for_its_peers_at_once_with_one_line(tmp_path, signum):
    from local_cluster import tf_configs
    tf_config = tf_configs(2)[0]
    proc = start_main(SINE_5 + ['--worker_timeout=600', '--logdir=%s' % tmp_path],
                      env=dict(os.environ, TF_CONFIG=tf_config))
    # The chief listens on its address while it waits for worker 1.
    _wait_until_listening(proc, json.loads(tf_config)['cluster']['worker'][0])
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail('the waiting worker ignored signal %d' % signum)
    assert proc.returncode == 128 + signum
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith('Interrupted while waiting for the other workers to join')


@pytest.mark.parametrize('tf_config, message', [
    ('{"cluster": ', 'TF_CONFIG is not JSON'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
     'TF_CONFIG task.index is 3, outside the cluster'),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     'TF_CONFIG cluster.worker must be a list of "host:port" strings'),
])
def test_a_bad_tf_config_is_one_line_and_exit_1(tmp_path, tf_config, message):
    proc = run_main(SINE_5 + ['--logdir=%s' % tmp_path], check=False,
                    env=dict(os.environ, TF_CONFIG=tf_config))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith('error: ' + message)
