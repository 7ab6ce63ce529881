"""One experiment: meta-train or test a MAML model in LOGDIR/EXPERIMENT.

`run(config)` is the whole program behind the command line: it finds the
experiment folder and its latest checkpoint, builds the model and the data,
then trains (`train`) or tests (`test`) as the reference's main() did. It
prints the reference's lines and writes its files; main.py only turns flags
into a Config and errors into exit codes.
"""
import csv
import dataclasses
import os
import pickle
import random
import secrets
import signal
import sys
import tempfile
import time
import zlib

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

import checkpoint
import distribute
import folder_lock
import schedule as schedule_module
from checkpoint import CheckpointError, RunState
from config import ConfigError
from data_generator import DataError, DataGenerator, numpy_global_state, set_numpy_global_state
import model_source
from maml import MAML
from networks import NetworkError
from optimizers import Optimizers
from progress import Progress
from reptile import refuse_where_unsupported
from schedule import Schedule
from steps import Steps

NUM_TEST_POINTS = 600


class TrainingStopped(RuntimeError):
    """Training cannot go on (a non-finite loss); the message says where."""


def set_threads(config):
    """Apply config.thread_settings; must run before TensorFlow executes any op."""
    if tf.config.list_physical_devices('GPU'):
        # The per-configuration choice was tuned for CPU-only runs: with a GPU,
        # only thread counts given explicitly apply.
        config = dataclasses.replace(config, inter_op_threads=max(0, config.inter_op_threads),
                                     intra_op_threads=max(0, config.intra_op_threads))
    inter, intra = config.thread_settings(os.cpu_count() or 1)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    tf.config.threading.set_intra_op_parallelism_threads(intra)


# ------------------------------------------------------------------- steps
def stack_batches(batches, slots):
    """Numpy batches (inputa, inputb, labela, labelb) as four arrays [slots, ...],
    zero past len(batches): every call of Steps.metatrain_steps has one shape."""
    stacked = []
    for parts in zip(*batches):
        out = np.zeros((slots,) + parts[0].shape, np.float32)
        out[:len(parts)] = parts
        stacked.append(out)
    return stacked


def run_steps(steps, batches, pretraining, steps_per_call, num_tasks):
    """The training steps on these numpy batches (this worker's tasks of meta-batches
    of num_tasks), in order, in one compiled call; their objectives."""
    if steps_per_call == 1:
        step = steps.pretrain_step if pretraining else steps.metatrain_step
        return [float(step(*batch, num_tasks=num_tasks)['objective']) for batch in batches]
    repeated = steps.pretrain_steps if pretraining else steps.metatrain_steps
    objectives = repeated(*stack_batches(batches, steps_per_call), len(batches),
                          num_tasks=num_tasks)
    return objectives.numpy()[:len(batches)]


# --------------------------------------------------------------- summaries
# What tf.summary.scalar attaches (it needs the tensorboard package, which
# training does not): TensorBoard's scalars plugin reads these events.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars')).SerializeToString()


def _scalar(tag, value):
    tf.summary.write(tag, tf.cast(value, tf.float32), metadata=_SCALAR_METADATA)


def write_summaries(writer, prefix, res, itr, classification):
    with writer.as_default(step=itr):
        _scalar(prefix + 'Pre-update loss', res['total_loss1'])
        if classification:
            _scalar(prefix + 'Pre-update accuracy', res['total_accuracy1'])
        for j, loss in enumerate(res['total_losses2']):
            _scalar(prefix + 'Post-update loss, step ' + str(j + 1), loss)
            if classification:
                _scalar(prefix + 'Post-update accuracy, step ' + str(j + 1),
                        res['total_accuracies2'][j])


def headline(res, classification, num_updates):
    """The two values the reference printed: before adaptation, after num_updates steps."""
    if classification:
        return res['total_accuracy1'].numpy(), res['total_accuracies2'][num_updates - 1].numpy()
    return res['total_loss1'].numpy(), res['total_losses2'][num_updates - 1].numpy()


def measure(config):
    """What headline's and the test's values are."""
    return 'accuracy' if config.classification else 'mean squared error'


def steps_after(n):
    return '%d step%s' % (n, '' if n == 1 else 's')


def training_legend(config, schedule):
    """The printed lines' numbers named once (stderr): the reference prints them bare."""
    lines = ['Iteration lines show the %s before adaptation (on the examples each task adapts '
             'on) and after %s of adaptation (on its held-out examples), each the mean over the '
             'meta-batches summarised every %d iterations since the previous line.'
             % (measure(config), steps_after(config.num_updates),
                schedule_module.SUMMARY_INTERVAL)]
    if schedule.validation_interval is not None:
        lines.append('Validation results: the same two values on one validation meta-batch, '
                     'every %d iterations.' % schedule.validation_interval)
    return '\n'.join(lines)


def labelled_results(config, means, ci95, csv_path, pkl_path):
    """The test's results labelled (stderr): the reference prints a bare tuple of arrays."""
    rows = [('before adaptation', means[0], ci95[0])]
    rows += [('after ' + steps_after(j), means[j], ci95[j]) for j in range(1, len(means))]
    width = max(len(label) for label, _, _ in rows)
    lines = ['Test %s over %d tasks, mean +- 95%% confidence interval (before adaptation: on '
             'the examples each task adapts on; after: on its held-out examples):'
             % (measure(config), NUM_TEST_POINTS)]
    lines += ['  %-*s  %.4f +- %.4f' % (width, label, mean, ci) for label, mean, ci in rows]
    lines.append('Wrote %s (rows: mean, stddev, 95%% CI; columns update0..update%d) and %s '
                 '(every task\'s values)' % (csv_path, len(means) - 1, pkl_path))
    return '\n'.join(lines)


class Announced:
    """Steps whose compiled steps announce their first call on `progress`: it traces
    and compiles the step (minutes for the image models), silently otherwise."""

    def __init__(self, steps, progress, names):
        self._steps, self._progress, self._names = steps, progress, dict(names)
        self.model, self.replicas = steps.model, steps.replicas

    def __getattr__(self, name):
        method = getattr(self._steps, name)
        if name not in self._names:
            return method

        def first_call(*args, **kwargs):
            with self._progress.compiling(self._names.pop(name)):
                return method(*args, **kwargs)
        return first_call


# The compiled steps that training calls, as the compiling lines name them.
TRAINING_STEPS = {'metatrain_step': 'the training step',
                  'summarised_metatrain_step': 'the training step with its summaries',
                  'metatrain_steps': 'the training step',
                  'pretrain_step': 'the pre-training step',
                  'pretrain_steps': 'the pre-training step',
                  'evaluate': 'the evaluation step'}


# ------------------------------------------------------------------- train
class StopRequest:
    """Turns Ctrl-C / SIGTERM into a request honoured between training calls (one
    iteration, or one call of up to a summary interval of sinusoid iterations)."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def train(config, steps, data, exp_dir, state):
    """Meta-train from state.next_iteration on, as the reference's train(): draw a
    batch, step, report, save. Returns the exit status (130: interrupted).

    On several workers every worker runs this loop on its share of each batch;
    only the chief prints, writes summaries and saves.
    """
    model, optimizers, replicas = steps.model, steps.optimizers, steps.replicas
    schedule = Schedule(config, validation=data.has_validation_set)
    progress = Progress(config.progress and replicas.is_chief, schedule.total,
                        state.next_iteration)
    say = progress.say if replicas.is_chief else (lambda line: None)
    num_updates, eval_steps = config.num_updates, config.eval_steps
    classification, num_tasks = config.classification, config.meta_batch_size
    resume_itr = state.next_iteration
    if state.numpy_random_state is not None:
        set_numpy_global_state(state.numpy_random_state)
    # Image batches depend only on their position and the seed, so a resumed
    # run sees the batches an uninterrupted one would; each worker assembles
    # only its tasks of each batch.
    mine = replicas.worker_tasks(num_tasks)
    train_batches = data.meta_batches(True, seed=[state.batch_seed, 0], start=resume_itr,
                                      tasks=mine)
    val_batches = (data.meta_batches(False, seed=[state.batch_seed, 1],
                                     start=state.val_batches_used, tasks=mine)
                   if data.has_validation_set else None)

    def evaluate(batch):
        return steps.evaluate(*batch, eval_steps, num_tasks=num_tasks)

    def next_val_batch():
        state.val_batches_used += 1
        return next(val_batches)

    def save(itr):
        state.next_iteration = itr + 1
        state.numpy_random_state = numpy_global_state()
        if replicas.is_chief:
            checkpoint.save(exp_dir, itr, checkpoint.contents(model, optimizers, state))

    writer = tf.summary.create_file_writer(exp_dir) if config.log and replicas.is_chief else None
    say('Done initializing, starting training.')
    progress.note(training_legend(config, schedule))
    steps = Announced(steps, progress, TRAINING_STEPS)
    prelosses, postlosses = [], []
    last = resume_itr - 1
    with StopRequest() as stop:
        for call in schedule.calls(resume_itr):
            batches = [next(train_batches) for _ in call]
            pretraining = schedule.pretraining(call.start)
            objectives = None
            if schedule.summarises(call.start):
                # The reference's merged summaries held a validation batch too,
                # fetched with --log=False as well: draw it either way, so the
                # later validation batches do not depend on --log.
                val_batch = next_val_batch() if val_batches is not None else None
                val = evaluate(val_batch) if config.log and val_batch is not None else None
                # The values the reference fetched with its training op: this
                # batch, the weights before the update, every evaluated step;
                # computed with the training step itself where it is one call.
                if schedule.steps_per_call == 1 and not pretraining:
                    res = steps.summarised_metatrain_step(*batches[0], eval_steps,
                                                          num_tasks=num_tasks)
                    objectives = [float(res['objective'])]
                else:
                    res = evaluate(batches[0])
                pre, post = headline(res, classification, num_updates)
                prelosses.append(pre)
                postlosses.append(post)
                if writer:
                    write_summaries(writer, 'metatrain_', res, call.start, classification)
                    if val is not None:
                        write_summaries(writer, 'metaval_', val, call.start, classification)

            if objectives is None:
                objectives = run_steps(steps, batches, pretraining, schedule.steps_per_call,
                                       num_tasks)
            for i, objective in zip(call, objectives):
                if not np.isfinite(objective):
                    raise TrainingStopped(
                        'the training loss became %s at iteration %d; stopped without saving, '
                        'the last good checkpoint in %s stays the latest (try a smaller '
                        '--meta_lr or --update_lr)' % (objective, i, exp_dir))
            last = call[-1]

            if schedule.prints(last):
                if schedule.pretraining(last):
                    print_str = 'Pretrain Iteration ' + str(last)
                else:
                    print_str = 'Iteration ' + str(last - config.num_pretrain_iterations)
                print_str += ': ' + str(np.mean(prelosses)) + ', ' + str(np.mean(postlosses))
                say(print_str)
                prelosses, postlosses = [], []

            if schedule.validates(last):
                pre, post = headline(evaluate(next_val_batch()), classification, num_updates)
                say('Validation results: ' + str(pre) + ', ' + str(post))

            # After the validation, so that the saved position counts its batch.
            if schedule.saves(last):
                save(last)
            progress.update(last + 1)

            # Every worker stops after the same iteration: a request on any one
            # (Ctrl-C, SIGTERM) stops all, with one save.
            stopping = stop.requested
            if replicas.num_workers > 1:
                stopping = replicas.any_worker(stopping)
            if stopping:
                if not schedule.saves(last):
                    save(last)
                progress.close()
                say('Interrupted after iteration %d: saved %s. Run the same command to resume.'
                    % (last, os.path.join(exp_dir, 'model%d' % last)))
                return 130
    if writer:
        writer.flush()
    progress.close('Trained to iteration %d. Checkpoints (model{N}, the last %d kept)%s are in %s'
                   % (last, checkpoint.MAX_TO_KEEP,
                      ' and TensorBoard events' if writer else '', exp_dir))
    return 0


# -------------------------------------------------------------------- test
def test(config, steps, data, exp_dir):
    """The reference's test(): 600 tasks, one at a time; the CSV and pkl of the results.

    With several replicas each takes one task of every group of consecutive
    tasks; the chief writes every task's values.
    """
    replicas = steps.replicas
    np.random.seed(1)
    random.seed(1)
    batches = data.meta_batches(False, seed=[1])  # one task each, in order
    progress = Progress(config.progress and replicas.is_chief, NUM_TEST_POINTS, what='testing',
                        items='tasks')
    steps = Announced(steps, progress, {'evaluate': 'the test step'})
    metaval_accuracies = []
    for first in range(0, NUM_TEST_POINTS, replicas.num_replicas):
        count = min(replicas.num_replicas, NUM_TEST_POINTS - first)
        group = [next(batches) for _ in range(count)]
        mine = replicas.worker_tasks(count)
        batch = [np.concatenate(parts[mine.start:mine.stop] or [parts[0][:0]])
                 for parts in zip(*group)]
        res = steps.evaluate(*batch, config.test_num_updates, num_tasks=count)
        metaval_accuracies.extend(res['task_values'].numpy())
        progress.update(first + count)
    progress.close()
    if not replicas.is_chief:
        return 0

    metaval_accuracies = np.array(metaval_accuracies)
    means = np.mean(metaval_accuracies, 0)
    stds = np.std(metaval_accuracies, 0)
    ci95 = 1.96 * stds / np.sqrt(NUM_TEST_POINTS)

    print('Mean validation accuracy/loss, stddev, and confidence intervals')
    print((means, stds, ci95))

    name = 'test_ubs' + str(config.update_batch_size) + '_stepsize' + str(config.update_lr)
    out_filename = os.path.join(exp_dir, name + '.csv')
    out_pkl = os.path.join(exp_dir, name + '.pkl')
    _atomic_write(out_pkl, lambda f: pickle.dump({'mses': metaval_accuracies}, f), 'wb')

    def write_csv(f):
        writer = csv.writer(f, delimiter=',')
        writer.writerow(['update' + str(i) for i in range(len(means))])
        writer.writerow(means)
        writer.writerow(stds)
        writer.writerow(ci95)
    _atomic_write(out_filename, write_csv, 'w')
    if config.progress:
        print(labelled_results(config, means, ci95, out_filename, out_pkl), file=sys.stderr)
    return 0


def _atomic_write(path, write, mode):
    # A temporary file of its own: two tests of one folder may run at once.
    checkpoint.write_atomically(path, write, mode)


# --------------------------------------------------------------------- run
def check_writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
        # A probe of a unique name: runs testing one folder side by side would
        # remove each other's fixed-name probe.
        with tempfile.NamedTemporaryFile('w', dir=folder, prefix='.write-test-') as probe:
            probe.write('ok')
            probe.flush()
    except OSError as e:
        raise ConfigError('cannot write to %s (%s): choose another --logdir' % (folder, e.strerror))


def _find_checkpoint(exp_dir, config):
    """checkpoint.find for these flags; an unreadable checkpoint's error says what to do."""
    try:
        return checkpoint.find(exp_dir, config.test_iter)
    except checkpoint.UnreadableCheckpoint as e:
        if config.train:
            fix = 'move it away, or --resume=False to start afresh'
        elif config.test_iter > 0:
            fix = 'test another iteration with --test_iter'
        else:
            fix = 'train again (--resume=False moves it aside)'
        raise CheckpointError('%s: %s' % (e, fix))


def run(config):
    """Train or test as the flags say; the exit status."""
    refuse_where_unsupported(config, 'meta-training or testing from the command line')
    cluster = distribute.Cluster.from_environment(os.environ) \
        if distribute.reads_tf_config(config) else None
    is_chief = cluster is None or cluster.is_chief
    if config.seed is not None:
        np.random.seed(config.seed)
        random.seed(config.seed)
        tf.random.set_seed(config.seed)
    # Testing always uses meta-batches of one task, as in the reference.
    data = DataGenerator(config.num_samples_per_class,
                         config.meta_batch_size if config.train else 1, config)

    exp_dir = os.path.join(config.logdir, config.exp_string)
    found = None
    if config.resume or not config.train:
        found = _find_checkpoint(exp_dir, config)
    if found is not None and is_chief:
        # A save killed before its last rename leaves the `checkpoint` file
        # naming an older checkpoint; a run that finds no save to make (below)
        # or only tests would never rewrite it.
        checkpoint.repair_state_file(exp_dir)
    if config.train and found is not None and _next_iteration(found) >= config.num_iterations:
        # Before building anything, and without writing a file (but the repair above).
        if is_chief:
            print('Nothing to train: the checkpoint in %s is already at iteration %d of %d (a '
                  'finished run with the same experiment name: use another --logdir, or '
                  '--resume=False to start afresh).'
                  % (exp_dir, _next_iteration(found), config.num_iterations))
        return 0
    if config.classification:
        # The class and image counts, before the experiment folder is made:
        # data rejected here leaves nothing behind (task_list raises DataError).
        data.task_list(config.train)
        if config.train:
            data.task_list(False)  # the validation split
    made = _missing_folders(exp_dir) if config.train and is_chief else []
    if config.train:
        if is_chief:
            check_writable(exp_dir)
        # One job trains in a folder at a time (testing beside it is fine).
        folder_lock.hold(exp_dir, job=cluster.signature() if cluster else None, holder=is_chief)
        if found is not None:  # read again: another run may have saved since
            found = _find_checkpoint(exp_dir, config)
        elif not config.resume and is_chief and checkpoint.list_checkpoints(exp_dir):
            moved = checkpoint.move_earlier_run(exp_dir,
                                                'earlier_run_' + time.strftime('%Y%m%d-%H%M%S'))
            print('--resume=False: moved the earlier run\'s checkpoints and events to %s'
                  % os.path.join(exp_dir, moved), flush=True)
        if is_chief and config.datasource == 'sinusoid' and config.norm == 'batch_norm' \
                and config.update_batch_size < 10 and config.model is None:
            print('note: sinusoid with --norm=batch_norm and --update_batch_size=%d (the '
                  'reference\'s bare defaults) does not learn: batch statistics over %d points '
                  'cannot carry the amplitude. The paper\'s setting is --norm=None '
                  '--update_batch_size=10.' % (config.update_batch_size, config.update_batch_size),
                  file=sys.stderr)
    if not config.train and found is None:
        raise CheckpointError('no checkpoint to test in %s: train first with the same flags '
                              '(without --train=False), or point --logdir at the folder that '
                              'holds %s/' % (exp_dir, config.exp_string))
    if is_chief and not config.train:
        check_writable(exp_dir)  # for the test's CSV and pkl

    replicas = distribute.connect(config, cluster)
    if cluster is not None:
        _agree_on_flags(config, cluster, replicas)
    try:
        with replicas.strategy.scope():
            model = MAML(config, seed=config.seed, network=model_source.load(config))
            # The training's optimiser state, apart from the model; testing
            # never applies it, and leaves it as new.
            optimizers = Optimizers.create(model)
    except NetworkError:
        _remove_if_empty(exp_dir, made)  # a folder this run made for nothing
        raise
    state = RunState()
    if found is not None:
        iteration, prefix, contents = found
        if is_chief:
            print('Restoring model weights from ' + prefix)
        hint = ' (check the flags against the experiment name %s)' % config.exp_string
        if config.model is not None:
            hint = (' (it was written by another model or other flags: this --model=%s may have '
                    'changed since; check the flags against the experiment name %s)'
                    % (config.model, config.exp_string))
        saved = checkpoint.restore(model, contents, prefix,
                                   optimizers=optimizers if config.train else None, hint=hint)
        # The reference's checkpoints hold only the weights: it resumed at the
        # saved iteration with a fresh optimiser.
        state = saved if (saved is not None and config.train) else RunState(next_iteration=iteration)
    if config.export_model is not None:
        return export(model, config.export_model, prefix) if is_chief else 0
    if state.batch_seed is None:
        # Fixed by --seed; otherwise any seed, drawn without touching numpy's
        # global generator (the sinusoid batches come from it).
        state.batch_seed = config.seed if config.seed is not None else secrets.randbelow(2 ** 31 - 1)
    steps = Steps(model, replicas, optimizers)
    try:
        if cluster is not None:
            _agree_on_position(config, replicas, state)
        if config.train:
            return train(config, steps, data, exp_dir, state)
        return test(config, steps, data, exp_dir)
    except DataError:
        # An image found unreadable while loading: a folder this run made goes
        # again, if it holds nothing but the lock.
        _remove_if_empty(exp_dir, made)
        raise
    except distribute.PEER_FAILURES as e:
        if cluster is None:
            raise
        raise distribute.lost_worker_error(
            cluster, e, 'Rerun the same commands on every worker to resume from the last '
            'checkpoint in %s.' % exp_dir)


def export(model, path, prefix):
    """--export_model: the restored checkpoint's weights, saved as a Keras model."""
    import keras_network
    try:
        keras_network.export(model, path)
    except NetworkError as e:
        raise NetworkError('--export_model=%s: %s' % (path, e))
    except (OSError, ValueError) as e:
        raise NetworkError('--export_model=%s: cannot save it (%s): choose another path'
                           % (path, getattr(e, 'strerror', None) or e))
    print('Exported the meta-learned initial weights of %s to %s' % (prefix, path),
          file=sys.stderr)
    return 0


def _missing_folders(path):
    """The folders of path that do not exist yet, deepest first."""
    missing, path = [], os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _remove_if_empty(exp_dir, made):
    """Remove these folders (made by this run, deepest first) while they hold
    nothing, exp_dir's lock aside."""
    try:
        if not made or os.listdir(exp_dir) != [folder_lock.LOCK_NAME]:
            return
        folder_lock.release(exp_dir, remove=True)
    except OSError:  # gone or unreadable already: leave it
        return
    for folder in made:
        try:
            os.rmdir(folder)
        except OSError:  # not empty: something else is there now
            return


def _next_iteration(found):
    """The iteration a run resumed from this (iteration, prefix, contents) starts at."""
    iteration, _, contents = found
    state = checkpoint.read_state(contents)
    return state.next_iteration if state is not None else iteration


def _agree_on_flags(config, cluster, replicas):
    """Check that every worker has the same flags (before any variable is made)."""
    names = [n for n in config.__dataclass_fields__ if n not in distribute.PER_WORKER_FLAGS]
    table = replicas.gather([zlib.crc32(repr(getattr(config, n)).encode()) for n in names])
    for column, name in enumerate(names):
        differ = [w for w in range(table.shape[0]) if table[w, column] != table[0, column]]
        if differ:
            raise distribute.ClusterError(
                '--%s differs between %s and %s: start every worker with the same flags'
                % (name, cluster.describe(0), cluster.describe(differ[0])))


def _agree_on_position(config, replicas, state):
    """Check that every worker resumed from the same checkpoint; share the chief's seed."""
    table = replicas.gather([state.next_iteration, state.val_batches_used, state.batch_seed])
    if (table[:, :2] != table[0, :2]).any():
        raise distribute.ClusterError(
            'the workers found different checkpoints (next iterations %s): give every worker '
            'the same --logdir on a filesystem they share' % table[:, 0].tolist())
    state.batch_seed = int(table[0, 2])
    if config.seed is None and state.numpy_random_state is None:
        # Unseeded sinusoid batches come from numpy's global generator: every
        # worker must draw the same ones, so all take the chief's seed.
        np.random.seed(state.batch_seed)
