"""Shared test fixtures: where the real data sets live, and main.py run as a user runs it.

Tests that need the real data sets read them from ``MAML_DATA_DIR`` (default:
``../shared/data`` beside this repository, when it exists). Without it they skip
with a message saying how to get the data, unless ``MAML_REQUIRE_DATA=1`` (set
by CI), under which a missing data set fails instead. A run that skipped any
of them ends with one line counting them.

The command-line tests (test_main.py, test_reliability.py) run main.py in a
subprocess through `run_main` or `start_main`; every waiting helper has a
deadline, and a process started with `start_main` that is still running when
its test ends (a failed test) is killed, so no run outlives its test.
"""
import os
import selectors
import subprocess
import sys
import time

import pytest

# pytester runs small pytest sessions inside a test (test_conftest.py checks
# this file's end-of-run line that way).
pytest_plugins = ['pytester']

# The same TensorFlow settings as main.py, so in-process tests check the path
# that training takes (and subprocesses inherit them).
import tf_env  # noqa: E402,F401
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so that a MirroredStrategy over two replicas runs
# in this process (the same code path as two GPUs). Ops without a strategy
# still run on the first. Must happen before TensorFlow runs any op.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices('CPU')[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
_two_cpu_strategy = []


def two_cpu_strategy():
    """One MirroredStrategy over the two logical CPU devices, shared by every test:
    strategies made side by side in one process would reuse each other's
    collective keys."""
    if not _two_cpu_strategy:
        _two_cpu_strategy.append(tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))
    return _two_cpu_strategy[0]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_DATA_DIR = os.path.join(REPO_ROOT, '..', 'shared', 'data')
HOW_TO_GET_DATA = (
    'set MAML_DATA_DIR to a folder holding omniglot/images_background.zip, '
    'omniglot/images_evaluation.zip, miniImagenet/{train_subset100,val_subset100,test}.zip '
    'and checkpoints/ (see README.md, "Data")')
# Every skip for want of data starts with these words; the end-of-run line counts them.
DATA_MISSING = 'real data not found'


def data_dir():
    return os.environ.get('MAML_DATA_DIR', DEFAULT_DATA_DIR)


def require_data(*relative_paths):
    """Return the absolute paths of these data files, or skip (fail under MAML_REQUIRE_DATA=1)."""
    root = data_dir()
    paths = [os.path.join(root, p) for p in relative_paths]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        message = '%s (%s); %s' % (DATA_MISSING, ', '.join(missing), HOW_TO_GET_DATA)
        if os.environ.get('MAML_REQUIRE_DATA') == '1':
            pytest.fail(message)
        pytest.skip(message)
    return paths


def _skip_reason(report):
    # A skip's longrepr is (file, line, "Skipped: reason").
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    """One line at the end of a run counting the tests skipped for want of the real
    data: their reasons show only with -rs, so a green run in a fresh clone would
    otherwise hide that they did not run."""
    count = sum(DATA_MISSING in _skip_reason(report)
                for report in terminalreporter.stats.get('skipped', []))
    if count:
        terminalreporter.write_line('%d test%s skipped: the real data sets were not found; %s' % (
            count, '' if count == 1 else 's', HOW_TO_GET_DATA))


# ------------------------------------------------------------ main.py runs
MAIN = os.path.join(REPO_ROOT, 'main.py')
# A short sinusoid experiment, and the folder name main.py gives it.
SINE = ['--datasource=sinusoid', '--norm=None', '--update_batch_size=5', '--meta_batch_size=4',
        '--update_lr=0.01']
SINE_EXP = 'cls_5.mbs_4.ubs_5.numstep1.updatelr0.01nonorm'
# Generous bounds: a sinusoid run of 20,000 iterations takes well under a
# minute on 2 cores; these only stop a hung run from hanging the suite.
RUN_TIMEOUT = 900
WAIT_TIMEOUT = 300

_started = []


def run_main(args, check=True, timeout=RUN_TIMEOUT, env=None):
    """Run main.py with these flags to its end; with check, assert it exited 0."""
    proc = subprocess.run([sys.executable, MAIN] + list(args), capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=timeout, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def start_main(args, env=None):
    """Start main.py with these flags; killed at the end of the test if still running."""
    proc = subprocess.Popen([sys.executable, MAIN] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)
    proc.stdout_read = b''  # what wait_for_line has read so far
    proc.lines_scanned = 0  # bytes of it already searched for a line
    _started.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaps it and closes its pipes


def _ended_early(proc, waiting_for):
    proc.wait(timeout=60)
    return 'main.py ended (exit %s) before %s: %s' % (
        proc.returncode, waiting_for, proc.stderr.read()[-3000:])


def wait_for_file(proc, path, timeout=WAIT_TIMEOUT):
    """Return once `path` exists; fail if the run ends first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            pytest.fail('timed out after %ds waiting for %s' % (timeout, path))
        try:
            proc.wait(timeout=0.05)  # returns at once if the run ends
        except subprocess.TimeoutExpired:
            continue
        if not os.path.exists(path):
            pytest.fail(_ended_early(proc, path))


def wait_for_line(proc, prefix, timeout=WAIT_TIMEOUT):
    """The first line main.py printed starting with `prefix` after the lines already
    waited for; fail if the run ends first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            end = proc.stdout_read.find(b'\n', proc.lines_scanned)
            while end >= 0:
                line = proc.stdout_read[proc.lines_scanned:end].decode()
                proc.lines_scanned = end + 1
                if line.startswith(prefix):
                    return line
                end = proc.stdout_read.find(b'\n', proc.lines_scanned)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                pytest.fail('timed out after %ds waiting for a line %r; printed so far:\n%s'
                            % (timeout, prefix, proc.stdout_read.decode()[-3000:]))
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(_ended_early(proc, 'a line %r' % prefix))
            proc.stdout_read += chunk


def finish(proc, timeout=WAIT_TIMEOUT):
    """Wait for a started run to end: (all it printed, including the lines waited for, stderr)."""
    out, err = proc.communicate(timeout=timeout)
    return proc.stdout_read.decode() + out, err


def final_weights(exp_dir, iteration):
    """{name: array} of the network weights in checkpoint model{iteration} of an experiment folder."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(os.path.join(exp_dir, 'model%d' % iteration))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if n.startswith('model/')}


def tiny_miniimagenet(root, classes=6, images=16):
    """A MiniImagenet-shaped tree of random 84x84 images (train/ and val/ class folders)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for c in range(classes):
            folder = os.path.join(root, split, 'n%08d' % c)
            os.makedirs(folder)
            for i in range(images):
                pixels = rng.integers(0, 255, (84, 84, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, '%04d.jpg' % i))
    return root


def tiny_omniglot(root, characters=1210, images=3):
    """An Omniglot-shaped tree (ALPHABET/CHARACTER/*.png, 28x28): enough characters for
    the reference's 1,100 training and 100 validation classes, each a random pattern
    drawn with a few pixels flipped per image (so that tasks can be learnt)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in range(characters):
        folder = os.path.join(root, 'alphabet%02d' % (c // 100), 'character%04d' % c)
        os.makedirs(folder)
        pattern = rng.random((28, 28)) < 0.2
        for i in range(images):
            flipped = pattern ^ (rng.random((28, 28)) < 0.03)
            pixels = np.where(flipped, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, '%02d.png' % i))
    return root


def start_workers(count, args, log_dir, extra=None):
    """Start `count` workers of one multi-worker job on 127.0.0.1 (free ports), each
    main.py with these flags (plus extra[i]) and its own TF_CONFIG; their stdout and
    stderr go to log_dir/worker{i}.out and .err. Killed at the end of the test if
    still running."""
    from local_cluster import tf_configs
    workers = []
    for i, tf_config in enumerate(tf_configs(count)):
        out = open(os.path.join(log_dir, 'worker%d.out' % i), 'w')
        err = open(os.path.join(log_dir, 'worker%d.err' % i), 'w')
        flags = list(args) + list(extra[i] if extra else [])
        proc = subprocess.Popen([sys.executable, MAIN] + flags, stdout=out, stderr=err,
                                cwd=REPO_ROOT, env=dict(os.environ, TF_CONFIG=tf_config))
        out.close()
        err.close()
        proc.out_path, proc.err_path = out.name, err.name
        _started.append(proc)
        workers.append(proc)
    return workers


def wait_all(workers, timeout=RUN_TIMEOUT):
    """Wait for every worker to end: [(exit status, stdout, stderr)]."""
    deadline = time.monotonic() + timeout
    results = []
    for proc in workers:
        try:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail('a worker did not end within %ds' % timeout)
        with open(proc.out_path) as out, open(proc.err_path) as err:
            results.append((proc.returncode, out.read(), err.read()))
    return results
