"""Reptile (Nichol, Achiam & Schulman 2018, Algorithm 2, batched) on any network.

One meta-step: every task of the meta-batch starts from the meta-learned
weights phi and takes `inner_iters` steps of an inner optimiser, each on one
mini-batch of the task's training samples, giving W_i; then
phi <- phi + epsilon * mean_i(W_i - phi), epsilon annealed linearly over the
run (`meta_step_size`). First order by nature: no gradient flows through the
inner loop.

The inner loop trains EVERY variable of the network (normalisation offsets and
scales too), unlike MAML's, which adapts `network.adapted` only. The tasks run
as one batch, as in maml.py: the fast weights carry a leading task axis, the
loss is summed over tasks so that each copy's gradient is its own task's, and
batch norm takes each task's statistics over its mini-batch. The inner loss is
the mean over the mini-batch (the paper's code), not MAML's per-example
cross-entropy over K.

The inner Adam keeps its state per task (each task starts with v = 0, t = 0),
so the tasks are independent and can be batched; the paper's code carried one
Adam's state from task to task. tests/golden/README.md section 4 is the exact
definition this implements.
"""
import numpy as np
import tensorflow as tf

from config import ConfigError
from networks import ReferenceNetwork

ADAM_BETA2 = 0.999
ADAM_EPSILON = 1e-8
INNER_LOSSES = {True: 'softmax_xent_mean', False: 'mse_mean'}  # by config.classification


def refuse_where_unsupported(config, what):
    """A ConfigError if `config` asks for Reptile in `what`, which runs MAML only so far."""
    if config.algorithm == 'reptile':
        raise ConfigError('--algorithm=reptile: %s is not supported yet (only one meta-step '
                          'from Python, reptile.Reptile; see README "Reptile")' % what)


def meta_step_size(config, iteration):
    """epsilon at 0-based meta-training `iteration`: linear from --meta_step at
    0 towards --meta_step_final at --metatrain_iterations (the paper's code)."""
    settings = config.reptile
    frac = iteration / config.metatrain_iterations
    return frac * settings.meta_step_final + (1 - frac) * settings.meta_step


def mini_batch_indices(num_samples, inner_batch, inner_iters, rng):
    """[inner_iters, inner_batch] indices into one task's num_samples training
    samples, drawn as the paper's code draws mini-batches: shuffle, take
    consecutive chunks, reshuffle when the samples run out (so one batch may
    straddle two shuffles and hold a sample twice). rng: a numpy Generator."""
    needed = inner_batch * inner_iters
    shuffles = -(-needed // num_samples)  # ceil
    order = np.concatenate([rng.permutation(num_samples) for _ in range(shuffles)])
    return order[:needed].reshape(inner_iters, inner_batch)


def task_mini_batches(inputs, labels, inner_batch, inner_iters, rng):
    """Each task's inner mini-batches from its training samples: inputs
    [tasks, samples, dim_input] and labels [tasks, samples, dim_output] ->
    [tasks, inner_iters, inner_batch, ...], what `Reptile.metatrain_step` takes."""
    picks = np.stack([mini_batch_indices(inputs.shape[1], inner_batch, inner_iters, rng)
                      for _ in range(inputs.shape[0])])
    tasks = np.arange(inputs.shape[0])[:, None, None]
    return inputs[tasks, picks], labels[tasks, picks]


class InnerSGD:
    """W <- W - lr g, on weights with a leading task axis."""

    def __init__(self, learning_rate):
        self.learning_rate = learning_rate

    def start(self, weights):
        return ()

    def step(self, weights, grads, state):
        return {k: w - self.learning_rate * grads[k] for k, w in weights.items()}, state


class InnerAdam:
    """TF1's Adam with beta1 = 0 (the paper's inner optimiser), its state per task:
    v <- beta2 v + (1 - beta2) g^2, W <- W - lr sqrt(1 - beta2^t) g / (sqrt(v) + eps),
    t counted within the task. With beta1 = 0 the first moment is g itself and
    its bias correction 1."""

    def __init__(self, learning_rate, beta2=ADAM_BETA2, epsilon=ADAM_EPSILON):
        self.learning_rate, self.beta2, self.epsilon = learning_rate, beta2, epsilon

    def start(self, weights):
        # v has the fast weights' shape: one state per task and element.
        return {k: tf.zeros_like(w) for k, w in weights.items()}, tf.constant(0.0, tf.float32)

    def step(self, weights, grads, state):
        v, t = state
        t = t + 1.0
        rate = self.learning_rate * tf.sqrt(1.0 - tf.pow(self.beta2, t))
        v = {k: self.beta2 * v[k] + (1.0 - self.beta2) * tf.square(g) for k, g in grads.items()}
        return ({k: w - rate * grads[k] / (tf.sqrt(v[k]) + self.epsilon)
                 for k, w in weights.items()}, (v, t))


def inner_optimizer(config):
    settings = config.reptile
    if settings.inner_optimizer == 'sgd':
        return InnerSGD(config.update_lr)
    return InnerAdam(config.update_lr)


class Reptile:
    """The algorithm on a network (default: the reference's net for `config`).

    `variables`: key -> the network's tf.Variable (phi); `named_variables()`
    gives them by checkpoint name. The compiled `metatrain_step` adapts every
    task and applies the meta step to the variables.
    """

    def __init__(self, config, seed=None, network=None):
        self.config = config
        self.classification = config.classification
        self.network = network if network is not None else ReferenceNetwork(config, seed)
        self.variables = self.network.initial_weights()
        self.optimizer = inner_optimizer(config)
        self._metatrain = tf.function(self._metatrain_step)

    def named_variables(self):
        """Every trainable variable by its checkpoint name, in creation order."""
        names = self.network.checkpoint_names
        return {names[key]: var for key, var in self.variables.items()}

    @property
    def trainable_variables(self):
        return list(self.variables.values())

    def inner_loss(self, pred, label):
        """Each task's mean loss over its mini-batch: [tasks, batch, out] -> [tasks]."""
        if self.classification:
            return tf.reduce_mean(
                tf.nn.softmax_cross_entropy_with_logits(labels=label, logits=pred), axis=1)
        return tf.reduce_mean(tf.square(pred - label), axis=[1, 2])

    def adapt(self, inputs, labels):
        """Each task's W_i after the inner loop.

        inputs [tasks, inner_iters, inner_batch, dim_input], labels [tasks,
        inner_iters, inner_batch, dim_output]: mini-batch j of task i is
        inputs[i, j]. Returns (W: key -> [tasks, ...], losses [tasks, inner_iters],
        each mini-batch's loss with the weights before its step).
        """
        num_tasks, num_iters = inputs.shape[0], inputs.shape[1]
        weights = {k: tf.broadcast_to(v, [num_tasks] + v.shape.as_list())
                   for k, v in self.variables.items()}
        state = self.optimizer.start(weights)
        batches = zip(tf.unstack(inputs, axis=1), tf.unstack(labels, axis=1))
        losses = []
        for step, (inp, label) in enumerate(batches):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(list(weights.values()))
                loss = self.inner_loss(
                    self.network.forward_tasks(inp, weights, identical_tasks=(step == 0)),
                    label)
                summed = tf.reduce_sum(loss)  # each copy's gradient is its own task's
            grads = tape.gradient(summed, weights)
            grads = {k: g if g is not None else tf.zeros_like(weights[k])
                     for k, g in grads.items()}
            weights, state = self.optimizer.step(weights, grads, state)
            losses.append(loss)
        assert len(losses) == num_iters
        return weights, tf.stack(losses, axis=1)

    def meta_update(self, adapted, epsilon):
        """phi <- phi + epsilon * mean_i(W_i - phi), for every variable."""
        for key, var in self.variables.items():
            var.assign_add(epsilon * tf.reduce_mean(adapted[key] - var, axis=0))

    def _metatrain_step(self, inputs, labels, epsilon, return_adapted):
        adapted, losses = self.adapt(inputs, labels)
        self.meta_update(adapted, epsilon)
        result = {'losses': losses, 'epsilon': epsilon}
        if return_adapted:
            result['adapted'] = adapted
        return result

    def metatrain_step(self, inputs, labels, iteration, return_adapted=False):
        """One meta-step at 0-based meta-training `iteration` (which gives epsilon).

        Returns the inner losses [tasks, inner_iters], epsilon and, with
        return_adapted, each task's W_i by key."""
        epsilon = meta_step_size(self.config, iteration)
        return self._metatrain(tf.convert_to_tensor(inputs, tf.float32),
                               tf.convert_to_tensor(labels, tf.float32),
                               tf.constant(epsilon, tf.float32), return_adapted)
