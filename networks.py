"""Networks that MAML meta-learns: the model apart from the algorithm.

A network is what `maml.MAML` needs to know of a model:
- `initial_weights()`: every meta-learned variable, by key, in creation order
  (the dict that `forward(inp, weights)` reads, as in the reference);
- `adapted`: the keys the inner loop adapts. The reference adapts the conv and
  dense weights and biases; its normalisation offsets and scales are
  meta-learned only (they are not in the inner loop's fast weights);
- `checkpoint_names`: key -> the variable's name in checkpoints;
- `forward_tasks(inp, weights, identical_tasks=False)`: a whole meta-batch,
  inp [tasks, examples, ...] -> outputs [tasks, examples, out]. `weights` holds
  the adapted keys (MAML) or any keys of initial_weights() (Reptile trains
  them all), each either shared (the variable's shape) or one copy per task
  (a leading task axis: the fast weights); the network reads the variables
  not given itself. identical_tasks: the per-task copies are still all
  equal (before the first inner step), a hint a network may use.

Two kinds here: `ReferenceNetwork`, the reference's fully connected and conv
nets with their TF1 checkpoint names, batched over tasks in single ops; and
`ForwardFunction`, any `forward(inp, weights)` written for ONE task (the
reference's own style), mapped over the meta-batch's tasks. keras_network.py
adapts a Keras model the same way.
"""
import numpy as np
import tensorflow as tf

from utils import batched_dense, conv_block, glorot_uniform, normalize, standard_normal, \
    truncated_normal


class NetworkError(ValueError):
    """A model that MAML cannot meta-learn as given; the message says why and what to do."""


class Network:
    """The interface (see the module's docstring); subclasses fill it in."""
    adapted = ()
    checkpoint_names = {}

    def initial_weights(self):
        raise NotImplementedError

    def forward_tasks(self, inp, weights, identical_tasks=False):
        raise NotImplementedError


# ------------------------------------------------------------- the reference's
class ReferenceNetwork(Network):
    """The reference's nets: fc (sinusoid, or conv=False) or the 4-block conv net.

    Every op is batched over the meta-batch's tasks (utils.py): one set of ops
    for all tasks, statistics per task.
    """

    def __init__(self, config, seed=None):
        self.config = config
        self.dim_input, self.dim_output = config.dim_input, config.dim_output
        rng = np.random.default_rng(seed)
        # tf1_names maps each trainable variable to its name in the reference's
        # checkpoints, in the reference's creation order.
        self.tf1_names = {}
        self._keys = {}  # variable ref -> key in initial_weights()
        if config.conv_net:
            self.channels, self.img_size = config.channels, config.img_size
            self.weights = self._construct_conv_weights(rng)
            norm_scopes = ['0', '1', '2', '3']
            norm_sizes = [config.num_filters] * 4
        else:
            self.dim_hidden = [40, 40] if not config.classification else [256, 128, 64, 64]
            self.weights = self._construct_fc_weights(rng)
            # The reference's fc net names its norm scopes 0, 2, 3, ... (no 1).
            norm_scopes = ['0'] + [str(i + 1) for i in range(1, len(self.dim_hidden))]
            norm_sizes = self.dim_hidden
        self.norm_params = self._construct_norm_params(norm_scopes, norm_sizes)
        self.norm_scopes = norm_scopes
        self.adapted = tuple(self.weights)
        self.checkpoint_names = {self._keys[ref]: name for ref, name in self.tf1_names.items()}

    def initial_weights(self):
        return {self._keys[ref]: ref.deref() for ref in self.tf1_names}

    # ---------------------------------------------------------------- weights
    def _new_variable(self, key, value, tf1_name, weights=None):
        var = tf.Variable(value, name=key.rsplit('/', 1)[-1])
        self.tf1_names[var.ref()] = tf1_name
        self._keys[var.ref()] = key
        if weights is not None:
            weights[key] = var
        return var

    def _unnamed(self):
        # TF1 gave unnamed variables `Variable`, `Variable_1`, ... in order.
        count = sum(1 for n in self.tf1_names.values() if n.startswith('model/Variable'))
        return 'model/Variable' + ('_%d' % count if count else '')

    def _construct_fc_weights(self, rng):
        weights = {}
        dims = [self.dim_input] + self.dim_hidden + [self.dim_output]
        for i in range(len(dims) - 1):
            self._new_variable('w%d' % (i + 1), truncated_normal([dims[i], dims[i + 1]], 0.01, rng),
                               self._unnamed(), weights)
            self._new_variable('b%d' % (i + 1), tf.zeros([dims[i + 1]]), self._unnamed(), weights)
        return weights

    def _construct_conv_weights(self, rng):
        weights = {}
        filters, channels = self.config.num_filters, self.channels
        for i in range(1, 5):
            shape = [3, 3, channels if i == 1 else filters, filters]
            self._new_variable('conv%d' % i, glorot_uniform(shape, rng), 'model/conv%d' % i, weights)
            self._new_variable('b%d' % i, tf.zeros([filters]), self._unnamed(), weights)
        if self.config.flattened_head:
            # The last feature map flattened: 5x5 after four 2x2 max pools of 84x84.
            w5 = glorot_uniform([filters * self._final_spatial() ** 2, self.dim_output], rng)
        else:
            w5 = standard_normal([filters, self.dim_output], rng)  # std 1.0, as the reference
        self._new_variable('w5', w5, 'model/w5', weights)
        self._new_variable('b5', tf.zeros([self.dim_output]), 'model/b5', weights)
        return weights

    def _final_spatial(self):
        size = self.img_size
        for _ in range(4):
            size = (size + 1) // 2 if not self.config.max_pool else size // 2
        return size

    def _construct_norm_params(self, scopes, sizes):
        params = {}
        for scope, size in zip(scopes, sizes):
            if self.config.norm == 'None':
                params[scope] = None
                continue
            params[scope] = {'beta': self._new_variable(
                '%s/beta' % scope, tf.zeros([size]), 'model/%s/beta' % scope)}
            if self.config.norm == 'layer_norm':
                params[scope]['gamma'] = self._new_variable(
                    '%s/gamma' % scope, tf.ones([size]), 'model/%s/gamma' % scope)
        return params

    # ---------------------------------------------------------------- forward
    def forward_tasks(self, inp, weights, identical_tasks=False):
        """inp [tasks, examples, dim_input] -> logits or predictions [tasks, examples, dim_output].

        weights: dict of shared tensors (the variables) or of per-task tensors
        with a leading task axis (fast weights). identical_tasks: the per-task
        weights are still copies of one set (before the first inner step), so
        convolutions may run on the whole meta-batch at once.
        """
        norm_params = self._given_norm_params(weights)
        if self.config.conv_net:
            return self._forward_conv(inp, weights, norm_params, identical_tasks)
        return self._forward_fc(inp, weights, norm_params)

    def _given_norm_params(self, weights):
        """The norm offsets and scales, from `weights` where it holds them (keys
        '0/beta', ...: Reptile's fast weights), else the variables."""
        return {scope: None if params is None else
                {name: weights.get('%s/%s' % (scope, name), var) for name, var in params.items()}
                for scope, params in self.norm_params.items()}

    def _forward_fc(self, inp, weights, norm_params):
        hidden = inp
        for i, scope in enumerate(self.norm_scopes):
            hidden = batched_dense(hidden, weights['w%d' % (i + 1)], weights['b%d' % (i + 1)])
            hidden = normalize(hidden, self.config.norm, norm_params[scope])
        last = len(self.norm_scopes) + 1
        return batched_dense(hidden, weights['w%d' % last], weights['b%d' % last])

    def _forward_conv(self, inp, weights, norm_params, identical_tasks=False):
        shape = tf.shape(inp)
        hidden = tf.reshape(inp, tf.concat(
            [shape[:2], [self.img_size, self.img_size, self.channels]], 0))
        for i, scope in enumerate(self.norm_scopes):
            hidden = conv_block(hidden, weights['conv%d' % (i + 1)], weights['b%d' % (i + 1)],
                                self.config.norm, norm_params[scope], self.config.max_pool,
                                identical_tasks, fused_norm=self.config.stop_grad)
        if self.config.flattened_head:
            hidden = tf.reshape(hidden, tf.concat([shape[:2], [-1]], 0))
        else:
            hidden = tf.reduce_mean(hidden, [2, 3])
        return batched_dense(hidden, weights['w5'], weights['b5'])


# ------------------------------------------------------ one task's forward
class ForwardFunction(Network):
    """A network given as `forward(inp, weights)` for ONE task, the reference's style.

    forward: inp [examples, ...] and a dict key -> tensor -> outputs
    [examples, out]; it must only compute (no variables, no random numbers),
    as MAML calls it with fast weights that are tensors.
    initial_weights: dict key -> initial value; each becomes a tf.Variable.
    adapted: the keys the inner loop adapts (default: all).
    checkpoint_names: key -> name in checkpoints (default: the key).

    A meta-batch runs task by task, unrolled in the compiled step (one copy of
    the forward pass per task), which measured faster than tf.vectorized_map
    (map_tasks='vectorized', kept to compare) and is exact.
    """

    def __init__(self, forward, initial_weights, adapted=None, checkpoint_names=None,
                 map_tasks='loop'):
        if map_tasks not in ('loop', 'vectorized'):
            raise NetworkError("map_tasks is %r: use 'loop' or 'vectorized'" % (map_tasks,))
        self.forward = forward
        self._variables = {k: v if isinstance(v, tf.Variable) else tf.Variable(v, name=k)
                           for k, v in initial_weights.items()}
        self.adapted = tuple(self._variables if adapted is None else adapted)
        unknown = [k for k in self.adapted if k not in self._variables]
        if unknown:
            raise NetworkError('adapted names %s are not among the initial weights %s'
                               % (unknown, list(self._variables)))
        names = dict(checkpoint_names or {})
        self.checkpoint_names = {k: names.get(k, k) for k in self._variables}
        self.map_tasks = map_tasks

    def initial_weights(self):
        return dict(self._variables)

    def forward_tasks(self, inp, weights, identical_tasks=False):
        full = {**self._variables, **weights}
        per_task = {k: w for k, w in weights.items()
                    if w.shape.rank == self._variables[k].shape.rank + 1}
        shared = {k: w for k, w in full.items() if k not in per_task}
        if self.map_tasks == 'vectorized':
            return tf.vectorized_map(
                lambda args: self.forward(args[0], {**shared, **args[1]}), (inp, per_task))
        # unstack rather than indexing: the gradient of x[i] is a full-size
        # tensor per task, which makes the backward pass quadratic in the tasks.
        tasks = tf.unstack(inp)
        copies = {k: tf.unstack(w) for k, w in per_task.items()}
        return tf.stack([self.forward(x, {**shared, **{k: c[i] for k, c in copies.items()}})
                         for i, x in enumerate(tasks)])
