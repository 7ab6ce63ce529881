"""Meta-train and test MAML: the reference's command line on TensorFlow 2.

Usage (the reference's):
  Sinusoid:  python main.py --datasource=sinusoid --logdir=logs/sine/ --metatrain_iterations=70000 --norm=None --update_batch_size=10
  Pretrained baseline:  add --pretrain_iterations=70000 --metatrain_iterations=0
  Oracle baseline:      add --baseline=oracle
  Omniglot 5-way:  python main.py --datasource=omniglot --metatrain_iterations=60000 --meta_batch_size=32 --update_batch_size=1 --update_lr=0.4 --num_updates=1 --logdir=logs/omniglot5way/
  Omniglot 20-way: python main.py --datasource=omniglot --metatrain_iterations=60000 --meta_batch_size=16 --update_batch_size=1 --num_classes=20 --update_lr=0.1 --num_updates=5 --logdir=logs/omniglot20way/
  MiniImagenet:    python main.py --datasource=miniimagenet --metatrain_iterations=60000 --meta_batch_size=4 --update_batch_size=1 --update_lr=0.01 --num_updates=5 --num_classes=5 --logdir=logs/miniimagenet1shot/ --num_filters=32 --max_pool=True
  Testing: the same flags plus --train=False (and --test_set=True for the test split).

Flags are read here only and handed to the model and data code as one Config.
"""
import csv
import dataclasses
import os
import pickle
import random
import signal
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # keep TensorFlow's start-up notices quiet
# oneDNN's CPU kernels: about twice as fast on the MiniImagenet network on 2
# cores (measured; not on by default in every TensorFlow build). The golden
# parity tests pass with it. TF_ENABLE_ONEDNN_OPTS=0 turns it off.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')

import numpy as np
import tensorflow as tf
from absl import app, flags
from tensorflow.core.framework import summary_pb2

import checkpoint
from checkpoint import CheckpointError
from config import Config, ConfigError
from data_generator import DataError, DataGenerator
from maml import MAML

FLAGS = flags.FLAGS

## Dataset/method options
flags.DEFINE_string('datasource', 'sinusoid', 'sinusoid or omniglot or miniimagenet')
flags.DEFINE_integer('num_classes', 5, 'number of classes used in classification (e.g. 5-way classification).')
# oracle means task id is input (only suitable for sinusoid)
flags.DEFINE_string('baseline', None, 'oracle, or leave unset for none')

## Training options
flags.DEFINE_integer('pretrain_iterations', 0, 'number of pre-training iterations.')
flags.DEFINE_integer('metatrain_iterations', 15000, 'number of metatraining iterations.')  # 15k for omniglot, 50k for sinusoid
flags.DEFINE_integer('meta_batch_size', 25, 'number of tasks sampled per meta-update')
flags.DEFINE_float('meta_lr', 0.001, 'the base learning rate of the generator')
flags.DEFINE_integer('update_batch_size', 5, 'number of examples used for inner gradient update (K for K-shot learning).')
flags.DEFINE_float('update_lr', 1e-3, 'step size alpha for inner gradient update.')  # 0.1 for omniglot
flags.DEFINE_integer('num_updates', 1, 'number of inner gradient updates during training.')

## Model options
flags.DEFINE_string('norm', 'batch_norm', 'batch_norm, layer_norm, or None')
flags.DEFINE_integer('num_filters', 64, 'number of filters for conv nets -- 32 for miniimagenet, 64 for omiglot.')
flags.DEFINE_bool('conv', True, 'whether or not to use a convolutional network, only applicable in some cases')
flags.DEFINE_bool('max_pool', False, 'Whether or not to use max pooling rather than strided convolutions')
flags.DEFINE_bool('stop_grad', False, 'if True, do not use second derivatives in meta-optimization (for speed)')

## Logging, saving, and testing options
flags.DEFINE_bool('log', True, 'if false, do not log summaries, for debugging code.')
flags.DEFINE_string('logdir', '/tmp/data', 'directory for summaries and checkpoints.')
flags.DEFINE_bool('resume', True, 'resume training if there is a model available')
flags.DEFINE_bool('train', True, 'True to train, False to test.')
flags.DEFINE_integer('test_iter', -1, 'iteration to load model (-1 for latest model)')
flags.DEFINE_bool('test_set', False, 'Set to true to test on the the test set, False for the validation set.')
flags.DEFINE_integer('train_update_batch_size', -1, 'number of examples used for gradient update during training (use if you want to test with a different number).')
flags.DEFINE_float('train_update_lr', -1, 'value of inner gradient step step during training. (use if you want to test with a different value)')  # 0.1 for omniglot

## New in this port
flags.DEFINE_string('data_folder', None, 'where the prepared data set lives (default ./data/omniglot_resized, or ./data/miniImagenet holding train/ val/ test/)')
flags.DEFINE_bool('xla', True, 'compile the steps of the fully connected nets (sinusoid, --conv=False) with XLA; --xla=False where XLA is unavailable')
flags.DEFINE_integer('inter_op_threads', -1, 'TensorFlow ops run side by side (0: TensorFlow\'s default; -1: chosen per configuration, see Config.thread_settings)')
flags.DEFINE_integer('intra_op_threads', -1, 'threads within one op (0: TensorFlow\'s default; -1: chosen per configuration)')
flags.DEFINE_integer('seed', None, 'seed numpy, random and TensorFlow for a repeatable run (unset: unseeded, as the reference)')


SUMMARY_INTERVAL = 100
SAVE_INTERVAL = 1000
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


def config_from_flags():
    config = Config(**{name: FLAGS[name].value for name in Config.__dataclass_fields__})
    config.validate()
    if config.baseline == 'oracle':
        # The oracle only pretrains, as in the reference.
        config.pretrain_iterations += config.metatrain_iterations
        config.metatrain_iterations = 0
    return config


# ------------------------------------------------------------------ batches
def sinusoid_batches(config, data_generator, train):
    """(inputa, inputb, labela, labelb) from numpy's global generator, as the reference fed them."""
    return (tuple(tf.constant(x) for x in batch)
            for batch in sinusoid_arrays(config, data_generator, train))


def sinusoid_arrays(config, data_generator, train):
    """The batches of sinusoid_batches as float32 numpy arrays."""
    num_a = config.update_batch_size
    while True:
        batch_x, batch_y, amp, phase = data_generator.generate(train=train)
        if config.baseline == 'oracle':
            batch_x = np.concatenate([batch_x, np.zeros(batch_x.shape[:2] + (2,))], 2)
            for i in range(batch_x.shape[0]):
                batch_x[i, :, 1] = amp[i]
                batch_x[i, :, 2] = phase[i]
        batch_x, batch_y = batch_x.astype(np.float32), batch_y.astype(np.float32)
        yield batch_x[:, :num_a], batch_x[:, num_a:], batch_y[:, :num_a], batch_y[:, num_a:]


def stack_batches(batches, slots):
    """Numpy batches (inputa, inputb, labela, labelb) as four tensors [slots, ...],
    zero past len(batches): every call of MAML.metatrain_steps has one shape."""
    stacked = []
    for parts in zip(*batches):
        out = np.zeros((slots,) + parts[0].shape, np.float32)
        out[:len(parts)] = parts
        stacked.append(tf.constant(out))
    return stacked


def image_batches(config, data_generator, train, seed, start=0):
    """(inputa, inputb, labela, labelb) from the data set's prefetched batches, batch `start` on."""
    num_a = data_generator.num_classes * config.update_batch_size
    batches = data_generator.batches(train, seed=seed, start=start)  # loads the images now
    return ((tf.constant(images[:, :num_a]), tf.constant(images[:, num_a:]),
             tf.constant(labels[:, :num_a]), tf.constant(labels[:, num_a:]))
            for images, labels in batches)


# -------------------------------------------------------------- checkpoints
def optimizer_variables(model):
    """Both Adam optimisers' variables, by the names TF1 gave them: the reference
    built the pretraining optimiser first (Adam, Adam_1), the meta-training one second."""
    variables = model.pretrain_optimizer.state(('Adam', 'Adam_1'), '')
    variables.update(model.metatrain_optimizer.state(('Adam_2', 'Adam_3'), '_1'))
    return variables


def checkpoint_tensors(model, state):
    tensors = dict(model.named_variables())
    tensors.update(optimizer_variables(model))
    tensors[checkpoint.STATE_KEY] = checkpoint.encode_state(state)
    return tensors


def numpy_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def set_numpy_state(saved):
    name, keys, pos, has_gauss, cached = saved
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def find_checkpoint(config, exp_dir):
    """(iteration, prefix, contents) to start from, or None; errors for a missing --test_iter."""
    if config.test_iter > 0:
        prefix = os.path.join(exp_dir, 'model%d' % config.test_iter)
        if not os.path.exists(prefix + '.index'):
            existing = [str(i) for i, _ in checkpoint.list_checkpoints(exp_dir)]
            raise CheckpointError('--test_iter=%d: no checkpoint %s (existing iterations: %s)'
                                  % (config.test_iter, prefix, ', '.join(existing) or 'none'))
        return config.test_iter, prefix, checkpoint.read(prefix)
    return checkpoint.latest_readable(exp_dir)


def restore(config, model, found):
    iteration, prefix, contents = found
    print('Restoring model weights from ' + prefix)
    hint = ' (check the flags against the experiment name %s)' % config.exp_string
    checkpoint.assign(model.named_variables(), contents, prefix, hint)
    state = checkpoint.decode_state(contents)
    if not config.train or state is None:
        # The reference's checkpoints hold only the weights: it resumed at the
        # saved iteration with a fresh optimiser.
        return iteration, None
    checkpoint.assign(optimizer_variables(model), contents, prefix, hint)
    return state['next_iteration'], state


def check_writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, '.write-test')
        with open(probe, 'w') as f:
            f.write('ok')
        os.remove(probe)
    except OSError as e:
        raise ConfigError('cannot write to %s (%s): choose another --logdir' % (folder, e.strerror))


# ------------------------------------------------------------------- train
class StopRequest:
    """Turns Ctrl-C / SIGTERM into a request honoured between training calls (one
    iteration, or up to 100 sinusoid iterations: well under a second)."""

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


def call_end(start, total, pretrain_iterations, steps_per_call, reports_after):
    """Where the iterations that one training call runs from `start` on end (exclusive):
    at most steps_per_call of them, stopping before a summary iteration, after one that
    reports (reports_after(itr): prints, saves or validates), and at the end of
    pre-training and of training."""
    end = start + 1
    while (end - start < steps_per_call and end < total and end != pretrain_iterations
           and end % SUMMARY_INTERVAL != 0 and not reports_after(end - 1)):
        end += 1
    return end


def train(config, model, data_generator, exp_dir, resume_itr=0, state=None):
    if config.datasource == 'sinusoid':
        print_interval = 1000
    else:
        print_interval = 100
    test_print_interval = print_interval * 5
    total = config.pretrain_iterations + config.metatrain_iterations
    num_updates, eval_steps = config.num_updates, config.eval_steps
    classification = model.classification
    pre_key, post_key = (('total_accuracy1', 'total_accuracies2') if classification
                         else ('total_loss1', 'total_losses2'))

    state = dict(state or {})
    if config.datasource == 'sinusoid':
        if 'numpy_random_state' in state:
            set_numpy_state(state['numpy_random_state'])
        train_batches = sinusoid_arrays(config, data_generator, train=True)
        val_batches = None
    else:
        # Shot order and rotations come from a seeded generator per batch, so
        # a resumed run sees the same batches as an uninterrupted one.
        state.setdefault('batch_seed', config.seed if config.seed is not None
                         else int(np.random.randint(0, 2 ** 31 - 1)))
        state.setdefault('val_batches_used', 0)
        train_batches = image_batches(config, data_generator, True, [state['batch_seed'], 0],
                                      start=resume_itr)
        val_batches = image_batches(config, data_generator, False, [state['batch_seed'], 1],
                                    start=state['val_batches_used'])
    # A sinusoid step computes for less time than entering a compiled function
    # takes, so its steps run up to a summary interval at a time in one call
    # (MAML.metatrain_steps), the same steps on the same batches. An image
    # step runs for tens of milliseconds or more: one call each.
    steps_per_call = SUMMARY_INTERVAL if config.datasource == 'sinusoid' else 1

    def next_val_batch():
        state['val_batches_used'] += 1
        return next(val_batches)

    def save(itr):
        state['next_iteration'] = itr + 1
        if config.datasource == 'sinusoid':
            state['numpy_random_state'] = numpy_state()
        checkpoint.save(exp_dir, itr, checkpoint_tensors(model, state))

    def reports_after(itr):
        """Whether iteration itr is followed by a print, a save or a validation."""
        return itr != 0 and (itr % print_interval == 0 or itr % SAVE_INTERVAL == 0 or (
            val_batches is not None and itr % test_print_interval == 0))

    def run_steps(batches, pretraining):
        """The training steps on these batches, in order; their objectives."""
        if steps_per_call == 1:
            step = model.pretrain_step if pretraining else model.metatrain_step
            return [float(step(*batch)['objective']) for batch in batches]
        steps = model.pretrain_steps if pretraining else model.metatrain_steps
        objectives = steps(*stack_batches(batches, steps_per_call), tf.constant(len(batches)))
        return objectives.numpy()[:len(batches)]

    writer = tf.summary.create_file_writer(exp_dir) if config.log else None
    print('Done initializing, starting training.')
    prelosses, postlosses = [], []
    itr, last = resume_itr, resume_itr - 1
    with StopRequest() as stop:
        while itr < total:
            end = call_end(itr, total, config.pretrain_iterations, steps_per_call, reports_after)
            batches = [next(train_batches) for _ in range(end - itr)]
            if itr % SUMMARY_INTERVAL == 0:
                # The values the reference fetched with its training op: this
                # batch, the weights before the update, every evaluated step.
                res = model.evaluate(*[tf.constant(x) for x in batches[0]], eval_steps)
                prelosses.append(res[pre_key].numpy())
                postlosses.append(res[post_key][num_updates - 1].numpy())
                # The reference's merged summaries held a validation batch too,
                # fetched with --log=False as well: draw it either way, so the
                # later validation batches do not depend on --log.
                val_batch = next_val_batch() if val_batches is not None else None
                if writer:
                    write_summaries(writer, 'metatrain_', res, itr, classification)
                    if val_batch is not None:
                        val = model.evaluate(*val_batch, eval_steps)
                        write_summaries(writer, 'metaval_', val, itr, classification)

            objectives = run_steps(batches, pretraining=itr < config.pretrain_iterations)
            for i, objective in enumerate(objectives, start=itr):
                if not np.isfinite(objective):
                    raise TrainingStopped(
                        'the training loss became %s at iteration %d; stopped without saving, '
                        'the last good checkpoint in %s stays the latest (try a smaller '
                        '--meta_lr or --update_lr)' % (objective, i, exp_dir))
            itr, last = end, end - 1

            if last != 0 and last % print_interval == 0:
                if last < config.pretrain_iterations:
                    print_str = 'Pretrain Iteration ' + str(last)
                else:
                    print_str = 'Iteration ' + str(last - config.pretrain_iterations)
                print_str += ': ' + str(np.mean(prelosses)) + ', ' + str(np.mean(postlosses))
                print(print_str, flush=True)
                prelosses, postlosses = [], []

            if last != 0 and last % SAVE_INTERVAL == 0:
                save(last)

            # Sinusoid has infinite data: no validation set.
            if last != 0 and last % test_print_interval == 0 and val_batches is not None:
                val = model.evaluate(*next_val_batch(), eval_steps)
                print('Validation results: ' + str(val[pre_key].numpy()) + ', '
                      + str(val[post_key][num_updates - 1].numpy()), flush=True)

            if stop.requested:
                save(last)
                print('Interrupted after iteration %d: saved %s. Run the same command to resume.'
                      % (last, os.path.join(exp_dir, 'model%d' % last)), flush=True)
                return 130
    if writer:
        writer.flush()
    if last >= resume_itr:
        save(last)
    else:
        print('Nothing to train: the checkpoint in %s is already at iteration %d of %d (a '
              'finished run with the same experiment name: use another --logdir, or '
              '--resume=False to start afresh).' % (exp_dir, resume_itr, total))
    return 0


# -------------------------------------------------------------------- test
def test(config, model, data_generator, exp_dir):
    np.random.seed(1)
    random.seed(1)
    if config.datasource == 'sinusoid':
        batches = sinusoid_batches(config, data_generator, train=False)
    else:
        batches = image_batches(config, data_generator, False, seed=1)
    steps = config.test_num_updates
    metaval_accuracies = []
    for _ in range(NUM_TEST_POINTS):
        res = model.evaluate(*next(batches), steps)
        if model.classification:
            values = [res['total_accuracy1']] + res['total_accuracies2']
        else:
            values = [res['total_loss1']] + res['total_losses2']
        metaval_accuracies.append([v.numpy() for v in values])

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
    return 0


def _atomic_write(path, write, mode):
    tmp = path + '.tmp'
    with open(tmp, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# -------------------------------------------------------------------- main
def run(config):
    if config.seed is not None:
        np.random.seed(config.seed)
        random.seed(config.seed)
        tf.random.set_seed(config.seed)
    # Testing always uses meta-batches of one task, as in the reference.
    data_generator = DataGenerator(config.num_samples_per_class,
                                   config.meta_batch_size if config.train else 1, config)
    dim_input = 3 if config.baseline == 'oracle' else data_generator.dim_input
    dim_output = config.num_classes if config.classification else 1

    exp_dir = os.path.join(config.logdir, config.exp_string)
    found = None
    if config.resume or not config.train:
        found = find_checkpoint(config, exp_dir)
    elif checkpoint.list_checkpoints(exp_dir):
        check_writable(exp_dir)
        moved = checkpoint.move_earlier_run(exp_dir, 'earlier_run_' + time.strftime('%Y%m%d-%H%M%S'))
        print('--resume=False: moved the earlier run\'s checkpoints and events to %s'
              % os.path.join(exp_dir, moved), flush=True)
    if not config.train and found is None:
        raise CheckpointError('no checkpoint to test in %s: train first with the same flags '
                              '(without --train=False), or point --logdir at the folder that '
                              'holds %s/' % (exp_dir, config.exp_string))
    check_writable(exp_dir)

    model = MAML(config, dim_input, dim_output, seed=config.seed)
    resume_itr, state = 0, None
    if found is not None:
        resume_itr, state = restore(config, model, found)

    if config.train:
        return train(config, model, data_generator, exp_dir, resume_itr, state)
    return test(config, model, data_generator, exp_dir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError('unexpected arguments: %s' % ' '.join(argv[1:]))
    try:
        config = config_from_flags()
        set_threads(config)
        return run(config)
    except (ConfigError, DataError, CheckpointError, TrainingStopped) as e:
        print('error: %s' % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C before training started (loading images, tracing) or a second
        # Ctrl-C during training: stop at once. Checkpoints are written
        # atomically, so the last complete one is intact.
        print('Interrupted: stopped at once; the last complete checkpoint (if any) is kept. '
              'Run the same command to resume.', file=sys.stderr)
        return 130


if __name__ == '__main__':
    app.run(main)
