"""One explicit, frozen configuration, built from the command line in main.py only.

The model and data code take a Config instead of reading global flags, so they
can be imported and driven from a notebook or a test. Everything derived from
the flags (network shape, input and output sizes, the iterations a run makes)
is a property here, so a Config built anywhere behaves as one built from the
command line; variants are made with `dataclasses.replace`.
"""
import collections
import dataclasses
import math
import numbers
import os
import re
import typing
from typing import Optional

DATASOURCES = ('sinusoid', 'omniglot', 'miniimagenet')
NORMS = ('batch_norm', 'layer_norm', 'None')
DISTRIBUTIONS = ('auto', 'one_device', 'mirrored', 'multi_worker')  # distribute.choose
ALGORITHMS = ('maml', 'reptile')
INNER_OPTIMIZERS = ('adam', 'sgd')  # Reptile's inner loop (reptile.py)
# Reptile's flags left unset take these per data source: Omniglot's and
# MiniImagenet's are the paper's 5-way 1-shot settings (Nichol et al. 2018,
# the supervised-reptile code's README, the transductive runs). The paper's
# code has no sinusoid: those are this project's choice, 10 points per task
# trained on whole in 5 steps, the meta step 0.1 annealed to 0.
REPTILE_DEFAULTS = {
    'omniglot': dict(inner_iters=5, inner_batch=10, meta_step=1.0, meta_step_final=0.0,
                     train_shots=10, eval_iters=50, eval_batch=5, inner_optimizer='adam'),
    'miniimagenet': dict(inner_iters=8, inner_batch=10, meta_step=1.0, meta_step_final=0.0,
                         train_shots=15, eval_iters=50, eval_batch=5, inner_optimizer='adam'),
    'sinusoid': dict(inner_iters=5, inner_batch=10, meta_step=0.1, meta_step_final=0.0,
                     train_shots=10, eval_iters=10, eval_batch=10, inner_optimizer='adam'),
}
REPTILE_FLAGS = tuple(REPTILE_DEFAULTS['omniglot']) + ('transductive',)
INT32_MAX = 2 ** 31 - 1  # TensorFlow and numpy take the sizes and counts as int32
# The inner loop is unrolled into the compiled training step: its tracing time
# and memory grow with each step (20 steps of the sinusoid net already take
# half a minute to trace). The paper used at most 10.
MAX_NUM_UPDATES = 100
MAX_THREADS = 4096  # TensorFlow starts that many threads for a pool
# --model's forms (model_source.py): module:function, path/to/file.py:function, or a
# saved Keras model file.
MODEL_SPEC = re.compile(r'^(?P<module>.+):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$')
KERAS_SUFFIX = '.keras'


ReptileSettings = collections.namedtuple('ReptileSettings', REPTILE_FLAGS)


class ConfigError(ValueError):
    """A flag value or combination that cannot work; the message says the fix."""


def available_memory():
    """Bytes of memory this process can still take (None if unknown): Linux's
    MemAvailable, capped by a cgroup's limit (a container), else the physical memory."""
    available = None
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
        except (AttributeError, ValueError, OSError):
            return None
    try:
        with open('/sys/fs/cgroup/memory.max') as f:
            limit = f.read().strip()
        with open('/sys/fs/cgroup/memory.current') as f:
            used = int(f.read())
        if limit != 'max':
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def _one_of(choices):
    """'a, b or c'."""
    return '%s or %s' % (', '.join(choices[:-1]), choices[-1])


def _type_of(field):
    """The Python type a field takes, and whether None is allowed too."""
    args = [a for a in typing.get_args(field.type) if a is not type(None)]
    return (args[0], True) if args else (field.type, False)


def _has_type(value, kind):
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, kind)


@dataclasses.dataclass(frozen=True)
class Config:
    # The reference's flags, with its defaults (SPEC section 2).
    datasource: str = 'sinusoid'
    num_classes: int = 5
    baseline: Optional[str] = None
    pretrain_iterations: int = 0
    metatrain_iterations: int = 15000
    meta_batch_size: int = 25
    meta_lr: float = 0.001
    update_batch_size: int = 5
    update_lr: float = 1e-3
    num_updates: int = 1
    norm: str = 'batch_norm'
    num_filters: int = 64
    conv: bool = True
    max_pool: bool = False
    stop_grad: bool = False
    log: bool = True
    logdir: str = '/tmp/data'
    resume: bool = True
    train: bool = True
    test_iter: int = -1
    test_set: bool = False
    train_update_batch_size: int = -1
    train_update_lr: float = -1
    # New flags.
    data_folder: Optional[str] = None  # default: the reference's ./data/... folder
    seed: Optional[int] = None         # None keeps the reference's unseeded behaviour
    xla: bool = True                   # compile the fully connected nets' steps with XLA
    inter_op_threads: int = -1         # -1: chosen per configuration (thread_settings)
    intra_op_threads: int = -1
    distribute: str = 'auto'           # DISTRIBUTIONS; see distribute.choose
    worker_timeout: int = 60           # seconds (multi-worker jobs)
    progress: bool = True              # progress on stderr (progress.py)
    model: Optional[str] = None        # the network to meta-learn (model_source.py)
    export_model: Optional[str] = None  # with --train=False: save the meta-learned model here
    # Reptile (reptile.py). None: the data source's REPTILE_DEFAULTS (see `reptile`).
    algorithm: str = 'maml'            # ALGORITHMS
    inner_iters: Optional[int] = None
    inner_batch: Optional[int] = None
    meta_step: Optional[float] = None
    meta_step_final: Optional[float] = None
    train_shots: Optional[int] = None
    eval_iters: Optional[int] = None
    eval_batch: Optional[int] = None
    inner_optimizer: Optional[str] = None  # INNER_OPTIMIZERS
    transductive: bool = False

    @classmethod
    def from_dict(cls, values, **overrides):
        """A Config from a dict of flag values (a golden file's flags, say); other keys are ignored."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**dict(known, **overrides))

    def validate(self):
        """self if these flags can work; else ConfigError naming the flag and the fix.
        Checked before anything is built or written, sizes against the memory too."""
        for field in dataclasses.fields(self):
            value, (kind, optional) = getattr(self, field.name), _type_of(field)
            if not (_has_type(value, kind) or (optional and value is None)):
                raise ConfigError('--%s=%r: expected %s' % (field.name, value, {
                    bool: 'true or false', int: 'an integer', float: 'a number',
                    str: 'a string'}[kind]))
            if kind is int and value is not None and value > INT32_MAX \
                    and field.name != 'seed':
                raise ConfigError('--%s=%d is too large: at most %d'
                                  % (field.name, value, INT32_MAX))
            if kind is str and value is not None and '\0' in value:
                raise ConfigError('--%s=%r holds a NUL character: give a path without it'
                                  % (field.name, value))
        if self.datasource not in DATASOURCES:
            raise ConfigError('unknown --datasource=%s: use one of %s'
                              % (self.datasource, ', '.join(DATASOURCES)))
        if self.norm not in NORMS:
            raise ConfigError('unknown --norm=%s: use %s' % (self.norm, _one_of(NORMS)))
        if self.baseline not in (None, 'oracle'):
            raise ConfigError('unknown --baseline=%s: use oracle, or leave it unset' % self.baseline)
        if self.baseline == 'oracle' and self.datasource != 'sinusoid':
            raise ConfigError('--baseline=oracle needs --datasource=sinusoid (it appends the '
                              'sine amplitude and phase to the input)')
        for name in ('num_classes', 'meta_batch_size', 'update_batch_size', 'num_updates',
                     'num_filters'):
            if getattr(self, name) <= 0:
                raise ConfigError('--%s=%s must be positive' % (name, getattr(self, name)))
        for name in ('pretrain_iterations', 'metatrain_iterations'):
            if getattr(self, name) < 0:
                raise ConfigError('--%s=%s must be zero or positive' % (name, getattr(self, name)))
        for name in ('inter_op_threads', 'intra_op_threads'):
            if not -1 <= getattr(self, name) <= MAX_THREADS:
                raise ConfigError('--%s=%s: use a thread count up to %d, 0 for TensorFlow\'s '
                                  'default or -1 to choose per configuration'
                                  % (name, getattr(self, name), MAX_THREADS))
        if self.distribute not in DISTRIBUTIONS:
            raise ConfigError('unknown --distribute=%s: use %s'
                              % (self.distribute, _one_of(DISTRIBUTIONS)))
        if self.worker_timeout <= 0:
            raise ConfigError('--worker_timeout=%d must be positive (seconds)' % self.worker_timeout)
        if self.seed is not None and not 0 <= self.seed < 2 ** 32:
            raise ConfigError('--seed=%d: numpy takes seeds from 0 to 2**32 - 1' % self.seed)
        for name in ('meta_lr', 'update_lr'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError('--%s=%s: a learning rate must be a positive number'
                                  % (name, value))
        if self.train_update_lr != -1 and not (math.isfinite(self.train_update_lr)
                                               and self.train_update_lr > 0):
            raise ConfigError('--train_update_lr=%s: give the positive --update_lr the model '
                              'was trained with, or -1 for --update_lr' % self.train_update_lr)
        if self.train_update_batch_size != -1 and self.train_update_batch_size <= 0:
            raise ConfigError('--train_update_batch_size=%d: give the positive '
                              '--update_batch_size the model was trained with, or -1 for '
                              '--update_batch_size' % self.train_update_batch_size)
        if self.test_iter < -1:
            raise ConfigError('--test_iter=%d: give a checkpoint\'s iteration, or -1 for the '
                              'latest' % self.test_iter)
        if self.num_updates > MAX_NUM_UPDATES:
            raise ConfigError('--num_updates=%d: at most %d (every inner step is unrolled into '
                              'the compiled step, whose tracing time and memory grow with it)'
                              % (self.num_updates, MAX_NUM_UPDATES))
        if self.train and self.pretrain_iterations + self.metatrain_iterations == 0:
            raise ConfigError('nothing to train: --pretrain_iterations and --metatrain_iterations '
                              'are both 0 (use --train=False to test)')
        if self.datasource != 'sinusoid' and self.num_classes < 2:
            raise ConfigError('--num_classes=%d: classification needs at least 2 classes'
                              % self.num_classes)
        if self.model is not None and not (self.model.endswith(KERAS_SUFFIX)
                                           or MODEL_SPEC.match(self.model)):
            raise ConfigError('--model=%s: give module:function, path/to/file.py:function or a '
                              'saved Keras model path/to/model.keras' % self.model)
        if self.export_model is not None:
            if self.model is None or self.train:
                raise ConfigError('--export_model=%s: give it with the --model you trained and '
                                  '--train=False' % self.export_model)
            if not self.export_model.endswith(('.keras', '.weights.h5')):
                raise ConfigError('--export_model=%s: give a path ending in .keras (the whole '
                                  'model) or .weights.h5 (its weights)' % self.export_model)
        self._validate_reptile()
        self._check_memory(available_memory())
        return self

    def _validate_reptile(self):
        if self.algorithm not in ALGORITHMS:
            raise ConfigError('unknown --algorithm=%s: use %s'
                              % (self.algorithm, _one_of(ALGORITHMS)))
        if self.algorithm != 'reptile':
            given = [name for name in REPTILE_FLAGS
                     if getattr(self, name) not in (None, False)]
            if given:
                raise ConfigError('--%s is a Reptile flag: add --algorithm=reptile, or leave it '
                                  'out for MAML' % given[0])
            return
        settings = self.reptile
        for name in ('inner_iters', 'inner_batch', 'train_shots', 'eval_iters', 'eval_batch'):
            if getattr(settings, name) <= 0:
                raise ConfigError('--%s=%s must be positive' % (name, getattr(settings, name)))
        for name in ('meta_step', 'meta_step_final'):
            value = getattr(settings, name)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ConfigError('--%s=%s: a meta step size is a number from 0 to 1 (the '
                                  'fraction of the way to the adapted weights)' % (name, value))
        if settings.inner_optimizer not in INNER_OPTIMIZERS:
            raise ConfigError('unknown --inner_optimizer=%s: use %s'
                              % (settings.inner_optimizer, _one_of(INNER_OPTIMIZERS)))

    @property
    def reptile(self):
        """Reptile's settings: each Reptile flag as given, or its data source's default."""
        defaults = REPTILE_DEFAULTS.get(self.datasource, REPTILE_DEFAULTS['omniglot'])
        return ReptileSettings(**{
            name: default if getattr(self, name) is None else getattr(self, name)
            for name, default in defaults.items()}, transductive=self.transductive)

    def _check_memory(self, available):
        needed = self.memory_needed()
        if available is not None and needed > available:
            sizes = ['meta_batch_size', 'update_batch_size', 'num_updates']
            sizes += ['num_classes'] if self.classification else []
            sizes += ['num_filters'] if self.conv_net and self.model is None else []
            counted = ' (the meta-batch alone: the --model network is not counted)' \
                if self.model is not None else ''
            raise ConfigError('%s need at least %.3g GB of memory for one step%s, more than the '
                              '%.3g GB available: make them smaller' % (
                                  ', '.join('--%s=%d' % (n, getattr(self, n)) for n in sizes),
                                  needed / 1e9, counted, available / 1e9))

    def memory_needed(self):
        """A lower bound of the bytes one step holds at once (float32): the
        meta-batch, the weights with one fast copy per task and inner step, and
        every layer's output per example and inner step, all kept for the
        meta-gradient. A run needs more (TensorFlow, the images, gradients).
        With --model the network is unknown until it is loaded (after this
        check): its weights and outputs are not counted, only the meta-batch."""
        tasks = self.meta_batch_size if self.train else 1
        examples = (self.num_classes if self.classification else 1) * self.num_samples_per_class
        meta_training = self.train and self.num_iterations > self.num_pretrain_iterations
        steps = self.num_updates if meta_training else 1
        weights, activations = self._network_sizes()
        floats = (tasks * examples * (self.dim_input + self.dim_output)
                  + weights * (1 + tasks * steps)
                  + tasks * examples * activations * steps)
        return 4 * floats

    def _network_sizes(self):
        """(weights, one example's layer outputs) of the network maml.MAML builds;
        (0, 0) for a --model, which is not known here."""
        if self.model is not None:
            return 0, 0
        if not self.conv_net:
            dims = [self.dim_input] + ([256, 128, 64, 64] if self.classification else [40, 40]) \
                + [self.dim_output]
            return (sum(a * b + b for a, b in zip(dims, dims[1:])), sum(dims[1:]))
        filters, size, outputs = self.num_filters, self.img_size, 0
        for _ in range(4):
            if self.max_pool:  # the convolution at full size, then a 2x2 pool
                outputs += size * size * filters
                size //= 2
            else:  # a strided convolution
                size = (size + 1) // 2
                outputs += size * size * filters
        head = filters * size * size if self.flattened_head else filters
        weights = (9 * self.channels * filters + 3 * 9 * filters * filters + 4 * filters
                   + (head + 1) * self.dim_output)
        return weights, outputs + self.dim_output

    def thread_settings(self, cpu_count):
        """(inter_op, intra_op) thread counts for TensorFlow; 0 keeps its default.

        Meta-training Omniglot with at most 10 images per task and split runs
        one tiny convolution per task and layer: running cpu_count of them side
        by side, one core each, beats splitting each over all cores. With more
        images (20-way, 5-shot, MiniImagenet) each op is big enough to use every
        core, and testing runs one task at a time: those keep TensorFlow's
        default. The measurements are in results/benchmarks.md.
        """
        small_tasks = self.num_classes * self.update_batch_size <= 10
        auto = (cpu_count, 1) if (self.train and self.conv and self.datasource == 'omniglot'
                                  and self.meta_batch_size > 1 and small_tasks) else (0, 0)
        inter = auto[0] if self.inter_op_threads < 0 else self.inter_op_threads
        intra = auto[1] if self.intra_op_threads < 0 else self.intra_op_threads
        return inter, intra

    # ------------------------------------------------------------ the run
    @property
    def num_pretrain_iterations(self):
        """Pre-training iterations the run makes: the oracle only pretrains, so its
        meta-training iterations count as pre-training (the reference rewrote its flags)."""
        if self.baseline == 'oracle':
            return self.pretrain_iterations + self.metatrain_iterations
        return self.pretrain_iterations

    @property
    def num_iterations(self):
        """Every training iteration of the run, pre-training first."""
        return self.pretrain_iterations + self.metatrain_iterations

    # ---------------------------------------------------------- the network
    @property
    def classification(self):
        return self.datasource != 'sinusoid'

    @property
    def conv_net(self):
        """The four-block conv net (image data with --conv); otherwise fully connected."""
        return self.classification and self.conv

    @property
    def channels(self):
        return 3 if self.datasource == 'miniimagenet' else 1

    @property
    def img_size(self):
        """Side of the square input images (None for sinusoid)."""
        return {'omniglot': 28, 'miniimagenet': 84}.get(self.datasource)

    @property
    def dim_input(self):
        """Features of one example: the flattened image, or x (plus amplitude and phase for the oracle)."""
        if self.classification:
            return self.img_size * self.img_size * self.channels
        return 3 if self.baseline == 'oracle' else 1

    @property
    def dim_output(self):
        return self.num_classes if self.classification else 1

    @property
    def flattened_head(self):
        """MiniImagenet's conv net flattens its last feature map into the output
        layer; Omniglot's averages it over space (the reference's two heads)."""
        return self.datasource == 'miniimagenet'

    @property
    def meta_gradient_clip(self):
        """The reference clipped MiniImagenet's meta-gradient elementwise to
        [-10, 10] before Adam; None: no clipping."""
        return 10.0 if self.datasource == 'miniimagenet' else None

    @property
    def jit_compile(self):
        """XLA for the reference's fully connected nets' steps only: it fuses their
        many tiny ops, while on the conv nets it compiled for minutes and ran
        slower; a --model is compiled without it (not every layer compiles)."""
        return bool(self.xla) and not self.conv_net and self.model is None

    @property
    def test_num_updates(self):
        """Inner steps evaluated (and summarised); training uses num_updates of them."""
        if self.datasource == 'sinusoid':
            return 5 if self.train else 10
        if self.datasource == 'miniimagenet':
            return 1 if self.train else 10
        return 10

    @property
    def eval_steps(self):
        return max(self.num_updates, self.test_num_updates)

    @property
    def num_samples_per_class(self):
        """Examples per class in one task: K for split a plus split b's count."""
        if self.datasource == 'miniimagenet' and self.train:
            return self.update_batch_size + 15
        return self.update_batch_size * 2

    @property
    def exp_string(self):
        """The experiment folder's name, exactly as the reference built it (plus the
        model's name with --model)."""
        train_ubs = self.update_batch_size if self.train_update_batch_size == -1 \
            else self.train_update_batch_size
        train_lr = self.update_lr if self.train_update_lr == -1 else self.train_update_lr
        name = ('cls_' + str(self.num_classes) + '.mbs_' + str(self.meta_batch_size)
                + '.ubs_' + str(train_ubs) + '.numstep' + str(self.num_updates)
                + '.updatelr' + str(train_lr))
        if self.num_filters != 64:
            name += 'hidden' + str(self.num_filters)
        if self.max_pool:
            name += 'maxpool'
        if self.stop_grad:
            name += 'stopgrad'
        if self.baseline:
            name += self.baseline
        name += {'batch_norm': 'batchnorm', 'layer_norm': 'layernorm', 'None': 'nonorm'}[self.norm]
        if self.model is not None:
            # Never the reference net's folder (nor its checkpoints to resume).
            name += '.model_' + self.model_name
        return name

    @property
    def model_name(self):
        """--model in short for the experiment folder: module.function or the file's name,
        in letters, digits, _ . and - only."""
        match = MODEL_SPEC.match(self.model)
        if match:
            module = match.group('module')
            if module.endswith('.py'):
                module = os.path.splitext(os.path.basename(module))[0]
            name = module.replace(os.sep, '.').rsplit('.', 1)[-1] + '.' + match.group('function')
        else:
            name = os.path.splitext(os.path.basename(self.model))[0]
        return re.sub(r'[^A-Za-z0-9_.-]', '_', name)
