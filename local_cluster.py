"""Start N workers of one multi-worker job on this host: a convenience around TF_CONFIG.

    python local_cluster.py --workers=2 -- --datasource=omniglot --metatrain_iterations=60000 ...

runs `python main.py FLAGS` N times, each with its own TF_CONFIG (the same
cluster of free ports on 127.0.0.1, task index 0..N-1), with
`--distribute=multi_worker`. Worker 0 (the chief) prints the reference's
lines; every worker's errors go to this terminal's stderr. Ctrl-C or SIGTERM is passed to
every worker (they save once and stop together). The exit status is the
first non-zero status of a worker, else 0.

On several machines, start main.py yourself on each with TF_CONFIG set, as
README "Scaling out" shows; this script is only that, on one host.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_configs(count, ports=None):
    """The TF_CONFIG of each of `count` workers on 127.0.0.1."""
    ports = ports or free_ports(count)
    cluster = {'worker': ['127.0.0.1:%d' % p for p in ports]}
    return [json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': i}})
            for i in range(count)]


def start(count, flags, env=None, cores=None, **popen):
    """Popen of each worker's `python main.py FLAGS` (cores: a list of CPU sets to pin them to)."""
    workers = []
    for i, tf_config in enumerate(tf_configs(count)):
        worker_env = dict(env or os.environ, TF_CONFIG=tf_config)
        command = [sys.executable, os.path.join(HERE, 'main.py'), '--distribute=multi_worker'] + flags
        if cores:
            command = ['taskset', '-c', cores[i % len(cores)]] + command
        workers.append(subprocess.Popen(command, env=worker_env, **popen))
    return workers


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('flags', nargs=argparse.REMAINDER, help='main.py flags, after --')
    args = parser.parse_args()
    flags = args.flags[1:] if args.flags[:1] == ['--'] else args.flags
    if args.workers < 1:
        parser.error('--workers must be at least 1')
    # Each worker in its own session: a Ctrl-C in this terminal reaches them
    # once, forwarded below (twice would stop them at once, without saving).
    workers = start(args.workers, flags, start_new_session=True)

    def forward(signum, frame):
        for w in workers:
            if w.poll() is None:
                w.send_signal(signum)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    statuses = [w.wait() for w in workers]
    return next((s for s in statuses if s != 0), 0)


if __name__ == '__main__':
    sys.exit(main())
