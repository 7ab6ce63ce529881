"""Where the steps run: one device, the devices of one host, or the workers of a cluster.

This module is the one place that knows about tf.distribute. `Cluster` reads
TensorFlow's `TF_CONFIG` (the cluster's worker addresses and this worker's
index); `connect(config, cluster)` picks the strategy (one device by default;
`MultiWorkerMirroredStrategy` with TF_CONFIG; `MirroredStrategy` on a host with
several GPUs; `--distribute` forces a choice) and returns `Replicas`, which
splits a meta-batch into contiguous shares, one per replica, and hands each
replica its share. steps.py runs the model on them and sums across replicas.
With a cluster, `connect` first waits for the other workers' addresses to
answer (`wait_for_workers`: at most --worker_timeout, Ctrl-C and SIGTERM end
it), then for TensorFlow's join (bounded the same way).
"""
import contextlib
import dataclasses
import errno
import json
import re
import signal
import socket
import time
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

# Flags that may differ between the workers of one job (paths on each host,
# its threads, its patience); every other flag must be the same on all.
PER_WORKER_FLAGS = ('data_folder', 'logdir', 'inter_op_threads', 'intra_op_threads',
                    'distribute', 'worker_timeout', 'progress')
TF_CONFIG_FORM = ('{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                  '"index": I}}')


class ClusterError(ValueError):
    """The cluster cannot form (bad TF_CONFIG, a worker that never answers); the message says the fix."""


# What a collective raises when a peer of the job died or stopped answering.
PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                 tf.errors.CancelledError, tf.errors.AbortedError)


class WorkerLost(RuntimeError):
    """A worker of a running job stopped answering; the message says how to resume."""


class JoinInterrupted(BaseException):
    """SIGINT or SIGTERM while this worker waited for the others to join; nothing ran yet.
    A BaseException, as KeyboardInterrupt, so that no `except Exception` on the way stops it."""

    def __init__(self, signum):
        super().__init__('Interrupted while waiting for the other workers to join: stopped '
                         'before training or testing began. Run the same command to start again.')
        self.status = 128 + signum  # 130 for Ctrl-C, 143 for SIGTERM, as a shell reports them


# ----------------------------------------------------------------- cluster
@dataclasses.dataclass(frozen=True)
class Cluster:
    """The workers of a multi-worker job as TF_CONFIG lists them, the chief first.

    TF_CONFIG may name a separate `chief` job (TensorFlow's convention); its
    one task is then worker 0 here and the `worker` tasks follow.
    """
    jobs: Tuple[Tuple[str, Tuple[str, ...]], ...]  # (job name, addresses), chief first
    task_type: str
    task_index: int

    @property
    def workers(self):
        return [address for _, addresses in self.jobs for address in addresses]

    @property
    def tasks(self):
        return [(job, i) for job, addresses in self.jobs for i in range(len(addresses))]

    @property
    def index(self):
        """This worker's position among all workers (0: the chief)."""
        return self.tasks.index((self.task_type, self.task_index))

    @property
    def is_chief(self):
        return self.index == 0

    @property
    def leader(self):
        job = self.jobs[0][0]
        return '/job:%s/replica:0/task:0' % job

    def describe(self, index):
        return 'worker %d (%s)' % (index, self.workers[index])

    def signature(self):
        """Identifies the job: every worker of one job computes the same string."""
        return json.dumps(self.jobs)

    @classmethod
    def from_environment(cls, environ):
        """The Cluster TF_CONFIG describes, or None where TF_CONFIG is unset or empty."""
        text = environ.get('TF_CONFIG', '').strip()
        if not text:
            return None
        try:
            spec = json.loads(text)
        except ValueError as e:
            raise ClusterError('TF_CONFIG is not JSON (%s): set it to %s' % (e, TF_CONFIG_FORM))
        if not isinstance(spec, dict) or not isinstance(spec.get('cluster'), dict) \
                or not isinstance(spec.get('task'), dict):
            raise ClusterError('TF_CONFIG needs "cluster" and "task": set it to %s' % TF_CONFIG_FORM)
        cluster, task = spec['cluster'], spec['task']
        unknown = sorted(set(cluster) - {'chief', 'worker'})
        if unknown:
            raise ClusterError('TF_CONFIG names job %s: this program runs "worker" tasks (and '
                               'optionally one "chief"), as in %s' % (unknown[0], TF_CONFIG_FORM))
        jobs = []
        for job in ('chief', 'worker'):
            addresses = cluster.get(job, [])
            if not isinstance(addresses, list) or not all(
                    isinstance(a, str) and re.match(r'^[^:\s]+:\d+$', a) for a in addresses):
                raise ClusterError('TF_CONFIG cluster.%s must be a list of "host:port" strings, '
                                   'got %r' % (job, addresses))
            for address in addresses:
                if not 0 < int(address.rsplit(':', 1)[1]) < 65536:
                    raise ClusterError('TF_CONFIG cluster.%s names %s: a port is 1 to 65535'
                                       % (job, address))
            if addresses:
                jobs.append((job, tuple(addresses)))
        if len(dict(jobs).get('chief', ())) > 1:
            raise ClusterError('TF_CONFIG lists %d chiefs: a cluster has at most one'
                               % len(dict(jobs)['chief']))
        if not jobs:
            raise ClusterError('TF_CONFIG lists no workers: set it to %s' % TF_CONFIG_FORM)
        task_type, task_index = task.get('type'), task.get('index')
        if task_type not in dict(jobs):
            raise ClusterError('TF_CONFIG task.type is %r, not a job of the cluster (%s)'
                               % (task_type, ', '.join(dict(jobs))))
        count = len(dict(jobs)[task_type])
        if not isinstance(task_index, int) or isinstance(task_index, bool) \
                or not 0 <= task_index < count:
            raise ClusterError('TF_CONFIG task.index is %r, outside the cluster\'s %d %s task(s): '
                               'use 0 to %d' % (task_index, count, task_type, count - 1))
        return cls(tuple(jobs), task_type, task_index)


def contiguous_shares(num_tasks, num_replicas):
    """The tasks of a meta-batch, split in order into one range per replica: the
    first num_tasks % num_replicas replicas take one task more; replicas past
    the tasks get an empty range."""
    base, extra = divmod(num_tasks, num_replicas)
    shares, start = [], 0
    for r in range(num_replicas):
        size = base + (1 if r < extra else 0)
        shares.append(range(start, start + size))
        start += size
    return shares


# ---------------------------------------------------------------- replicas
class Replicas:
    """The replicas a strategy runs on, and this worker's place among them."""

    def __init__(self, strategy=None, cluster: Optional[Cluster] = None):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.cluster = cluster
        self.num_replicas = self.strategy.num_replicas_in_sync
        ids = self.strategy.experimental_local_results(
            self.strategy.experimental_distribute_values_from_function(
                lambda ctx: ctx.replica_id_in_sync_group))
        self.local_replica_ids = [int(i) for i in ids]
        self._gather = None

    @property
    def num_workers(self):
        return len(self.cluster.workers) if self.cluster else 1

    @property
    def worker_index(self):
        return self.cluster.index if self.cluster else 0

    @property
    def is_chief(self):
        """Worker 0 writes the files and prints the lines; the others only compute."""
        return self.worker_index == 0

    def shares(self, num_tasks):
        return contiguous_shares(num_tasks, self.num_replicas)

    def worker_tasks(self, num_tasks):
        """The tasks of a meta-batch of num_tasks that this worker's replicas take (a range)."""
        shares = self.shares(num_tasks)
        mine = [shares[r] for r in self.local_replica_ids]
        return range(mine[0].start, mine[-1].stop)

    def distribute(self, arrays, num_tasks, axis=0):
        """This worker's tasks (numpy arrays, tasks on `axis`) as each local replica's share."""
        shares, worker = self.shares(num_tasks), self.worker_tasks(num_tasks)

        def share(ctx):
            r = shares[ctx.replica_id_in_sync_group]
            cut = [slice(None)] * axis + [slice(r.start - worker.start, r.stop - worker.start)]
            return tuple(tf.constant(x[tuple(cut)]) for x in arrays)
        return self.strategy.experimental_distribute_values_from_function(share)

    def gather(self, values):
        """Every worker's int64 vector `values` (the same length on all): [workers, length]."""
        values = np.asarray(values, np.int64)
        if self.num_workers == 1:
            return values[None]
        if self._gather is None:
            def replica(x):
                # Computed in the replica, so that the all-reduce knows its device.
                return tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, tf.identity(x))
            self._gather = tf.function(lambda x: self.strategy.run(replica, args=(x,)))
        first_local = self.local_replica_ids[0]

        def rows(ctx):
            out = np.zeros((self.num_workers, len(values)), np.int64)
            if ctx.replica_id_in_sync_group == first_local:
                out[self.worker_index] = values
            return tf.constant(out)
        result = self._gather(self.strategy.experimental_distribute_values_from_function(rows))
        return self.strategy.experimental_local_results(result)[0].numpy()

    def any_worker(self, flag):
        """Whether `flag` is true on any worker (the same answer on all)."""
        return bool(self.gather([int(bool(flag))]).any())


# ----------------------------------------------------------------- connect
def reads_tf_config(config):
    return config.distribute in ('auto', 'multi_worker')


def choose(config, cluster):
    """one_device, mirrored or multi_worker, as --distribute and the environment say."""
    choice = config.distribute
    if choice == 'auto':
        if cluster is not None:
            return 'multi_worker'
        return 'mirrored' if len(tf.config.list_physical_devices('GPU')) > 1 else 'one_device'
    if choice == 'multi_worker' and cluster is None:
        raise ClusterError('--distribute=multi_worker needs TF_CONFIG (%s) on every worker'
                           % TF_CONFIG_FORM)
    return choice


def connect(config, cluster):
    """The Replicas this run trains on; with a cluster, waits for every worker."""
    choice = choose(config, cluster)
    # tf.distribute logs each all-reduce it builds at INFO: keep the reference's output.
    tf.get_logger().setLevel('WARNING')
    if choice == 'one_device':
        return Replicas()
    if choice == 'mirrored':
        return Replicas(tf.distribute.MirroredStrategy())
    # gRPC and the collectives log every lost connection from C++ (a worker
    # that dies is half a dozen lines): this program's one line says it.
    import tf_env
    tf_env.silence_native_stderr()
    with _SignalsEndTheWait() as signals:
        wait_for_workers(cluster, config.worker_timeout)
        with signals.deferred():
            strategy = _multi_worker_strategy(cluster, config.worker_timeout)
    return Replicas(strategy, cluster)


class _SignalsEndTheWait:
    """SIGINT and SIGTERM raise JoinInterrupted while the workers gather.

    Inside `deferred()` (TensorFlow's own wait, in C++) a signal is only noted
    and raised once TensorFlow returns: raised inside its Python wrapper, it
    would become a RuntimeError. TensorFlow's coordination service installs
    its own SIGTERM handler there (for preemption notices, unused here), which
    takes a SIGTERM sent during that short wait and would take every later
    one: leaving, the previous handlers are put back over it.
    """

    def __enter__(self):
        self._noted, self._deferring = None, False
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if not self._deferring:
            raise JoinInterrupted(signum)
        self._noted = self._noted or signum

    @contextlib.contextmanager
    def deferred(self):
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
            if self._noted:
                raise JoinInterrupted(self._noted)

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def wait_for_workers(cluster, timeout_seconds, poll_seconds=0.25):
    """Return once every other worker's address accepts connections; ClusterError
    if this worker's own port is taken or one stays silent for timeout_seconds.

    TensorFlow's own wait for the cluster blocks in C++ and holds Python's
    lock, so no signal handler or timer can run during it: this wait, in
    Python, comes first, and TensorFlow's is then short. This worker listens
    on its port meanwhile, so that the others see it waiting too; the port is
    freed right before TensorFlow's server takes it (their retries cover the
    gap). Only a TCP connection is made to each address; nothing is sent.
    """
    me = cluster.index
    listener = _listen(cluster.workers[me])
    try:
        silent = {i: 'nothing listens there' for i in range(len(cluster.workers)) if i != me}
        deadline = time.monotonic() + timeout_seconds
        while silent:
            for i in list(silent):
                host, port = cluster.workers[i].rsplit(':', 1)
                try:
                    socket.create_connection(
                        (host, int(port)),
                        timeout=max(0.1, min(1.0, deadline - time.monotonic()))).close()
                    del silent[i]
                except socket.gaierror:
                    silent[i] = 'its host name does not resolve'
                except OSError as e:
                    silent[i] = 'no answer' if isinstance(e, socket.timeout) else \
                        'nothing listens there' if e.errno == errno.ECONNREFUSED else \
                        (e.strerror or str(e)).lower()
            if silent and time.monotonic() >= deadline:
                i = min(silent)
                raise ClusterError(
                    '%s could not reach the cluster within --worker_timeout=%d s: %s never '
                    'answered (%s). Start every worker (the same command, each with its own '
                    'TF_CONFIG task.index), check the addresses %s, or allow more time with '
                    '--worker_timeout' % (cluster.describe(me), timeout_seconds,
                                          cluster.describe(i), silent[i],
                                          ', '.join(cluster.workers)))
            if silent:
                time.sleep(poll_seconds)
    finally:
        listener.close()


def _listen(address):
    """A socket listening on this worker's port (all interfaces, as TensorFlow's
    server binds), or the ClusterError saying why it cannot."""
    listener = socket.socket()
    # A port left in TIME_WAIT by an earlier run of this worker is free for
    # TensorFlow's server (which sets this too); a listening process is not.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(('', int(address.rsplit(':', 1)[1])))
        listener.listen()
    except OSError as e:
        listener.close()
        if e.errno == errno.EADDRINUSE:
            raise ClusterError('%s, this worker\'s address in TF_CONFIG, is already in use '
                               '(another process listens there): free it or choose another '
                               'port' % address)
        raise ClusterError('%s, this worker\'s address in TF_CONFIG, cannot be listened on '
                           '(%s): choose another port' % (address, e.strerror or e))
    return listener


def _multi_worker_strategy(cluster, timeout_seconds):
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context
    # TensorFlow's coordination service notices a worker that stops sending
    # heartbeats and aborts the others' collectives; its default waits are set
    # here from --worker_timeout: how long to wait for every worker to join,
    # and how long a silent worker counts as alive.
    context.context().configure_coordination_service(
        service_type='standalone', service_leader=cluster.leader,
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(a))
                          for job, a in cluster.jobs],
        cluster_register_timeout_in_ms=int(timeout_seconds * 1000),
        heartbeat_timeout_in_ms=int(timeout_seconds * 1000))
    # Without the barrier the chief, which hosts the service, waits for the
    # others' registration with TensorFlow's fixed limit (an hour), not ours.
    context.context().coordination_service.cluster_register_with_barrier = True
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except tf.errors.OpError as e:
        raise ClusterError(
            '%s could not reach the cluster within --worker_timeout=%d s (%s): start every worker '
            '(the same command, each with its own TF_CONFIG task.index) and check that the '
            'addresses %s are this job\'s workers'
            % (cluster.describe(cluster.index), timeout_seconds, _first_line(e),
               ', '.join(cluster.workers)))


def lost_worker_error(cluster, error, resume_hint):
    """The WorkerLost to raise for a collective aborted by a failed worker."""
    message = str(getattr(error, 'message', error))
    index = None
    for job, task in re.findall(r'/job:(\w+)(?:/replica:\d+)?/task:(\d+)', message):
        if (job, int(task)) in cluster.tasks and (job, int(task)) != (cluster.task_type,
                                                                      cluster.task_index):
            index = cluster.tasks.index((job, int(task)))
            break
    who = cluster.describe(index) if index is not None else 'another worker'
    return WorkerLost('%s stopped answering, so %s stopped too (%s). %s'
                      % (who, cluster.describe(cluster.index), _first_line(error), resume_hint))


# The parts of a TensorFlow error message that are not its cause: the
# headline of a failed graph call, the Python frames that built the op, and
# the names of the graph functions and nodes it ran in.
_NOT_THE_CAUSE = re.compile(r'^(Graph execution error:|Detected at node .*|File ".*)$')
_GRAPH_NAMES = re.compile(r'\{\{[^{}]*\}\}\s*|\s*\[\[.*?\]\]|\s*\[Op:[^\]]*\]')


def _first_line(error, limit=200):
    """The first line of a TensorFlow error that says what happened, cut at a
    sentence or word end within `limit` characters."""
    text = str(getattr(error, 'message', error))
    lines = [l for l in (_GRAPH_NAMES.sub('', l).strip() for l in text.splitlines())
             if l and not _NOT_THE_CAUSE.match(l)]
    if not lines:
        return type(error).__name__
    # A line ending in ':' introduces details on the next lines (which worker
    # stopped sending heartbeats, say): the line alone is the cause.
    line = lines[0].rstrip(' :')
    if len(line) <= limit:
        return line
    cut = line[:limit]
    if cut.rfind('. ') > 0:
        return cut[:cut.rfind('. ') + 1]
    return (cut[:cut.rfind(' ')] if ' ' in cut else cut).rstrip(',;:') + '...'
