"""Does the same meta-gradient come out twice? Per configuration and thread setting.

Usage:
  python bench/determinism.py                              # every image configuration, both orders
  python bench/determinism.py --configs omniglot20 --orders 2 --repeats 30

Each configuration runs in a fresh process with main.py's thread settings
('auto') or with one op at a time (--inter_op_threads=1, 'serial'). It builds
the model, computes the meta-gradient of one fixed batch (the gradient an
outer Adam step applies; the Adam step itself is elementwise), then computes it
--repeats more times on the same weights and batch, and counts the repeats
whose bits differ from the first. The largest difference is reported relative
to the largest entry of that weight's gradient, once over every weight and once
without the conv biases: batch norm subtracts each channel's mean right after
the bias, so the bias gradients are zero up to rounding, and any rounding
difference is a large fraction of them. Seconds per meta-gradient are the
median over the repeats (a step of training also runs the Adam update).
"""
import argparse
import os
import time

from benchmark import (CONFIGS, child_result, image_batches, make_config,  # noqa: E402
                       print_run_header, report_to_parent)


def measure(name, first_order, threads, repeats):
    import numpy as np
    import tensorflow as tf

    from experiment import set_threads
    from maml import MAML

    config = make_config(name, first_order, **(
        dict(inter_op_threads=1) if threads == 'serial' else {}))
    set_threads(config)  # as main.py does, before any op runs
    model = MAML(config, seed=0)
    batch = [tf.constant(x) for x in next(image_batches(name, config))]
    conv_biases = {model.tf1_names[model.weights[k].ref()] for k in ('b1', 'b2', 'b3', 'b4')}

    @tf.function
    def metagradient(inputa, inputb, labela, labelb):
        # The gradient metatrain_step applies, without applying it.
        return model.metatrain_gradients(inputa, inputb, labela, labelb)[1]

    first = {k: v.numpy() for k, v in metagradient(*batch).items()}
    differing, worst, worst_without_biases, seconds = 0, 0.0, 0.0, []
    for _ in range(repeats):
        start = time.perf_counter()
        again = {k: v.numpy() for k, v in metagradient(*batch).items()}
        seconds.append(time.perf_counter() - start)
        differing += any(np.any(again[k] != first[k]) for k in first)
        for k in first:
            relative = float(np.max(np.abs(again[k] - first[k])) / (np.max(np.abs(first[k])) or 1))
            worst = max(worst, relative)
            if k not in conv_biases:
                worst_without_biases = max(worst_without_biases, relative)
    return {'config': name, 'order': 1 if first_order else 2, 'threads': threads,
            'inter_x_intra': '%d x %d' % config.thread_settings(os.cpu_count() or 1),
            'differing': differing, 'repeats': repeats, 'worst': worst,
            'worst_without_biases': worst_without_biases,
            'seconds': float(np.median(seconds))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    image_configs = [c for c in CONFIGS if c != 'sinusoid']
    parser.add_argument('--configs', nargs='+', default=image_configs,
                        choices=image_configs)
    parser.add_argument('--orders', nargs='+', type=int, default=[2, 1], choices=[1, 2])
    parser.add_argument('--threads', nargs='+', default=['auto', 'serial'],
                        choices=['auto', 'serial'])
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--one', nargs=3, metavar=('CONFIG', 'ORDER', 'THREADS'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:  # child process: one configuration, JSON result
        name, order, threads = args.one
        report_to_parent(measure(name, order == '1', threads, args.repeats))
        return

    print_run_header('Determinism', 'determinism.py')
    print('| config | order | threads (inter x intra; 0: TF default) | repeats differing from '
          'the first | largest difference / largest entry | without conv biases '
          '| s per meta-gradient |')
    print('|---|---|---|---|---|---|---|')
    for name in args.configs:
        for order in args.orders:
            for threads in args.threads:
                r = child_result([__file__, '--one', name, str(order), threads,
                                  '--repeats', str(args.repeats)])
                if 'error' in r:
                    print('| %s | %d | %s | failed: %s |' % (name, order, threads, r['error']))
                    continue
                print('| %s | %d | %s: %s | %d of %d | %.1e | %.1e | %.3f |' % (
                    name, order, threads, r['inter_x_intra'], r['differing'], r['repeats'],
                    r['worst'], r['worst_without_biases'], r['seconds']), flush=True)


if __name__ == '__main__':
    main()
