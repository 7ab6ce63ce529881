"""Speed-up of meta-training with several workers (`bench/benchmark.py --scaling`).

For each configuration (second order), three runs of the same timed steps:
  one worker pinned to one core (one thread), two workers of one
  MultiWorkerMirroredStrategy job on localhost pinned to a core each (one
  thread each), and one process on every core (main.py's thread settings).
It prints iterations/s of each, the speed-up of two workers over one
(efficiency: speed-up / 2) and over one process on both cores.

Every worker builds the model and its compiled steps as main.py does
(distribute.connect, steps.Steps), feeds its share of a fixed random
meta-batch of the configuration's shapes (sinusoid: the real generator),
warms up, then times windows of steps; the chief reports. Each run is a fresh
set of processes.
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def worker(name, windows, min_window_seconds, threads):
    """One worker's timing (run in its own process): the chief prints a JSON line."""
    import numpy as np

    import distribute
    from benchmark import make_config, numpy_batches, time_steps
    from experiment import set_threads, stack_batches
    from maml import MAML
    from schedule import SUMMARY_INTERVAL
    from steps import Steps

    overrides = dict(inter_op_threads=1, intra_op_threads=1) if threads == 'one' else {}
    config = make_config(name, False, **overrides)
    set_threads(config)
    cluster = distribute.Cluster.from_environment(os.environ)
    replicas = distribute.connect(config, cluster)
    with replicas.strategy.scope():
        model = MAML(config, seed=0)
    steps = Steps(model, replicas)
    mine, num_tasks = replicas.worker_tasks(config.meta_batch_size), config.meta_batch_size
    batches = numpy_batches(name, config)
    if config.datasource == 'sinusoid':
        def call(_):
            chunk = [[x[mine.start:mine.stop] for x in next(batches)]
                     for _ in range(SUMMARY_INTERVAL)]
            return steps.metatrain_steps(*stack_batches(chunk, SUMMARY_INTERVAL),
                                         SUMMARY_INTERVAL, num_tasks=num_tasks).numpy()
        per_call = SUMMARY_INTERVAL
    else:
        fixed = [x[mine.start:mine.stop] for x in next(batches)]

        def call(_):
            return float(steps.metatrain_step(*fixed, num_tasks=num_tasks)['objective'])
        per_call = 1
    # Every worker must make the same number of calls: the window size is
    # the chief's, shared before timing.
    _, rates, _ = time_steps(call, iter(lambda: None, 0), windows, min_window_seconds,
                             agree=lambda n: int(replicas.gather([n])[0, 0]))
    if replicas.is_chief:
        print(json.dumps({'it_per_s': float(np.median(rates)) * per_call,
                          'windows': [round(r * per_call, 2) for r in rates]}), flush=True)


def run(name, workers, cores, threads, windows, min_window_seconds, timeout=1800):
    """Start `workers` processes (pinned to `cores`, one set each); the chief's result."""
    from local_cluster import tf_configs
    configs = tf_configs(workers) if workers > 1 else [None]
    procs = []
    for i, tf_config in enumerate(configs):
        env = dict(os.environ)
        env.pop('TF_CONFIG', None)
        if tf_config:
            env['TF_CONFIG'] = tf_config
        command = [sys.executable, os.path.join(HERE, 'benchmark.py'), '--scaling_worker', name,
                   '--windows', str(windows), '--min_window_seconds', str(min_window_seconds),
                   '--scaling_threads', threads]
        if cores:
            command = ['taskset', '-c', cores[i]] + command
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=REPO))
    outputs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError('worker failed: %s' % err.strip().splitlines()[-1])
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def scaling(names, windows, min_window_seconds):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit('error: the scaling mode needs two cores, this process may use %d' % len(cpus))
    c0, c1 = str(cpus[0]), str(cpus[1])
    print('Scaling, second order, %s; windows of at least %.0f s, median of %d'
          % (time.strftime('%Y-%m-%d'), min_window_seconds, windows))
    print()
    print('| configuration | 1 worker, 1 core | 2 workers, 1 core each | speed-up (efficiency) '
          '| 1 process, 2 cores | 2 workers vs 1 process |')
    print('|---|---|---|---|---|---|')
    results = {}
    for name in names:
        one = run(name, 1, [c0], 'one', windows, min_window_seconds)
        two = run(name, 2, [c0, c1], 'one', windows, min_window_seconds)
        both = run(name, 1, None, 'auto', windows, min_window_seconds)
        speedup = two['it_per_s'] / one['it_per_s']
        results[name] = dict(one=one, two=two, both=both)
        print('| %s | %.2f it/s | %.2f it/s | %.2fx (%.0f %%) | %.2f it/s | %.2fx |' % (
            name, one['it_per_s'], two['it_per_s'], speedup, 50 * speedup, both['it_per_s'],
            two['it_per_s'] / both['it_per_s']), flush=True)
    print()
    print('windows (it/s): ' + json.dumps({n: {k: v['windows'] for k, v in r.items()}
                                          for n, r in results.items()}))
    return results
