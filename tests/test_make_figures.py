"""results/make_figures.py: the figures of results/. Each test one sentence.

The figures are drawn from one short sinusoid training made here (main.py in a
subprocess, so these are marked slow); the command line runs in a subprocess
too, since TensorFlow's notices are written by its C++ libraries to the
process's standard error."""
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, SINE, SINE_EXP, run_main
from results import make_figures

SCRIPT = os.path.join(REPO_ROOT, 'results', 'make_figures.py')
# What TensorFlow writes to stderr when its notices are not hidden: the C++
# start-up lines (I0000 ..., "All log messages before absl::InitializeLog()"),
# and Python warnings such as tf_record_iterator's "is deprecated".
TF_NOTICE = re.compile(r'^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuda|deprecated|'
                       r'WARNING:tensorflow', re.MULTILINE)


@pytest.fixture(scope='module')
def exp_dir(tmp_path_factory):
    """A short sinusoid training: summaries at iterations 0, 100 and 200, one checkpoint."""
    logdir = str(tmp_path_factory.mktemp('logs'))
    run_main(SINE + ['--metatrain_iterations=201', '--logdir=' + logdir])
    return os.path.join(logdir, SINE_EXP)


def make_figures_command(args):
    env = dict(os.environ)
    env.pop('MAML_TF_NOTICES', None)  # the default: notices hidden
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300, env=env)


def line_count(fig):
    return sum(len(ax.get_lines()) for ax in fig.axes)


def test_make_figures_never_replaces_an_existing_figure_without_overwrite(tmp_path, capsys):
    figure = tmp_path / 'figure.png'
    figure.write_bytes(b'committed')
    with pytest.raises(SystemExit) as e:
        make_figures.main(['sine', '--maml', 'a', '--pretrained', 'b', '--out', str(figure)])
    assert e.value.code == 2
    assert 'exists: choose another --out, or pass --overwrite' in capsys.readouterr().err
    assert figure.read_bytes() == b'committed'


def test_the_scalars_of_a_folder_named_like_a_glob_pattern_are_read(tmp_path):
    import tensorflow as tf
    folder = tmp_path / 'run[1]'
    with tf.summary.create_file_writer(str(folder)).as_default():
        tf.summary.scalar('metaval_Pre-update loss', 0.5, step=100)
    assert make_figures.read_scalars(str(folder)) == {'metaval_Pre-update loss': {100: 0.5}}


@pytest.mark.slow
def test_curves_writes_the_figure_without_tensorflow_notices_on_stderr(exp_dir, tmp_path):
    out = tmp_path / 'curves.png'
    proc = make_figures_command(['curves', exp_dir, '--out', str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes().startswith(b'\x89PNG')
    assert TF_NOTICE.search(proc.stderr) is None, proc.stderr[-3000:]


@pytest.mark.slow
def test_sine_without_a_pretrained_baseline_draws_maml_and_says_how_to_train_the_baseline(
        exp_dir, tmp_path):
    out = tmp_path / 'sine.png'
    proc = make_figures_command(['sine', '--maml', exp_dir, '--out', str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes().startswith(b'\x89PNG')
    assert TF_NOTICE.search(proc.stderr) is None, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if line.startswith('note: ')]
    assert len(notes) == 1, proc.stderr
    # The command trains the baseline with this run's flags, so that its folder
    # has the same name under its own logdir.
    assert ('--pretrain_iterations=70000 --metatrain_iterations=0 --norm=None '
            '--meta_batch_size=4 --update_lr=0.01`' in notes[0])
    assert notes[0].endswith('--pretrained logs/sine_pretrained/' + SINE_EXP)


@pytest.mark.slow
def test_sine_with_a_pretrained_baseline_draws_a_panel_for_each_model(exp_dir, tmp_path):
    # Any sinusoid checkpoint stands in for the baseline: the figure only restores it.
    fig = make_figures.sine_figure(exp_dir, exp_dir, str(tmp_path / 'sine.png'))
    assert [ax.get_title().split(',')[0] for ax in fig.axes] == ['MAML', 'pretrained']
    assert (tmp_path / 'sine.png').exists()


@pytest.mark.slow
def test_curves_with_all_steps_draws_a_post_update_line_for_every_logged_step(exp_dir, tmp_path):
    trained_step = make_figures.curves_figure([exp_dir], str(tmp_path / 'one.png'))
    every_step = make_figures.curves_figure([exp_dir], str(tmp_path / 'all.png'), all_steps=True)
    logged = make_figures._post_update_steps(make_figures.read_scalars(exp_dir), 'metatrain_',
                                             'loss')
    assert len(logged) > 1  # training evaluates several steps (max(num_updates, test steps))
    assert line_count(trained_step) == 2  # pre-update, and post-update after the trained step
    assert line_count(every_step) == 1 + len(logged)


@pytest.mark.slow
def test_curves_reads_an_event_file_whose_last_record_is_cut_short(exp_dir, tmp_path):
    # A run still writing (or killed while writing) leaves a partial last record.
    folder = tmp_path / SINE_EXP
    shutil.copytree(exp_dir, folder)
    events, = glob.glob(str(folder / 'events.out.tfevents.*'))
    with open(events, 'r+b') as f:
        f.truncate(os.path.getsize(events) - 5)
    fig = make_figures.curves_figure([str(folder)], str(tmp_path / 'curves.png'))
    assert line_count(fig) == 2
