"""The events a training run writes, read back by the real TensorBoard over its HTTP API.

Starts `tensorboard` (installed by requirements.txt) on 127.0.0.1 on a free
port, waits for it (bounded), asks its data API for the runs, the scalar tags
and their values, and stops it. Slow: it trains first and starts a server.
"""
import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from conftest import SINE, SINE_EXP, run_main

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _get(port, path, **query):
    url = 'http://127.0.0.1:%d%s' % (port, path)
    if query:
        url += '?' + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


def _events(exp_dir):
    """{tag: [(step, value)]} straight from the event file."""
    found = {}
    for path in glob.glob(os.path.join(exp_dir, 'events.out.tfevents.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = tf.make_ndarray(value.tensor) if value.HasField('tensor') \
                    else value.simple_value
                found.setdefault(value.tag, []).append((event.step, float(number)))
    return found


def test_tensorboard_serves_the_reference_tags_and_values_of_a_training_run(tmp_path):
    run_main(SINE + ['--metatrain_iterations=201', '--logdir=%s' % tmp_path])
    expected = _events(os.path.join(str(tmp_path), SINE_EXP))
    assert set(expected) == {'metatrain_Pre-update loss'} | {
        'metatrain_Post-update loss, step %d' % j for j in range(1, 6)}

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, '-m', 'tensorboard.main', '--logdir', str(tmp_path), '--host',
         '127.0.0.1', '--port', str(port), '--reload_interval', '1'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        runs = []
        while SINE_EXP not in runs:
            assert server.poll() is None, 'tensorboard exited with %s' % server.returncode
            assert time.monotonic() < deadline, 'tensorboard did not list the run in 120 s'
            try:
                runs = _get(port, '/data/runs')
            except OSError:
                pass
            time.sleep(0.5)
        tags = _get(port, '/data/plugin/scalars/tags')[SINE_EXP]
        assert set(tags) == set(expected)
        for tag, points in expected.items():
            served = _get(port, '/data/plugin/scalars/scalars', run=SINE_EXP, tag=tag)
            assert [step for _, step, _ in served] == [step for step, _ in points] == [0, 100, 200]
            np.testing.assert_allclose([value for _, _, value in served],
                                       [value for _, value in points], rtol=1e-6)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
