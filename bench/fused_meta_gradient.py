"""How far the original program's meta-gradient is from the exact one.

Usage:
  python bench/fused_meta_gradient.py [GOLDEN.npz ...]   (default: tests/golden/g*.npz)

The original program ran batch norm through TensorFlow's fused kernel
(tf_slim's batch_norm picks it) inside its tf.map_fn, a v1 while loop under
tf.compat.v1. The golden files were made with batch norm written out, the
exact second derivative. On each golden file of a conv net with batch norm,
this runs the benchmark's reference graph (bench/reference_graph.py) three
ways, in graph mode with v1 control flow as the original ran: written out
(what the golden files hold), fused in second order (what the original
trains with), fused in first order. For each it prints the meta-gradient's
largest difference from the golden one (relative to the largest golden
entry) and its cosine with the golden one, for the weights that matter (conv
kernels, the head, the norm offsets; not the biases before a norm, whose true
meta-gradient is 0).
"""
import glob
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import tf_env  # noqa: E402,F401 (before TensorFlow loads, as main.py)

WAYS = [('written out, second order', False, None),
        ('fused, second order (the original)', True, None),
        ('fused, first order', True, True)]


def batch_norm_conv_files(paths):
    """(path, names of the conv biases right before a norm) of each conv net with batch norm."""
    for path in paths:
        golden = np.load(path)
        flags = json.loads(str(golden['flags_json']))
        if flags.get('conv') and flags.get('norm') == 'batch_norm' \
                and flags['datasource'] != 'sinusoid' and not flags.get('stop_grad'):
            # model/Variable, model/Variable_1, ...: the golden README's names for b1..b4.
            yield path, {str(n) for n in golden['weights_var_names']
                         if str(n).startswith('model/Variable')}


def main(argv):
    import tensorflow as tf

    from reference_graph import check_golden  # bench/ is on sys.path

    tf.get_logger().setLevel('ERROR')  # the TF1 API's deprecation notices
    tf.compat.v1.disable_v2_behavior()  # v1 control flow, as the original ran
    paths = argv or sorted(glob.glob(os.path.join(REPO, 'tests', 'golden', 'g*.npz')))
    print('| golden file | reference graph | max abs error / max abs meta-gradient '
          '| cosine with the exact meta-gradient: lowest, median (kernels, head, offsets) |')
    print('|---|---|---|---|')
    for path, biases in batch_norm_conv_files(paths):
        for label, fused, stop_grad in WAYS:
            errors = check_golden(path, fused_batch_norm=fused, stop_grad=stop_grad)
            cosines = [c for n, c in errors['cosines'].items() if n not in biases]
            print('| %s | %s | %.2g | %.3f, %.3f |' % (
                os.path.basename(path), label, errors['metagrads'], min(cosines),
                float(np.median(cosines))), flush=True)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
