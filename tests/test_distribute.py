"""Where the steps run: TF_CONFIG, the replicas' shares, one job per folder. Each test one sentence."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

import folder_lock
from distribute import Cluster, ClusterError, _first_line, contiguous_shares, wait_for_workers


def test_shares_are_contiguous_cover_the_meta_batch_and_leave_extra_replicas_empty():
    assert contiguous_shares(5, 2) == [range(0, 3), range(3, 5)]
    assert contiguous_shares(32, 4) == [range(i * 8, i * 8 + 8) for i in range(4)]
    assert contiguous_shares(1, 3) == [range(0, 1), range(1, 1), range(1, 1)]
    for tasks in range(1, 12):
        for replicas in range(1, 6):
            shares = contiguous_shares(tasks, replicas)
            assert [t for s in shares for t in s] == list(range(tasks))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def _tf_config(cluster, task):
    return {'TF_CONFIG': json.dumps({'cluster': cluster, 'task': task})}


def test_an_unset_tf_config_means_no_cluster():
    assert Cluster.from_environment({}) is None
    assert Cluster.from_environment({'TF_CONFIG': ' '}) is None


def test_tf_config_workers_are_numbered_in_order_with_a_chief_first():
    env = _tf_config({'worker': ['b:2', 'c:3'], 'chief': ['a:1']}, {'type': 'worker', 'index': 1})
    cluster = Cluster.from_environment(env)
    assert cluster.workers == ['a:1', 'b:2', 'c:3']
    assert cluster.index == 2 and not cluster.is_chief
    assert cluster.leader == '/job:chief/replica:0/task:0'
    chief = Cluster.from_environment(_tf_config({'worker': ['b:2']}, {'type': 'worker', 'index': 0}))
    assert chief.is_chief and chief.describe(0) == 'worker 0 (b:2)'


@pytest.mark.parametrize('text, message', [
    ('{"cluster"', 'TF_CONFIG is not JSON'),
    ('{"cluster": {"worker": ["a:1"]}}', 'TF_CONFIG needs "cluster" and "task"'),
    ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', 'TF_CONFIG names job ps'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
     'TF_CONFIG task.index is 1, outside the cluster\'s 1 worker task(s): use 0 to 0'),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}',
     'TF_CONFIG cluster.worker must be a list of "host:port" strings'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     'TF_CONFIG task.type is \'chief\', not a job of the cluster'),
    ('{"cluster": {"worker": ["a:1", "b:70000"]}, "task": {"type": "worker", "index": 0}}',
     'TF_CONFIG cluster.worker names b:70000: a port is 1 to 65535'),
])
def test_a_malformed_tf_config_is_a_cluster_error_saying_what_is_wrong(text, message):
    with pytest.raises(ClusterError) as e:
        Cluster.from_environment({'TF_CONFIG': text})
    assert str(e.value).startswith(message)


def test_a_worker_whose_own_port_is_taken_is_told_so_before_waiting():
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        address = '127.0.0.1:%d' % taken.getsockname()[1]
        cluster = Cluster.from_environment(_tf_config({'worker': [address, '127.0.0.1:1']},
                                                      {'type': 'worker', 'index': 0}))
        with pytest.raises(ClusterError) as e:
            wait_for_workers(cluster, timeout_seconds=600)
    assert str(e.value) == ('%s, this worker\'s address in TF_CONFIG, is already in use (another '
                            'process listens there): free it or choose another port' % address)


def test_a_tensorflow_error_is_cut_to_the_first_line_that_says_what_happened():
    # As a collective aborted by a lost worker reports it.
    message = ('Graph execution error:\n\nDetected at node while/CollectiveReduceV2 defined at '
               '(most recent call last):\n  File "main.py", line 107, in <module>\n\n'
               '{{function_node __inference_f_12}} Collective ops is aborted by: recvmsg:'
               'Connection reset by peer\nAdditional GRPC error information\n'
               '\t [[{{node while/CollectiveReduceV2}}]] [Op:__inference_function_1869]')
    assert _first_line(message) == 'Collective ops is aborted by: recvmsg:Connection reset by peer'
    # A first line that introduces details below it ends without its colon.
    heartbeats = ('Collective ops is aborted by: The coordination service has detected that a '
                  'task stopped sending heartbeats:\n/job:worker/replica:0/task:1')
    assert _first_line(heartbeats).endswith('stopped sending heartbeats')
    # A long line ends at a sentence's end, not in a word.
    long = 'Barrier timed out. ' + 'A sentence of some words. ' * 20
    cut = _first_line(long)
    assert len(cut) <= 200 and long.startswith(cut) and cut.endswith('words.')


# ------------------------------------------------------------- folder lock
def test_a_second_run_on_a_held_folder_is_refused_naming_the_holder(tmp_path):
    folder = str(tmp_path / 'exp')
    folder_lock.hold(folder)
    try:
        with pytest.raises(folder_lock.FolderInUse) as e:
            folder_lock.hold(folder)
        assert 'process %d on host' % os.getpid() in str(e.value)
        assert 'another --logdir' in str(e.value)
    finally:
        folder_lock.release(folder)
    folder_lock.hold(folder)  # free again once released
    folder_lock.release(folder)


def test_a_worker_passes_its_own_chiefs_lock_but_not_another_jobs(tmp_path):
    folder = str(tmp_path / 'exp')
    folder_lock.hold(folder, job='job-a')
    try:
        folder_lock.hold(folder, job='job-a', holder=False)
        with pytest.raises(folder_lock.FolderInUse):
            folder_lock.hold(folder, job='job-b', holder=False)
    finally:
        folder_lock.release(folder)


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    folder = str(tmp_path / 'exp')
    code = ('import sys, folder_lock; folder_lock.hold(sys.argv[1]); print("held", flush=True); '
            'sys.stdin.read()')
    proc = subprocess.Popen([sys.executable, '-c', code, folder], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert proc.stdout.readline().strip() == 'held'
        with pytest.raises(folder_lock.FolderInUse):
            folder_lock.hold(folder)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        folder_lock.hold(folder)
        folder_lock.release(folder)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
