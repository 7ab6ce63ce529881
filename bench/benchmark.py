"""Speed and memory of meta-training, per configuration of the paper.

Usage:
  python bench/benchmark.py                      # every configuration, markdown table
  python bench/benchmark.py --configs sinusoid omniglot5 --windows 5
  python bench/benchmark.py --omniglot_folder data/omniglot_resized   # adds start-up on real data
  python bench/benchmark.py --reference          # and the reference's graph, side by side
  python bench/benchmark.py --networks builtin keras   # the Keras path beside the built-in one
  python bench/benchmark.py --scaling            # one worker against two (bench/scaling.py)
  python bench/benchmark.py --end_to_end --omniglot_folder F --miniimagenet_folder M
                                                 # main.py itself, from its printed lines

Each configuration runs in a fresh process (so peak memory is its own): it
builds the model, warms up (tracing plus a few steps), then times several
windows of meta-training iterations and reports the median iterations/s.
Sinusoid batches come from the real generator (the data cost is part of an
iteration, as in training), and its steps run 100 to a call, as main.py runs
them; image batches are random tensors of the right shape (the input pipeline
runs ahead in a background thread during real training), one step to a call.
With --omniglot_folder, start-up is the time from launching main.py on the
full Omniglot data until it prints 'Done initializing, starting training.',
and until its first iteration is done. With --reference, each configuration is
also timed, in the same run, with the reference's own graph
(bench/reference_graph.py, with the fused batch norm the original runs;
--reference_unfused_bn: written out, as the golden files were made), and the
table of speed-ups is printed: absolute speeds on a shared machine move
between hosts and days; ratios from one run are what can be compared. With
--end_to_end, main.py itself is timed from its printed lines
(bench/end_to_end.py). With --networks builtin keras, the reference's net
written as a plain Keras model (keras_network.py) runs beside the built-in
net, both in one process per configuration with their windows interleaved,
and the table gives the ratio of their speeds; --networks keras alone times
the Keras path in the usual table.
"""
import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import tf_env  # noqa: E402,F401 (before TensorFlow loads, as main.py)
from flops import conv_rate, count_conv_flops  # noqa: E402 (bench/ is on sys.path)

# name: (reference usage line's flags, queries per class in split b)
CONFIGS = {
    'sinusoid': (dict(datasource='sinusoid', norm='None', update_batch_size=10,
                      meta_batch_size=25, num_updates=1), None),
    'omniglot5': (dict(datasource='omniglot', num_classes=5, meta_batch_size=32,
                       update_batch_size=1, update_lr=0.4, num_updates=1), 1),
    'omniglot5shot': (dict(datasource='omniglot', num_classes=5, meta_batch_size=32,
                           update_batch_size=5, update_lr=0.4, num_updates=1), 5),
    'omniglot20': (dict(datasource='omniglot', num_classes=20, meta_batch_size=16,
                        update_batch_size=1, update_lr=0.1, num_updates=5), 1),
    'miniimagenet': (dict(datasource='miniimagenet', num_classes=5, meta_batch_size=4,
                          update_batch_size=1, update_lr=0.01, num_updates=5, num_filters=32,
                          max_pool=True), 15),
}

# name: (the speed issue's reference it/s, its target it/s), second order
TARGETS = {'sinusoid': (45, 450), 'omniglot5': (2.9, 10), 'omniglot20': (1.1, 2.5),
           'miniimagenet': (0.64, 1.2)}


def make_config(name, first_order, **overrides):
    """A configuration's Config."""
    from config import Config

    return Config(stop_grad=first_order, **dict(CONFIGS[name][0], **overrides))


NETWORKS = ('builtin', 'keras')


def build(name, first_order, threads, network='builtin'):
    """The config, compiled steps and numpy batch iterator of one configuration,
    threads set as main.py does.

    network: 'builtin', the reference's net batched over tasks
    (networks.ReferenceNetwork), or 'keras', the same net written as a plain
    Keras model (keras_network.reference_keras_model) behind KerasNetwork.
    """
    from experiment import set_threads

    config = make_config(name, first_order, **(
        dict(inter_op_threads=0, intra_op_threads=0) if threads == 'default' else {}))
    set_threads(config)  # as main.py does, before any op runs
    return config, build_steps(config, network), numpy_batches(name, config)


def build_steps(config, network):
    """Compiled steps of MAML on one of NETWORKS, for config."""
    from maml import MAML
    from steps import Steps

    if network == 'builtin':
        return Steps(MAML(config, seed=0))
    import keras

    from keras_network import KerasNetwork, reference_keras_model
    keras.utils.set_random_seed(0)
    return Steps(MAML(config, network=KerasNetwork(reference_keras_model(config),
                                                   stop_grad=config.stop_grad)))


def numpy_batches(name, config):
    """Batches as numpy arrays: the real sinusoid generator's, or one random image batch."""
    if config.datasource != 'sinusoid':
        return image_batches(name, config)
    from data_generator import DataGenerator
    generator = DataGenerator(config.num_samples_per_class, config.meta_batch_size, config)
    return generator.meta_batches(train=True)


def image_batches(name, config):
    """One random batch of the configuration's real shapes, repeated."""
    import numpy as np

    queries, dim_input = CONFIGS[name][1], config.dim_input
    n, k, b = config.num_classes, config.update_batch_size, config.meta_batch_size
    rng = np.random.default_rng(0)
    labels = np.eye(n, dtype=np.float32)
    fixed = [rng.uniform(size=(b, n * k, dim_input)).astype(np.float32),
             rng.uniform(size=(b, n * queries, dim_input)).astype(np.float32),
             np.broadcast_to(np.tile(labels, (k, 1)), (b, n * k, n)).copy(),
             np.broadcast_to(np.tile(labels, (queries, 1)), (b, n * queries, n)).copy()]
    return iter(lambda: fixed, None)


def time_steps(step, batches, windows, min_window_seconds, agree=lambda n: n):
    """Seconds of the first call (tracing included), and calls/s of each timed window.

    agree(n): the chief's value of n, for workers of one job, which must make
    the same number of calls.
    """
    trace_seconds, per_window = warm_up(step, batches, min_window_seconds, agree)
    rates = [time_window(step, batches, per_window) for _ in range(windows)]
    return trace_seconds, rates, per_window


def warm_up(step, batches, min_window_seconds, agree=lambda n: n):
    """Seconds of the first call (tracing included), and the calls a window of
    at least min_window_seconds takes."""
    start = time.perf_counter()
    step(next(batches))
    trace_seconds = time.perf_counter() - start
    for _ in range(2):
        step(next(batches))
    start, count = time.perf_counter(), 0
    while agree(int(time.perf_counter() - start < min_window_seconds / 2)):
        step(next(batches))
        count += 1
    per_window = agree(max(1, int(count * min_window_seconds / (time.perf_counter() - start))))
    return trace_seconds, per_window


def time_window(step, batches, calls):
    """Calls/s of `calls` calls in a row."""
    start = time.perf_counter()
    for _ in range(calls):
        step(next(batches))
    return calls / (time.perf_counter() - start)


def step_call(name, config, steps):
    """One call of meta-training as training runs it, the batches to feed it, and
    the steps one call makes."""
    from experiment import stack_batches
    from schedule import SUMMARY_INTERVAL

    if config.datasource == 'sinusoid':
        # As experiment.train runs it: a summary interval of steps per call, their
        # batches drawn and stacked for each call.
        arrays = numpy_batches(name, config)

        def call(_):
            chunk = [next(arrays) for _ in range(SUMMARY_INTERVAL)]
            return steps.metatrain_steps(*stack_batches(chunk, SUMMARY_INTERVAL),
                                         SUMMARY_INTERVAL).numpy()
        return call, itertools.repeat(None), SUMMARY_INTERVAL

    def call(batch):
        return float(steps.metatrain_step(*batch)['objective'])
    return call, numpy_batches(name, config), 1


def measure(name, first_order, windows, min_window_seconds, threads, network='builtin'):
    import numpy as np

    config, steps, batches = build(name, first_order, threads, network)
    first_batch = next(batches)
    call, feed, steps_per_call = step_call(name, config, steps)
    trace_seconds, rates, per_window = time_steps(call, feed, windows, min_window_seconds)
    rates = [r * steps_per_call for r in rates]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    flops = count_conv_flops(steps.concrete_metatrain_step(*first_batch))
    return {'config': name, 'order': 1 if first_order else 2, 'it_per_s': float(np.median(rates)),
            'threads': '%d x %d' % config.thread_settings(os.cpu_count() or 1),
            'windows': [round(r, 2) for r in rates],
            'iterations_per_window': per_window * steps_per_call,
            'first_step_s': trace_seconds, 'peak_rss_mb': peak_mb,
            'gflop_per_it': flops['total'] / 1e9,
            'conv_gflop': [[list(k), v / 1e9] for k, v in flops['by_conv'].items()]}


def measure_networks(name, first_order, windows, min_window_seconds, threads):
    """Every network of NETWORKS on one configuration, in one process, their
    windows interleaved (the order alternating: ABBA...), so that each ratio
    compares two neighbouring windows of a noisy machine."""
    import numpy as np

    from experiment import set_threads

    config = make_config(name, first_order, **(
        dict(inter_op_threads=0, intra_op_threads=0) if threads == 'default' else {}))
    set_threads(config)
    runs = {}
    for network in NETWORKS:
        call, feed, steps_per_call = step_call(name, config, build_steps(config, network))
        trace_seconds, per_window = warm_up(call, feed, min_window_seconds)
        runs[network] = dict(call=call, feed=feed, steps_per_call=steps_per_call,
                             per_window=per_window, first_step_s=trace_seconds, windows=[],
                             cpu_s=[])
    for window in range(windows):
        for network in NETWORKS if window % 2 == 0 else NETWORKS[::-1]:
            run = runs[network]
            cpu_start = time.process_time()  # every thread of this process
            rate = time_window(run['call'], run['feed'], run['per_window'])
            run['cpu_s'].append((time.process_time() - cpu_start) / run['per_window'])
            run['windows'].append(rate * run['steps_per_call'])
    ratios = [k / b for k, b in zip(runs['keras']['windows'], runs['builtin']['windows'])]
    # CPU seconds per iteration: less moved by other programs than the wall clock
    # (they take cores away, not work), though not by cache and memory contention.
    cpu_ratios = [b / k for k, b in zip(runs['keras']['cpu_s'], runs['builtin']['cpu_s'])]
    return {'config': name, 'order': 1 if first_order else 2,
            'threads': '%d x %d' % config.thread_settings(os.cpu_count() or 1),
            'networks': {n: {'it_per_s': float(np.median(r['windows'])),
                             'windows': [round(w, 2) for w in r['windows']],
                             'iterations_per_window': r['per_window'] * r['steps_per_call'],
                             'cpu_s_per_call': float(np.median(r['cpu_s'])),
                             'first_step_s': r['first_step_s']} for n, r in runs.items()},
            'ratios': [round(x, 3) for x in ratios], 'ratio': float(np.median(ratios)),
            'cpu_ratio': float(np.median(cpu_ratios))}


def measure_reference(name, first_order, windows, min_window_seconds, fused_batch_norm=True):
    """The same measurement of the reference's own graph (bench/reference_graph.py)."""
    import numpy as np
    import tensorflow as tf

    from reference_graph import build_reference_step

    tf.compat.v1.disable_v2_behavior()  # as the reference ran under tf.compat.v1
    config = make_config(name, first_order)
    session, placeholders, train_op, _ = build_reference_step(
        config, fused_batch_norm=fused_batch_norm)
    trace_seconds, rates, per_window = time_steps(
        lambda batch: session.run(train_op, dict(zip(placeholders, batch))),
        numpy_batches(name, config), windows, min_window_seconds)
    return {'config': name, 'order': 1 if first_order else 2, 'it_per_s': float(np.median(rates)),
            'windows': [round(r, 2) for r in rates], 'iterations_per_window': per_window,
            'first_step_s': trace_seconds,
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def startup(omniglot_folder, logdir):
    """Seconds from launch to 'Done initializing' and to the first iteration, on full Omniglot."""
    args = [sys.executable, '-u', os.path.join(REPO, 'main.py'), '--datasource=omniglot',
            '--metatrain_iterations=2', '--meta_batch_size=32', '--update_batch_size=1',
            '--update_lr=0.4', '--num_updates=1', '--log=False', '--resume=False',
            '--data_folder=' + omniglot_folder, '--logdir=' + logdir]
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    initialised = None
    for line in proc.stdout:
        if line.startswith('Done initializing') and initialised is None:
            initialised = time.perf_counter() - start
    error = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    proc.returncode = os.waitstatus_to_exitcode(status)
    total = time.perf_counter() - start
    if proc.returncode != 0 or initialised is None:
        raise RuntimeError(error.strip().splitlines()[-1] if error.strip() else 'no output')
    return initialised, total, usage.ru_maxrss / 1024.0


def print_flop_bound(results):
    """Achieved GFLOP/s, and the it/s if every convolution ran at its large-batch speed."""
    conv_results = [r for r in results if r['conv_gflop']]
    if not conv_results:
        return
    signatures = sorted({tuple(s) for r in conv_results for s, _ in r['conv_gflop']})
    rates = conv_rates(signatures, 'float32')
    if rates is None:
        return
    bf16_rates = conv_rates(signatures, 'bfloat16')
    print()
    print('FLOP bound: convolution FLOPs of one traced step (ops the step depends on), and the '
          'best it/s if each of its convolutions ran at the speed measured for that shape on one '
          'large batch using every core, and nothing else took time; the same in bfloat16: the '
          'ceiling of a reduced-precision path.')
    print()
    print('| config | order | GFLOP/it | achieved GFLOP/s | conv-bound it/s | measured / bound '
          '| bf16 conv-bound it/s |')
    print('|---|---|---|---|---|---|---|')

    def bound_seconds(r, by_signature):
        return sum(gflop / by_signature[tuple(s)] for s, gflop in r['conv_gflop'])

    for r in conv_results:
        seconds = bound_seconds(r, rates)
        bf16 = '%.2f' % (1 / bound_seconds(r, bf16_rates)) if bf16_rates else 'failed'
        print('| %s | %d | %.1f | %.0f | %.2f | %.0f%% | %s |' % (
            r['config'], r['order'], r['gflop_per_it'], r['gflop_per_it'] * r['it_per_s'],
            1 / seconds, 100 * r['it_per_s'] * seconds, bf16))
    print()
    print('Large-batch GFLOP/s per convolution, float32 (bfloat16) (type, input size, in, out '
          'channels, stride): ' + '; '.join(
              '%s %d %d->%d /%d: %.0f (%s)' % (s + (rates[s], '%.0f' % bf16_rates[s]
                                                   if bf16_rates else '-'))
              for s in signatures))


def conv_rates(signatures, dtype):
    """{signature: large-batch GFLOP/s} in a fresh process (all cores), or None if it failed."""
    r = child_result([__file__, '--rates', json.dumps(signatures), '--rates_dtype', dtype])
    if 'error' in r:
        print('\nconvolution ceiling (%s): failed: %s' % (dtype, r['error']))
        return None
    return {tuple(s): rate for s, rate in r['rates']}


RESULT_MARKER = 'RESULT '  # the line a child process prints its JSON result on


def report_to_parent(result):
    """A child's side of the protocol: print the JSON that child_result reads."""
    print(RESULT_MARKER + json.dumps(result))


def child_result(argv, env=None):
    """Run a script's child mode in a fresh process; the JSON it printed with
    report_to_parent, or {'error': the end of its stderr}."""
    out = subprocess.run([sys.executable] + argv, capture_output=True, text=True, env=env)
    lines = [l for l in out.stdout.splitlines() if l.startswith(RESULT_MARKER)]
    if not lines:
        return {'error': out.stderr.strip()[-300:]}
    return json.loads(lines[0][len(RESULT_MARKER):])


def run_child(args, name, order, program, network='builtin'):
    """Measure one configuration of one program (or, program 'networks', of every
    network side by side) in a fresh process; its JSON result."""
    env = dict(os.environ)
    if program == 'reference':
        env['TF_ENABLE_ONEDNN_OPTS'] = args.reference_onednn
    return child_result([__file__, '--one', name, str(order),
                         '--program', program, '--network', network,
                         '--windows', str(args.windows),
                         '--threads', args.threads,
                         '--min_window_seconds', str(args.min_window_seconds)]
                        + (['--reference_unfused_bn'] if args.reference_unfused_bn else []), env)


def print_speedups(results, reference, onednn, fused_batch_norm):
    """This port against the reference's graph, timed in the same run."""
    print()
    print('Side by side with the reference\'s graph (bench/reference_graph.py: tf.compat.v1, '
          'map_fn over tasks, max(num_updates, test_num_updates) inner steps, feed_dict, '
          '%s batch norm; TF_ENABLE_ONEDNN_OPTS=%s, default threads), timed in this run. '
          'Target speed-up: the speed issue\'s target over its reference it/s (second order).'
          % ('fused' if fused_batch_norm else 'unfused', onednn))
    print()
    print('| config | order | port it/s | reference it/s | reference windows | speed-up '
          '| target speed-up |')
    print('|---|---|---|---|---|---|---|')
    for r in results:
        ref = reference.get((r['config'], r['order']), {'error': 'not run'})
        target = TARGETS.get(r['config']) if r['order'] == 2 else None
        target_text = '%.2fx (%g / %g)' % (target[1] / target[0], target[1], target[0]) \
            if target else '-'
        if 'error' in ref:
            print('| %s | %d | %.2f | failed: %s | | | %s |' % (
                r['config'], r['order'], r['it_per_s'], ref['error'], target_text))
            continue
        print('| %s | %d | %.2f | %.2f | %s | %.2fx | %s |' % (
            r['config'], r['order'], r['it_per_s'], ref['it_per_s'],
            ', '.join('%.2f' % w for w in ref['windows']), r['it_per_s'] / ref['it_per_s'],
            target_text), flush=True)


def print_networks_header():
    print('| config | order | threads | built-in it/s | Keras it/s | Keras / built-in (median) '
          '| ratio per window pair (min - max) | CPU-time ratio (median) '
          '| first call incl. tracing, built-in / Keras (s) |')
    print('|---|---|---|---|---|---|---|---|---|', flush=True)


def print_networks_row(r):
    """One configuration's row: the Keras path against the built-in one (measure_networks)."""
    if 'error' in r:
        print('| %s | %d | failed: %s |' % (r['config'], r['order'], r['error']), flush=True)
        return
    builtin, keras = r['networks']['builtin'], r['networks']['keras']
    print('| %s | %d | %s | %.2f | %.2f | %.2fx | %.2f - %.2f | %.2fx | %.0f / %.0f |' % (
        r['config'], r['order'], r['threads'], builtin['it_per_s'], keras['it_per_s'],
        r['ratio'], min(r['ratios']), max(r['ratios']), r['cpu_ratio'], builtin['first_step_s'],
        keras['first_step_s']), flush=True)


def cpu_model():
    """The CPU's model name (Linux), so a recorded table says which host it ran on."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def print_run_header(title, script):
    """The first lines of a recorded run: what, when, on which machine, the command."""
    print('# %s, %s, %s (%s), %d CPUs' % (title, time.strftime('%Y-%m-%d'), platform.machine(),
                                        cpu_model(), os.cpu_count()))
    print('command: python bench/%s %s' % (script, ' '.join(sys.argv[1:])))
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--configs', nargs='*', default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument('--orders', nargs='+', type=int, default=[2, 1], choices=[1, 2])
    parser.add_argument('--windows', type=int, default=5)
    parser.add_argument('--min_window_seconds', type=float, default=4.0)
    parser.add_argument('--omniglot_folder', default=None)
    parser.add_argument('--threads', default='auto', choices=['auto', 'default'],
                        help="auto: main.py's per-configuration thread settings; default: "
                             "TensorFlow's own")
    parser.add_argument('--reference', action='store_true',
                        help='also time the reference\'s own graph (bench/reference_graph.py) '
                             'in the same run, and print the speed-up over it')
    parser.add_argument('--reference_onednn', default='1', choices=['0', '1'],
                        help='TF_ENABLE_ONEDNN_OPTS for the reference (1: as this TensorFlow '
                             'build runs with the variable unset, and as the original program '
                             'ran here; 0 turns oneDNN off)')
    parser.add_argument('--reference_unfused_bn', action='store_true',
                        help='the reference with batch norm written out, as the golden files '
                             'were made, instead of TensorFlow\'s fused kernel, which the '
                             'original program runs (tf_slim\'s batch_norm picks it)')
    parser.add_argument('--networks', nargs='+', default=['builtin'], choices=NETWORKS,
                        help="builtin: the reference's net batched over tasks "
                             "(networks.ReferenceNetwork); keras: the same net as a plain "
                             "Keras model behind keras_network.KerasNetwork. Both: each "
                             "configuration times the two in one process, windows "
                             "interleaved, and the table gives the Keras / built-in ratio")
    parser.add_argument('--scaling', action='store_true',
                        help='time one worker on one core, two workers on a core each and one '
                             'process on both cores (bench/scaling.py; second order)')
    parser.add_argument('--end_to_end', action='store_true',
                        help='time main.py itself from its printed Iteration lines, beside '
                             'the step rate (bench/end_to_end.py; needs the data folders for '
                             'the image configurations)')
    parser.add_argument('--miniimagenet_folder', default=None,
                        help='prepared MiniImagenet (train/ val/ test/), for --end_to_end')
    parser.add_argument('--against_main', default=None, metavar='PATH',
                        help='with --end_to_end: also time this main.py (another program, '
                             'for example the original), started in its own folder')
    parser.add_argument('--scaling_worker', help=argparse.SUPPRESS)
    parser.add_argument('--scaling_threads', default='one', help=argparse.SUPPRESS)
    parser.add_argument('--one', nargs=2, metavar=('CONFIG', 'ORDER'), help=argparse.SUPPRESS)
    parser.add_argument('--program', default='port', choices=['port', 'reference', 'networks'],
                        help=argparse.SUPPRESS)
    parser.add_argument('--network', default='builtin', choices=NETWORKS, help=argparse.SUPPRESS)
    parser.add_argument('--rates', help=argparse.SUPPRESS)
    parser.add_argument('--rates_dtype', default='float32', help=argparse.SUPPRESS)
    args = parser.parse_args()
    networks = sorted(set(args.networks), key=NETWORKS.index)
    if networks != ['builtin'] and (args.reference or args.scaling or args.end_to_end):
        parser.error('--reference, --scaling and --end_to_end time the built-in network only: '
                     'run them without --networks')

    if args.rates:  # child process: large-batch GFLOP/s of these conv signatures, all cores
        signatures = [tuple(s) for s in json.loads(args.rates)]
        report_to_parent({'rates': [[list(s), conv_rate(s, dtype=args.rates_dtype)]
                                    for s in signatures]})
        return

    if args.scaling_worker:  # child process: one worker of a scaling run
        from scaling import worker
        worker(args.scaling_worker, args.windows, args.min_window_seconds, args.scaling_threads)
        return
    if args.scaling:
        from scaling import scaling
        names = [n for n in args.configs if n != 'omniglot5shot'] \
            if args.configs == list(CONFIGS) else args.configs
        scaling(names, args.windows, args.min_window_seconds)
        return

    if args.end_to_end:
        from end_to_end import end_to_end
        print_run_header('End to end', 'benchmark.py')

        def step_rate(name, order):
            return run_child(args, name, order, 'port').get('it_per_s')
        end_to_end(args.configs, args.orders, {'omniglot': args.omniglot_folder,
                                               'miniimagenet': args.miniimagenet_folder},
                   step_rate, args.against_main)
        return

    if args.one:  # child process: measure one configuration, print JSON
        if args.program == 'reference':
            result = measure_reference(args.one[0], args.one[1] == '1', args.windows,
                                       args.min_window_seconds, not args.reference_unfused_bn)
        elif args.program == 'networks':
            result = measure_networks(args.one[0], args.one[1] == '1', args.windows,
                                      args.min_window_seconds, args.threads)
        else:
            result = measure(args.one[0], args.one[1] == '1', args.windows,
                             args.min_window_seconds, args.threads, args.network)
        report_to_parent(result)
        return

    if networks == list(NETWORKS):
        print_run_header('The Keras path beside the built-in one', 'benchmark.py')
        print_networks_header()
        for name in args.configs:
            for order in args.orders:
                print_networks_row(dict(run_child(args, name, order, 'networks'),
                                        config=name, order=order))
        print()
        print('Both networks in one process per configuration, warmed up, then %d windows '
              'each, interleaved (built-in, Keras, Keras, built-in, ...); a ratio divides a '
              'Keras window\'s it/s by its neighbouring built-in one\'s. CPU-time ratio: '
              'built-in over Keras CPU seconds (all threads of the process) per iteration, '
              'which other programs on the machine move less than the wall clock.'
              % args.windows)
        return

    print_run_header('Benchmark' + (' (Keras path)' if networks == ['keras'] else ''),
                     'benchmark.py')
    print('| config | order | threads (inter x intra; 0: TF default) | it/s (median) | windows it/s '
          '| first call incl. tracing (s) | peak RSS (MB) |')
    print('|---|---|---|---|---|---|---|')
    results, reference = [], {}
    for name in args.configs:
        for order in args.orders:
            r = run_child(args, name, order, 'port', networks[0])
            if 'error' in r:
                print('| %s | %d | failed: %s |' % (name, order, r['error']))
                continue
            results.append(r)
            print('| %s | %d | %s | %.2f | %s | %.1f | %.0f |' % (
                name, order, r['threads'], r['it_per_s'], ', '.join('%.2f' % w for w in r['windows']),
                r['first_step_s'], r['peak_rss_mb']), flush=True)
            if args.reference:
                reference[name, order] = run_child(args, name, order, 'reference')
    if args.reference:
        print_speedups(results, reference, args.reference_onednn, not args.reference_unfused_bn)
    print_flop_bound(results)
    if args.omniglot_folder:
        import tempfile
        print()
        with tempfile.TemporaryDirectory() as logdir:
            try:
                initialised, total, peak_mb = startup(args.omniglot_folder, logdir)
            except RuntimeError as e:
                print('Start-up on full Omniglot: main.py failed: %s' % e)
                return
        print('Start-up on full Omniglot: %.1f s to "Done initializing", %.1f s for the '
              'whole 2-iteration run (tracing included), peak RSS %.0f MB.'
              % (initialised, total, peak_mb))


if __name__ == '__main__':
    main()
