"""Where the time of one meta-training step goes, by TensorFlow op type.

Usage:
  python bench/profile_ops.py omniglot5 --order 2 --steps 10
  python bench/profile_ops.py omniglot5 --network keras   # the net as a Keras model

Builds a configuration of bench/benchmark.py (same model, random batches,
main.py's thread settings), warms up, records `--steps` steps with
TensorFlow's profiler and prints, per op type, the time its kernels ran (ms
per step), its share and how many such ops run per step. Op times are summed
over the threads that ran them, so with two cores they may add up to more than
the wall time of a step; the profiler itself slows the step a little.
"""
import argparse
import collections
import glob
import os
import sys
import tempfile
import time

from benchmark import CONFIGS, NETWORKS, build  # noqa: E402 (bench/ is on sys.path)


def op_times(trace_dir):
    """{op type: (seconds, count)} from the host-CPU plane of a profiler trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    path = sorted(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, 'rb') as f:
        space.ParseFromString(f.read())
    totals = collections.defaultdict(lambda: [0.0, 0])
    for plane in space.planes:
        if plane.name != '/host:CPU':
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name.split('#')[0]
                # Op kernels are named 'op_name:OpType'; runtime events
                # ('ExecutorState::Process', 'EagerLocalExecute: ...') are not ops.
                if ':' not in name or '::' in name or ': ' in name:
                    continue
                total = totals[name.rsplit(':', 1)[1]]
                total[0] += event.duration_ps * 1e-12
                total[1] += 1
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', choices=list(CONFIGS))
    parser.add_argument('--order', type=int, default=2, choices=[1, 2])
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--top', type=int, default=20)
    parser.add_argument('--network', default='builtin', choices=NETWORKS,
                        help="builtin: the reference's net batched over tasks; keras: the same "
                             "net as a plain Keras model behind KerasNetwork")
    args = parser.parse_args()

    import tensorflow as tf
    _, steps, batches = build(args.config, args.order == 1, 'auto', args.network)
    for _ in range(3):  # tracing and warm-up
        float(steps.metatrain_step(*next(batches))['objective'])
    with tempfile.TemporaryDirectory() as trace_dir:
        tf.profiler.experimental.start(trace_dir)
        start = time.perf_counter()
        for _ in range(args.steps):
            float(steps.metatrain_step(*next(batches))['objective'])
        wall = (time.perf_counter() - start) / args.steps
        tf.profiler.experimental.stop()
        totals = op_times(trace_dir)
    op_seconds = sum(seconds for seconds, _ in totals.values()) / args.steps
    print('%s, order %d, %s network: %.1f ms per step (profiled), op kernels %.1f ms per step '
          'summed over threads' % (args.config, args.order, args.network, 1e3 * wall,
                                   1e3 * op_seconds))
    print('\n| op type | ms/step | share | ops/step |\n|---|---|---|---|')
    ranked = sorted(totals.items(), key=lambda item: -item[1][0])
    for op_type, (seconds, count) in ranked[:args.top]:
        seconds /= args.steps
        print('| %s | %.1f | %.1f%% | %d |' % (op_type, 1e3 * seconds,
                                              100 * seconds / op_seconds, count // args.steps))


if __name__ == '__main__':
    sys.exit(main())
