"""Nothing lost to a kill, a Ctrl-C or a bad input. Each test one sentence."""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT

SINE = ['--datasource=sinusoid', '--norm=None', '--update_batch_size=5', '--meta_batch_size=4',
        '--update_lr=0.01', '--seed=11']
EXP = 'cls_5.mbs_4.ubs_5.numstep1.updatelr0.01nonorm'
MAIN = os.path.join(REPO_ROOT, 'main.py')


def run_main(args, check=True):
    proc = subprocess.run([sys.executable, MAIN] + args, capture_output=True, text=True,
                          cwd=REPO_ROOT)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def start_and_wait_for(args, path, timeout=300):
    """Start main.py and return the process once `path` exists."""
    proc = subprocess.Popen([sys.executable, MAIN] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, 'main.py ended early: %s' % proc.stderr.read()[-2000:]
        assert time.time() < deadline, 'timed out waiting for %s' % path
        time.sleep(0.05)
    return proc


def final_weights(logdir, iteration):
    reader = tf.train.load_checkpoint(os.path.join(logdir, EXP, 'model%d' % iteration))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if n.startswith('model/')}


def files_snapshot(folder):
    return {p: open(p, 'rb').read() for p in glob.glob(os.path.join(folder, '*'))
            if os.path.isfile(p)}


def test_a_run_killed_with_sigkill_and_restarted_ends_exactly_like_an_uninterrupted_one(tmp_path):
    whole, killed = str(tmp_path / 'whole'), str(tmp_path / 'killed')
    # Long enough that the kill lands well before the end: a sinusoid run
    # makes a few thousand iterations a second.
    args = SINE + ['--metatrain_iterations=20000']
    run_main(args + ['--logdir=' + whole])
    proc = start_and_wait_for(args + ['--logdir=' + killed],
                              os.path.join(killed, EXP, 'model1000.index'))
    time.sleep(0.2)  # somewhere after the checkpoint, mid-iteration
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(killed, EXP, 'model19999.index'))
    restarted = run_main(args + ['--logdir=' + killed])
    assert 'Restoring model weights from' in restarted.stdout
    a, b = final_weights(whole, 19999), final_weights(killed, 19999)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for logdir in (whole, killed):
        run_main(args + ['--logdir=' + logdir, '--train=False'])
    csv_name = os.path.join(EXP, 'test_ubs5_stepsize0.01.csv')
    with open(os.path.join(whole, csv_name)) as f, open(os.path.join(killed, csv_name)) as g:
        assert f.read() == g.read()


def test_ctrl_c_saves_a_checkpoint_and_the_next_run_resumes_from_it(tmp_path):
    logdir = str(tmp_path)
    args = SINE + ['--metatrain_iterations=100000', '--logdir=' + logdir]
    proc = start_and_wait_for(args, os.path.join(logdir, EXP, 'model1000.index'))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert 'Interrupted after iteration' in out and 'Traceback' not in err
    # The iteration the run was at when the signal came; at least 1000, and
    # exactly 1000 when the signal lands in the iteration that saved model1000.
    saved = int(out.split('Interrupted after iteration ')[1].split(':')[0])
    assert saved >= 1000
    assert saved == max(int(os.path.basename(p)[5:-6])
                        for p in glob.glob(os.path.join(logdir, EXP, 'model*.index')))
    resumed = run_main(SINE + ['--metatrain_iterations=%d' % (saved + 2), '--logdir=' + logdir])
    assert 'model%d' % saved in resumed.stdout
    assert os.path.exists(os.path.join(logdir, EXP, 'model%d.index' % (saved + 1)))


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
    run_main(SINE + ['--metatrain_iterations=1001', '--logdir=' + logdir])
    before = files_snapshot(os.path.join(logdir, EXP))
    bad = SINE + ['--metatrain_iterations=3000', '--logdir=' + logdir] + bad_flags
    proc = run_main(bad, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: the training loss became'), last
    assert 'iteration %d;' % first_bad_iteration in last, last
    after = files_snapshot(os.path.join(logdir, EXP))
    assert {p: v for p, v in after.items() if 'tfevents' not in p} == \
        {p: v for p, v in before.items() if 'tfevents' not in p}


def _last_error(proc):
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def test_bad_inputs_give_one_line_and_damage_nothing(tmp_path):
    logdir = str(tmp_path / 'logs')
    run_main(SINE + ['--metatrain_iterations=1001', '--logdir=' + logdir])
    run_main(SINE + ['--logdir=' + logdir, '--train=False'])
    before = files_snapshot(os.path.join(logdir, EXP))

    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    last = _last_error(run_main(SINE + ['--logdir=%s/sub' % blocker], check=False))
    assert last.startswith('error: cannot write to') and 'choose another --logdir' in last

    last = _last_error(run_main(SINE + ['--logdir=' + logdir, '--train=False', '--test_iter=5000'],
                                check=False))
    assert 'no checkpoint' in last and 'model5000' in last and 'existing iterations: 1000' in last

    # Same experiment name, other shapes: a hand-made clash of flags and checkpoint.
    other = str(tmp_path / 'other')
    run_main(['--datasource=sinusoid', '--norm=None', '--update_batch_size=5',
              '--meta_batch_size=4', '--update_lr=0.01', '--baseline=oracle',
              '--metatrain_iterations=10', '--logdir=' + other])
    os.rename(os.path.join(other, EXP.replace('nonorm', 'oraclenonorm')), os.path.join(other, EXP))
    last = _last_error(run_main(SINE + ['--logdir=' + other, '--train=False'], check=False))
    assert 'model/Variable has shape [3, 40] but these flags need [1, 40]' in last

    last = _last_error(run_main(SINE + ['--logdir=' + str(tmp_path / 'empty'), '--train=False'],
                                check=False))
    assert 'no checkpoint to test' in last

    assert files_snapshot(os.path.join(logdir, EXP)) == before


def test_a_logdir_whose_path_says_model_and_log_false_simply_work(tmp_path):
    logdir = str(tmp_path / 'model42' / 'my_models')
    run_main(SINE + ['--metatrain_iterations=1001', '--log=False', '--logdir=' + logdir])
    files = os.listdir(os.path.join(logdir, EXP))
    assert 'model1000.index' in files and not [f for f in files if 'tfevents' in f]
    resumed = run_main(SINE + ['--metatrain_iterations=1003', '--log=False', '--logdir=' + logdir])
    assert 'model1000' in resumed.stdout
    assert 'model1002.index' in os.listdir(os.path.join(logdir, EXP))


def test_the_same_seed_gives_identical_runs(tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    out_a = run_main(SINE + ['--metatrain_iterations=1001', '--logdir=' + a]).stdout
    out_b = run_main(SINE + ['--metatrain_iterations=1001', '--logdir=' + b]).stdout
    assert out_a == out_b
    wa, wb = final_weights(a, 1000), final_weights(b, 1000)
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name])


def _tiny_miniimagenet(root, classes=6, images=16):
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


def test_an_interrupted_image_run_resumes_with_the_same_batches(tmp_path):
    data = _tiny_miniimagenet(str(tmp_path / 'data'))
    args = ['--datasource=miniimagenet', '--num_filters=2', '--meta_batch_size=2',
            '--update_batch_size=1', '--update_lr=0.01', '--max_pool=True', '--seed=3',
            '--metatrain_iterations=120', '--data_folder=' + data]
    exp = 'cls_5.mbs_2.ubs_1.numstep1.updatelr0.01hidden2maxpoolbatchnorm'
    whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
    run_main(args + ['--logdir=' + whole])
    proc = subprocess.Popen([sys.executable, MAIN] + args + ['--logdir=' + parts],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO_ROOT)
    line = proc.stdout.readline()
    while line and not line.startswith('Done initializing'):
        line = proc.stdout.readline()
    time.sleep(8)  # well into training
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and 'Interrupted after iteration' in out, err[-2000:]
    stopped = int(out.split('Interrupted after iteration ')[1].split(':')[0])
    assert stopped < 119
    run_main(args + ['--logdir=' + parts])
    a = tf.train.load_checkpoint(os.path.join(whole, exp, 'model119'))
    b = tf.train.load_checkpoint(os.path.join(parts, exp, 'model119'))
    for name in a.get_variable_to_shape_map():
        if name.startswith('model/'):
            np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name), err_msg=name)


def test_ctrl_c_outside_the_training_loop_stops_with_one_line_and_no_traceback(tmp_path):
    # A Ctrl-C while images load or the step traces (or a second one while
    # training) arrives as KeyboardInterrupt anywhere in run(); simulated here
    # by a run() that raises it, in a real main.py process.
    script = ('import sys; sys.argv = ["main.py", "--logdir=%s"]; import main\n'
              'def interrupted(config): raise KeyboardInterrupt\n'
              'main.run = interrupted\n'
              'from absl import app; app.run(main.main)\n' % tmp_path)
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          cwd=REPO_ROOT)
    assert proc.returncode == 130
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith('Interrupted: stopped at once')
