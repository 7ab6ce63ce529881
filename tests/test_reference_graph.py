"""The benchmark's stand-in for the reference computes what the reference computed.

bench/reference_graph.py is the baseline the speed-ups are measured against; a
baseline that did less (or other) work than the original would inflate them.
On the golden files of the networks it covers, its losses and meta-gradients
must match the original program's within the golden README's tolerances.
"""
import os
import subprocess
import sys

import pytest

from bench.reference_graph import check_golden

# Each case builds and runs a TF1 graph: the benchmark's baseline, not a default path.
pytestmark = pytest.mark.slow

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden')


@pytest.mark.parametrize('name, loss_rtol, grad_atol_frac', [
    ('g2_sine_nu3', 1e-5, 1e-3),
    ('g3_sine_nu3_stopgrad', 1e-5, 1e-3),
    ('g4_omni_conv_bn', 1e-5, 1e-3),
    ('g8_mini_maxpool_bn', 1e-4, 1e-2),
])
def test_reference_graph_reproduces_the_golden_losses_and_metagradients(
        name, loss_rtol, grad_atol_frac):
    errors = check_golden(os.path.join(GOLDEN, name + '.npz'))
    assert errors['total_losses2'] <= loss_rtol, errors
    assert errors['metagrads'] <= grad_atol_frac, errors


def test_reference_graph_refuses_networks_it_does_not_build():
    with pytest.raises(ValueError, match='paper'):
        check_golden(os.path.join(GOLDEN, 'g5_omni_conv_ln.npz'))


def test_fused_meta_gradient_tells_the_originals_meta_gradient_from_the_exact_one():
    # A fresh process: the script switches TensorFlow to v1 behaviour, as the original ran.
    script = os.path.join(os.path.dirname(GOLDEN), '..', 'bench', 'fused_meta_gradient.py')
    out = subprocess.run([sys.executable, script, os.path.join(GOLDEN, 'g4_omni_conv_bn.npz')],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {cells[1]: [float(x) for x in cells[3].rstrip(' |').split(',')]
            for cells in (line.split(' | ') for line in out.stdout.splitlines()
                          if line.startswith('| g4'))}
    assert rows['written out, second order'][0] > 0.999
    assert rows['fused, second order (the original)'][0] < 0.9
    assert rows['fused, first order'][0] < 0.9
