"""Model-Agnostic Meta-Learning: the inner loop and the outer step, on a network.

The network (networks.py: its variables, which of them the inner loop adapts,
their checkpoint names and `forward(inp, weights)`) is apart from the
algorithm here. `forward` takes a dict of weights, so the fast weights of the
inner loop are just another dict. A meta-batch runs as one call: every tensor
has the task as its axis 0, the fast weights carry one copy per task
(`[tasks, ...]`), and normalisation statistics are taken per task, so the
result is the reference's per-task `task_metalearn` mapped over the batch.

The optimiser state is not here either: both Adams (optimizers.py) belong to
the training code, whose steps (steps.py) apply the meta-gradients computed here.
"""
import tensorflow as tf

from networks import ReferenceNetwork
from utils import accuracy, mse, xent


class MAML:
    """The algorithm (inner loop, meta-objective, meta-gradient, clipping) on a network.

    network: a networks.Network; default the reference's net for `config`
    (ReferenceNetwork(config, seed)).
    """

    def __init__(self, config, seed=None, network=None):
        self.config = config
        self.dim_input, self.dim_output = config.dim_input, config.dim_output
        self.classification = config.classification
        self.update_lr = config.update_lr
        self.network = network if network is not None else ReferenceNetwork(config, seed)
        variables = self.network.initial_weights()
        # The inner loop's weights: the adapted variables only.
        self.weights = {key: variables[key] for key in self.network.adapted}
        # tf1_names maps each trainable variable to its checkpoint name (the
        # reference's TF1 names for the built-in nets), in creation order.
        self.tf1_names = {var.ref(): self.network.checkpoint_names[key]
                          for key, var in variables.items()}
        self.variables = list(self.tf1_names)

    # The built-in net's normalisation parameters and scopes, read (and in
    # tests swapped) through the model as before the network had its own class.
    @property
    def norm_params(self):
        return self.network.norm_params

    @norm_params.setter
    def norm_params(self, value):
        self.network.norm_params = value

    @property
    def norm_scopes(self):
        return self.network.norm_scopes

    def named_variables(self):
        """Every trainable variable by its reference checkpoint name, in creation order."""
        return {self.tf1_names[ref]: ref.deref() for ref in self.variables}

    @property
    def trainable_variables(self):
        return [ref.deref() for ref in self.variables]

    def forward(self, inp, weights, identical_tasks=False):
        """inp [tasks, examples, dim_input] -> logits or predictions [tasks, examples, dim_output].

        weights: the adapted weights, shared or per task (a leading task axis);
        see networks.py.
        """
        return self.network.forward_tasks(inp, weights, identical_tasks)

    def loss(self, pred, label):
        """Per task (regression) or per example (classification) losses."""
        if self.classification:
            return xent(pred, label, self.config.update_batch_size)
        return mse(pred, label)

    # ------------------------------------------------------------- inner loop
    def per_task_weights(self, num_tasks):
        """One copy of the adapted weights per task ([tasks, ...]), so that the
        gradient of the summed loss with respect to the copies is each task's own."""
        return {key: tf.broadcast_to(w, [num_tasks] + w.shape.as_list())
                for key, w in self.weights.items()}

    def inner_step(self, fast_weights, inputa, labela, identical_tasks=False):
        """One inner gradient step of every task on split a: the outputs and
        losses with `fast_weights`, and the fast weights after the step."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(list(fast_weights.values()))
            output = self.forward(inputa, fast_weights, identical_tasks=identical_tasks)
            loss = self.loss(output, labela)
            summed = tf.reduce_sum(loss)
        grads = tape.gradient(summed, fast_weights)
        if self.config.stop_grad:
            grads = {key: tf.stop_gradient(g) for key, g in grads.items()}
        return output, loss, {key: fast_weights[key] - self.update_lr * grads[key]
                              for key in fast_weights}

    def adapt(self, inputa, labela, num_updates):
        """Each task's fast weights ([tasks, ...]) after `num_updates` inner steps on split a."""
        fast_weights = self.per_task_weights(inputa.shape[0])
        for step in range(num_updates):
            fast_weights = self.inner_step(fast_weights, inputa, labela,
                                           identical_tasks=(step == 0))[2]
        return fast_weights

    def task_metalearn(self, inputa, inputb, labela, labelb, num_updates):
        """Adapt to every task of the batch with `num_updates` inner steps.

        Returns a dict: outputa, lossa (pre-update, on split a), and per step
        j = 1..num_updates lists outputbs, lossesb (on split b with the fast
        weights after j steps); accuracies too for classification.
        """
        fast_weights = self.per_task_weights(inputa.shape[0])
        result = {'outputbs': [], 'lossesb': []}
        for step in range(num_updates):
            output, loss, fast_weights = self.inner_step(fast_weights, inputa, labela,
                                                         identical_tasks=(step == 0))
            if step == 0:
                result['outputa'], result['lossa'] = output, loss
            output = self.forward(inputb, fast_weights)
            result['outputbs'].append(output)
            result['lossesb'].append(self.loss(output, labelb))
        if num_updates == 0:
            result['outputa'] = self.forward(inputa, self.weights)
            result['lossa'] = self.loss(result['outputa'], labela)
        if self.classification:
            result['accuracya'] = accuracy(result['outputa'], labela)
            result['accuraciesb'] = [accuracy(o, labelb) for o in result['outputbs']]
        return result

    def meta_batch(self, inputa, inputb, labela, labelb, num_updates, num_tasks=None):
        """task_metalearn plus the reference's totals: sums over these tasks divided
        by num_tasks, the meta-batch's size (these tasks' count unless they are
        one replica's share of a larger meta-batch)."""
        res = self.task_metalearn(inputa, inputb, labela, labelb, num_updates)
        num_tasks = float(num_tasks or inputa.shape[0])
        res['total_loss1'] = tf.reduce_sum(res['lossa']) / num_tasks
        res['total_losses2'] = [tf.reduce_sum(l) / num_tasks for l in res['lossesb']]
        if self.classification:
            res['total_accuracy1'] = tf.reduce_sum(res['accuracya']) / num_tasks
            res['total_accuracies2'] = [tf.reduce_sum(a) / num_tasks for a in res['accuraciesb']]
        return res

    def task_values(self, res):
        """Each task's headline values [tasks, 1 + steps]: pre-update and after each
        inner step, accuracy for classification, loss for regression (what testing reports)."""
        if self.classification:
            return tf.stack([res['accuracya']] + res['accuraciesb'], 1)
        return tf.stack([res['lossa']] + res['lossesb'], 1)

    # ------------------------------------------------------------ outer steps
    # steps.py compiles these into the training steps: the gradients on each
    # replica's share of the meta-batch, summed over replicas, then applied.
    def _gradients(self, objective, tape):
        grads = tape.gradient(objective, self.trainable_variables)
        names = [self.tf1_names[ref] for ref in self.variables]
        return {name: (g if g is not None else tf.zeros_like(v))
                for name, g, v in zip(names, grads, self.trainable_variables)}

    def metatrain_gradients(self, inputa, inputb, labela, labelb, num_tasks=None,
                            evaluated_steps=None):
        """The meta-training objective (split b's loss after num_updates inner
        steps) of these tasks, with the pre-update loss, and its gradients by
        reference name; both divided by num_tasks, the meta-batch's size.

        evaluated_steps: also adapt on to that many steps and return every
        total of meta_batch (a summary iteration's values, as the reference
        fetched them with its training op), sharing the forward passes.
        """
        num_updates = self.config.num_updates
        with tf.GradientTape() as tape:
            res = self.meta_batch(inputa, inputb, labela, labelb,
                                  max(num_updates, evaluated_steps or 0), num_tasks)
            objective = res['total_losses2'][num_updates - 1]
        totals = {'total_loss1': res['total_loss1']}
        if evaluated_steps:
            totals = {k: v[:evaluated_steps] if isinstance(v, list) else v
                      for k, v in res.items() if k.startswith('total_')}
        return dict(totals, objective=objective), self._gradients(objective, tape)

    def pretrain_gradients(self, inputa, inputb, labela, labelb, num_tasks=None):
        """Plain multi-task training's objective, split a's pre-update loss, and its gradients."""
        with tf.GradientTape() as tape:
            res = self.meta_batch(inputa, inputb, labela, labelb, 0, num_tasks)
        return ({'total_loss1': res['total_loss1'], 'objective': res['total_loss1']},
                self._gradients(res['total_loss1'], tape))

    def clip_meta_gradients(self, grads):
        """MiniImagenet's elementwise clipping of the whole meta-batch's meta-gradient."""
        clip = self.config.meta_gradient_clip
        if clip is None:
            return grads
        return {n: tf.clip_by_value(g, -clip, clip) for n, g in grads.items()}
