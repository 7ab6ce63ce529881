"""Model-Agnostic Meta-Learning: the model, its inner loop and its outer step.

`forward(inp, weights)` takes a dict of weights, so the fast weights of the
inner loop are just another dict. A meta-batch runs as one set of batched ops:
every tensor has the task as its axis 0, the fast weights carry one copy per
task (`[tasks, ...]`), and normalisation statistics are taken per task, so the
result is the reference's per-task `task_metalearn` mapped over the batch.
"""
import numpy as np
import tensorflow as tf

from utils import (Adam, accuracy, batched_dense, conv_block, glorot_uniform, mse, normalize,
                   standard_normal, truncated_normal, xent)


class MAML:
    def __init__(self, config, seed=None):
        self.config = config
        self.dim_input, self.dim_output = config.dim_input, config.dim_output
        self.classification = config.classification
        self.update_lr = config.update_lr
        rng = np.random.default_rng(seed)
        # tf1_names maps each trainable variable to its name in the reference's
        # checkpoints, in the reference's creation order.
        self.tf1_names = {}
        if config.conv_net:
            self.channels, self.img_size = config.channels, config.img_size
            self.weights = self._construct_conv_weights(rng)
            norm_scopes = ['0', '1', '2', '3']
            norm_sizes = [config.num_filters] * 4
        else:
            self.dim_hidden = [40, 40] if not self.classification else [256, 128, 64, 64]
            self.weights = self._construct_fc_weights(rng)
            # The reference's fc net names its norm scopes 0, 2, 3, ... (no 1).
            norm_scopes = ['0'] + [str(i + 1) for i in range(1, len(self.dim_hidden))]
            norm_sizes = self.dim_hidden
        self.norm_params = self._construct_norm_params(norm_scopes, norm_sizes)
        self.norm_scopes = norm_scopes
        self.variables = list(self.tf1_names)
        self.pretrain_optimizer = Adam(self.named_variables(), config.meta_lr)
        self.metatrain_optimizer = Adam(self.named_variables(), config.meta_lr)

    # ---------------------------------------------------------------- weights
    def _new_variable(self, key, value, tf1_name, weights=None):
        var = tf.Variable(value, name=key)
        self.tf1_names[var.ref()] = tf1_name
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
                'beta', tf.zeros([size]), 'model/%s/beta' % scope)}
            if self.config.norm == 'layer_norm':
                params[scope]['gamma'] = self._new_variable(
                    'gamma', tf.ones([size]), 'model/%s/gamma' % scope)
        return params

    def named_variables(self):
        """Every trainable variable by its reference checkpoint name, in creation order."""
        return {self.tf1_names[ref]: ref.deref() for ref in self.variables}

    @property
    def trainable_variables(self):
        return [ref.deref() for ref in self.variables]

    # ---------------------------------------------------------------- forward
    def forward(self, inp, weights, identical_tasks=False):
        """inp [tasks, examples, dim_input] -> logits or predictions [tasks, examples, dim_output].

        weights: dict of shared tensors (the variables) or of per-task tensors
        with a leading task axis (fast weights). identical_tasks: the per-task
        weights are still copies of one set (before the first inner step), so
        convolutions may run on the whole meta-batch at once.
        """
        if self.config.conv_net:
            return self._forward_conv(inp, weights, identical_tasks)
        return self._forward_fc(inp, weights)

    def _forward_fc(self, inp, weights):
        hidden = inp
        for i, scope in enumerate(self.norm_scopes):
            hidden = batched_dense(hidden, weights['w%d' % (i + 1)], weights['b%d' % (i + 1)])
            hidden = normalize(hidden, self.config.norm, self.norm_params[scope])
        last = len(self.norm_scopes) + 1
        return batched_dense(hidden, weights['w%d' % last], weights['b%d' % last])

    def _forward_conv(self, inp, weights, identical_tasks=False):
        shape = tf.shape(inp)
        hidden = tf.reshape(inp, tf.concat(
            [shape[:2], [self.img_size, self.img_size, self.channels]], 0))
        for i, scope in enumerate(self.norm_scopes):
            hidden = conv_block(hidden, weights['conv%d' % (i + 1)], weights['b%d' % (i + 1)],
                                self.config.norm, self.norm_params[scope], self.config.max_pool,
                                identical_tasks, fused_norm=self.config.stop_grad)
        if self.config.flattened_head:
            hidden = tf.reshape(hidden, tf.concat([shape[:2], [-1]], 0))
        else:
            hidden = tf.reduce_mean(hidden, [2, 3])
        return batched_dense(hidden, weights['w5'], weights['b5'])

    def loss(self, pred, label):
        """Per task (regression) or per example (classification) losses."""
        if self.classification:
            return xent(pred, label, self.config.update_batch_size)
        return mse(pred, label)

    # ------------------------------------------------------------- inner loop
    def task_metalearn(self, inputa, inputb, labela, labelb, num_updates):
        """Adapt to every task of the batch with `num_updates` inner steps.

        Returns a dict: outputa, lossa (pre-update, on split a), and per step
        j = 1..num_updates lists outputbs, lossesb (on split b with the fast
        weights after j steps); accuracies too for classification.
        """
        num_tasks = inputa.shape[0]
        # One copy of the weights per task, so that the gradient of the summed
        # loss with respect to the copies is each task's own gradient.
        fast_weights = {key: tf.broadcast_to(w, [num_tasks] + w.shape.as_list())
                        for key, w in self.weights.items()}
        result = {'outputbs': [], 'lossesb': []}
        for step in range(num_updates):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(list(fast_weights.values()))
                output = self.forward(inputa, fast_weights, identical_tasks=(step == 0))
                loss = self.loss(output, labela)
                summed = tf.reduce_sum(loss)
            if step == 0:
                result['outputa'], result['lossa'] = output, loss
            grads = tape.gradient(summed, fast_weights)
            if self.config.stop_grad:
                grads = {key: tf.stop_gradient(g) for key, g in grads.items()}
            fast_weights = {key: fast_weights[key] - self.update_lr * grads[key]
                            for key in fast_weights}
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
