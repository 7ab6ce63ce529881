"""examples/: each custom model meta-trains through main.py's --model for a few
iterations and tests, with the reference's printed lines."""
import os

import pytest

from conftest import SINE, run_main, tiny_omniglot


@pytest.mark.slow
def test_the_custom_mlp_meta_trains_on_sinusoid_and_tests(tmp_path):
    args = SINE + ['--model=examples/mlp_sinusoid.py:mlp', '--logdir=' + str(tmp_path),
                   '--progress=False', '--seed=1']
    trained = run_main(args + ['--metatrain_iterations=1001'])
    assert trained.stdout.splitlines()[0] == 'Done initializing, starting training.'
    pre, post = (float(v) for v in trained.stdout.splitlines()[1][
        len('Iteration 1000: '):].split(', '))
    assert post < pre  # an inner step already helps
    tested = run_main(args + ['--train=False'])
    assert 'Mean validation accuracy/loss, stddev, and confidence intervals' in tested.stdout
    exp = 'cls_5.mbs_4.ubs_5.numstep1.updatelr0.01nonorm.model_mlp_sinusoid.mlp'
    assert os.path.exists(os.path.join(str(tmp_path), exp, 'test_ubs5_stepsize0.01.csv'))


@pytest.mark.slow
def test_the_custom_keras_cnn_meta_trains_on_omniglot_and_tests(tmp_path):
    data = tiny_omniglot(str(tmp_path / 'omniglot'))
    args = ['--datasource=omniglot', '--model=examples/keras_cnn_omniglot.py:cnn',
            '--data_folder=' + data, '--logdir=' + str(tmp_path / 'logs'), '--num_filters=8',
            '--meta_batch_size=2', '--update_batch_size=1', '--update_lr=0.4',
            '--progress=False', '--seed=1']
    trained = run_main(args + ['--metatrain_iterations=3'])
    assert trained.stdout.splitlines() == ['Done initializing, starting training.']
    exp = os.path.join(str(tmp_path / 'logs'),
                       'cls_5.mbs_2.ubs_1.numstep1.updatelr0.4hidden8batchnorm.model_'
                       'keras_cnn_omniglot.cnn')
    assert os.path.exists(os.path.join(exp, 'model2.index'))
    tested = run_main(args + ['--train=False'])
    assert tested.stdout.splitlines()[0] == 'Restoring model weights from ' + os.path.join(
        exp, 'model2')
    assert 'Mean validation accuracy/loss, stddev, and confidence intervals' in tested.stdout
    assert os.path.exists(os.path.join(exp, 'test_ubs1_stepsize0.4.csv'))
