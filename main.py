"""Meta-train and test MAML: the reference's command line on TensorFlow 2.

Usage (the reference's):
  Sinusoid:  python main.py --datasource=sinusoid --logdir=logs/sine/ --metatrain_iterations=70000 --norm=None --update_batch_size=10
  Pretrained baseline:  add --pretrain_iterations=70000 --metatrain_iterations=0
  Oracle baseline:      add --baseline=oracle
  Omniglot 5-way:  python main.py --datasource=omniglot --metatrain_iterations=60000 --meta_batch_size=32 --update_batch_size=1 --update_lr=0.4 --num_updates=1 --logdir=logs/omniglot5way/
  Omniglot 20-way: python main.py --datasource=omniglot --metatrain_iterations=60000 --meta_batch_size=16 --update_batch_size=1 --num_classes=20 --update_lr=0.1 --num_updates=5 --logdir=logs/omniglot20way/
  MiniImagenet:    python main.py --datasource=miniimagenet --metatrain_iterations=60000 --meta_batch_size=4 --update_batch_size=1 --update_lr=0.01 --num_updates=5 --num_classes=5 --logdir=logs/miniimagenet1shot/ --num_filters=32 --max_pool=True
  Testing: the same flags plus --train=False (and --test_set=True for the test split).

This file is the command line only: the flags, one Config from them, and
main() turning errors and interruptions into exit codes. What a run does is
experiment.run(config); nothing but the command-line tests imports this file.
"""
import os
import signal
import sys

INTERRUPTED = ('Interrupted: stopped at once; the last complete checkpoint (if any) is kept. '
               'Run the same command to resume.')
EXIT_INTERRUPTED = 130  # Ctrl-C's usual status; SIGTERM too, as training's graceful stop


def _stop_at_once(signum, frame):
    """Ctrl-C or SIGTERM outside the training loop (TensorFlow's import, loading
    images, tracing, the test): nothing there is worth finishing, and
    checkpoints and result files are written atomically, so stop now, with one
    line. Training's loop installs its own handlers (experiment.StopRequest)."""
    try:
        sys.stdout.flush()  # the reference's lines printed so far
    except Exception:  # noqa: BLE001 (a write it interrupted: nothing better to do)
        pass
    try:  # to the standard error saved at start: TensorFlow's import points fd 2 at /dev/null
        os.write(_STDERR, (INTERRUPTED + '\n').encode())
    except OSError:  # no standard error (closed, a broken pipe): the status still says it
        pass
    os._exit(EXIT_INTERRUPTED)


if __name__ == '__main__':
    # Before the imports below, which take seconds (TensorFlow). A signal
    # ignored by whoever started us (nohup, a background job) stays ignored.
    try:
        _STDERR = os.dup(2)
    except OSError:  # started without a standard error
        _STDERR = 2
    for _signal in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(_signal) is not signal.SIG_IGN:
            signal.signal(_signal, _stop_at_once)

import tf_env  # noqa: E402,F401 (before TensorFlow loads)
from absl import app, flags  # noqa: E402

from checkpoint import CheckpointError  # noqa: E402
from config import ALGORITHMS, DISTRIBUTIONS, INNER_OPTIMIZERS, REPTILE_DEFAULTS, Config, \
    ConfigError  # noqa: E402
from data_generator import DataError  # noqa: E402
from distribute import ClusterError, JoinInterrupted, WorkerLost  # noqa: E402
from experiment import TrainingStopped, run, set_threads  # noqa: E402
from folder_lock import FolderInUse  # noqa: E402
from networks import NetworkError  # noqa: E402

FLAGS = flags.FLAGS


def _define(define, name, help_text, **extra):
    """Define flag `name` with absl's `define`; its default is Config's, written there only."""
    define(name, Config.__dataclass_fields__[name].default, help=help_text, **extra)


## Dataset/method options
_define(flags.DEFINE_string, 'datasource', 'sinusoid or omniglot or miniimagenet')
_define(flags.DEFINE_integer, 'num_classes', 'number of classes used in classification (e.g. 5-way classification).')
# oracle means task id is input (only suitable for sinusoid)
_define(flags.DEFINE_string, 'baseline', 'oracle, or leave unset for none')

## Training options
_define(flags.DEFINE_integer, 'pretrain_iterations', 'number of pre-training iterations.')
_define(flags.DEFINE_integer, 'metatrain_iterations', 'number of metatraining iterations.')  # 15k for omniglot, 50k for sinusoid
_define(flags.DEFINE_integer, 'meta_batch_size', 'number of tasks sampled per meta-update')
_define(flags.DEFINE_float, 'meta_lr', 'the base learning rate of the generator')
_define(flags.DEFINE_integer, 'update_batch_size', 'number of examples used for inner gradient update (K for K-shot learning).')
_define(flags.DEFINE_float, 'update_lr', 'step size alpha for inner gradient update.')  # 0.1 for omniglot
_define(flags.DEFINE_integer, 'num_updates', 'number of inner gradient updates during training.')

## Model options
_define(flags.DEFINE_string, 'norm', 'batch_norm, layer_norm, or None')
_define(flags.DEFINE_integer, 'num_filters', 'number of filters for conv nets -- 32 for miniimagenet, 64 for omiglot.')
_define(flags.DEFINE_bool, 'conv', 'whether or not to use a convolutional network, only applicable in some cases')
_define(flags.DEFINE_bool, 'max_pool', 'Whether or not to use max pooling rather than strided convolutions')
_define(flags.DEFINE_bool, 'stop_grad', 'if True, do not use second derivatives in meta-optimization (for speed)')

## Logging, saving, and testing options
_define(flags.DEFINE_bool, 'log', 'if false, do not log summaries, for debugging code.')
_define(flags.DEFINE_string, 'logdir', 'directory for summaries and checkpoints.')
_define(flags.DEFINE_bool, 'resume', 'resume training if there is a model available')
_define(flags.DEFINE_bool, 'train', 'True to train, False to test.')
_define(flags.DEFINE_integer, 'test_iter', 'iteration to load model (-1 for latest model)')
_define(flags.DEFINE_bool, 'test_set', 'Set to true to test on the the test set, False for the validation set.')
_define(flags.DEFINE_integer, 'train_update_batch_size', 'number of examples used for gradient update during training (use if you want to test with a different number).')
_define(flags.DEFINE_float, 'train_update_lr', 'value of inner gradient step step during training. (use if you want to test with a different value)')  # 0.1 for omniglot

## New in this port
_define(flags.DEFINE_string, 'data_folder', 'where the prepared data set lives (default ./data/omniglot_resized, or ./data/miniImagenet holding train/ val/ test/)')
_define(flags.DEFINE_bool, 'xla', 'compile the steps of the fully connected nets (sinusoid, --conv=False) with XLA; --xla=False where XLA is unavailable')
_define(flags.DEFINE_integer, 'inter_op_threads', 'TensorFlow ops run side by side (0: TensorFlow\'s default; -1: chosen per configuration, see Config.thread_settings)')
_define(flags.DEFINE_integer, 'intra_op_threads', 'threads within one op (0: TensorFlow\'s default; -1: chosen per configuration)')
_define(flags.DEFINE_enum, 'distribute', 'where training runs: auto (with TF_CONFIG set, one worker of a MultiWorkerMirroredStrategy job; on a host with several GPUs, all of them; else one device), one_device, mirrored (every GPU of this host), or multi_worker (needs TF_CONFIG); see README "Scaling out"', enum_values=DISTRIBUTIONS)
_define(flags.DEFINE_integer, 'worker_timeout', 'seconds a worker of a multi-worker job waits for the others to join, and for one that stops answering before all stop')
_define(flags.DEFINE_bool, 'progress', 'show progress on stderr (what the printed numbers are, compiling, iteration, iterations/s, time left; after a test, the labelled results): a live bar on a terminal, a line a minute in a log file; stdout keeps the reference\'s lines')
_define(flags.DEFINE_string, 'model', 'meta-learn your own network: module:function or path/to/file.py:function, a function taking the Config and returning a Keras model or a networks.Network, or a saved Keras model path/to/model.keras (see README "Your own model"); unset: the reference\'s network')
_define(flags.DEFINE_string, 'export_model', 'with --model (a Keras model) and --train=False: instead of testing, write the checkpoint\'s meta-learned initial weights into the model and save it to this path, .keras (the whole model) or .weights.h5 (its weights)')
_define(flags.DEFINE_integer, 'seed', 'seed numpy, random and TensorFlow for a repeatable run (unset: unseeded, as the reference)')

## Reptile (reptile.py; README "Reptile"). Unset: the data source's default.
def _per_source(name):
    """'(default: omniglot 5, miniimagenet 8, sinusoid 5)', from Config's REPTILE_DEFAULTS."""
    return '(default: %s)' % ', '.join('%s %s' % (source, REPTILE_DEFAULTS[source][name])
                                       for source in ('omniglot', 'miniimagenet', 'sinusoid'))


_define(flags.DEFINE_enum, 'algorithm', 'maml, or reptile (Nichol et al. 2018, batched); Reptile reads --update_lr (its inner learning rate), --meta_batch_size, --metatrain_iterations and --update_batch_size (test shots) too', enum_values=ALGORITHMS)
_define(flags.DEFINE_integer, 'inner_iters', 'Reptile: inner optimiser steps per task ' + _per_source('inner_iters'))
_define(flags.DEFINE_integer, 'inner_batch', 'Reptile: examples per inner mini-batch, drawn from the task\'s training samples ' + _per_source('inner_batch'))
_define(flags.DEFINE_float, 'meta_step', 'Reptile: meta step size epsilon at the first iteration ' + _per_source('meta_step'))
_define(flags.DEFINE_float, 'meta_step_final', 'Reptile: epsilon at the last iteration, reached linearly ' + _per_source('meta_step_final'))
_define(flags.DEFINE_integer, 'train_shots', 'Reptile: training samples per class of a task, the inner mini-batches\' pool (sinusoid: points per task) ' + _per_source('train_shots'))
_define(flags.DEFINE_integer, 'eval_iters', 'Reptile: inner steps when testing ' + _per_source('eval_iters'))
_define(flags.DEFINE_integer, 'eval_batch', 'Reptile: mini-batch size when testing ' + _per_source('eval_batch'))
_define(flags.DEFINE_enum, 'inner_optimizer', 'Reptile: the inner optimiser, adam (beta1=0, as the paper; fresh state for each task) or sgd ' + _per_source('inner_optimizer'), enum_values=INNER_OPTIMIZERS)
_define(flags.DEFINE_bool, 'transductive', 'Reptile: transductive testing, batch-norm statistics over all the query examples at once (the paper\'s --transductive; checked now, used once testing is supported)')


def config_from_flags():
    return Config(**{name: FLAGS[name].value for name in Config.__dataclass_fields__}).validate()


def print_error(message):
    """One `error:` line on stderr: a flag value's line breaks are shown escaped."""
    message = str(message).replace('\r', '\\r').replace('\n', '\\n')
    print('error: ' + message, file=sys.stderr, flush=True)


def parse_flags(argv):
    """absl's parsing, with a bad flag as one error line (absl prints two)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print_error('%s (see --helpshort for the flags)' % e)
        sys.exit(1)


def main(argv):
    if len(argv) > 1:
        print_error('unexpected arguments: %s (flags are given as --name=value; see '
                    '--helpshort)' % ' '.join(argv[1:]))
        return 1
    try:
        config = config_from_flags()
        set_threads(config)
        return run(config)
    except (ClusterError, WorkerLost) as e:
        # Ended at once: TensorFlow's own shutdown would wait for the lost
        # workers and log their failure again after this line.
        print_error(e)
        sys.stdout.flush()
        os._exit(1)
    except JoinInterrupted as e:
        # Ctrl-C or SIGTERM while the workers gathered: at once, as above.
        print(e, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(e.status)
    except (ConfigError, DataError, CheckpointError, TrainingStopped, FolderInUse,
            NetworkError) as e:
        print_error(e)
        return 1
    except KeyboardInterrupt:
        # A second Ctrl-C during training (outside it, _stop_at_once ends the
        # process first): stop at once. Checkpoints are written atomically,
        # so the last complete one is intact.
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED


HELP_FLAGS = {'--help', '-h', '-?', '--helpshort', '--helpfull', '--helpxml'}

if __name__ == '__main__':
    try:
        app.run(main, flags_parser=parse_flags)
    except SystemExit as e:
        # absl exits with status 1 after printing the help it was asked for.
        if e.code == 1 and HELP_FLAGS & set(sys.argv[1:]):
            sys.exit(0)
        raise
