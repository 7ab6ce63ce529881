"""The compiled steps of a MAML model on its replicas: meta-train, pre-train, evaluate.

Each step is one tf.function, built once. It runs the model on every replica's
contiguous share of the meta-batch (`strategy.run`), sums the shares' results
and meta-gradients with one all-reduce, and applies the optimiser to every
replica's copy of the variables. Each task's terms are divided by the whole
meta-batch's size inside its replica (as tf.distribute's guides scale losses
by the global batch size), so the sum over replicas is the meta-batch's mean,
and with one replica the step is the reference's. MiniImagenet's clipping
applies to the summed meta-gradient. On one device the strategy is
TensorFlow's default one, whose run and all-reduce are plain calls.

The optimiser state is the training's, not the model's: `Steps` applies the
`optimizers.Optimizers` it is given (the pre-training and the meta-training
Adam), or fresh ones made for the model when none are given.

Every method takes this worker's tasks of a meta-batch (numpy arrays or
tensors, tasks on axis 0) and `num_tasks`, the meta-batch's size over all
workers; it defaults to the tasks given, right whenever one process holds the
whole meta-batch.
"""
import functools

import tensorflow as tf

from distribute import Replicas
from optimizers import Optimizers

SUM = tf.distribute.ReduceOp.SUM


class Steps:
    """The steps of `model` (a maml.MAML) on `replicas` (default: this device),
    updating `optimizers` (default: fresh Adams, made in the strategy's scope)."""

    def __init__(self, model, replicas=None, optimizers=None):
        self.model = model
        self.replicas = replicas or Replicas()
        self.strategy = self.replicas.strategy
        if optimizers is None:
            with self.strategy.scope():
                optimizers = Optimizers.create(model)
        self.optimizers = optimizers
        # XLA compiles one device's program: with several replicas, the
        # all-reduce sits between their programs.
        jit = model.config.jit_compile and self.replicas.num_replicas == 1
        self._metatrain = tf.function(self._metatrain_step, jit_compile=jit)
        self._pretrain = tf.function(self._pretrain_step, jit_compile=jit)
        self._evaluate = tf.function(self._evaluate_step, jit_compile=jit)
        self._summarised_metatrain = tf.function(self._summarised_metatrain_step,
                                                 jit_compile=jit)
        self._metatrain_repeated = tf.function(
            functools.partial(self._repeat, self._metatrain_step), jit_compile=jit)
        self._pretrain_repeated = tf.function(
            functools.partial(self._repeat, self._pretrain_step), jit_compile=jit)
        self._anchor = model.trainable_variables[0]

    # ------------------------------------------------------------ public
    def metatrain_step(self, inputa, inputb, labela, labelb, num_tasks=None):
        """One meta-update: Adam on split b's loss after num_updates inner steps.

        Returns the pre-update loss, the objective, and the meta-gradients by
        reference name (before and after MiniImagenet's clipping).
        """
        num_tasks = num_tasks or len(inputa)
        return self._first(self._metatrain(*self._share(inputa, inputb, labela, labelb,
                                                        num_tasks=num_tasks), num_tasks))

    def summarised_metatrain_step(self, inputa, inputb, labela, labelb, evaluated_steps,
                                  num_tasks=None):
        """metatrain_step that also returns a summary iteration's values: the totals
        of evaluate(..., evaluated_steps) before the update (pre-update and every
        step's loss, and accuracy), computed with the step's own forward passes."""
        num_tasks = num_tasks or len(inputa)
        return self._first(self._summarised_metatrain(
            *self._share(inputa, inputb, labela, labelb, num_tasks=num_tasks),
            evaluated_steps, num_tasks))

    def pretrain_step(self, inputa, inputb, labela, labelb, num_tasks=None):
        """Plain multi-task training: Adam on split a's pre-update loss."""
        num_tasks = num_tasks or len(inputa)
        return self._first(self._pretrain(*self._share(inputa, inputb, labela, labelb,
                                                       num_tasks=num_tasks), num_tasks))

    def metatrain_steps(self, inputa, inputb, labela, labelb, count, num_tasks=None):
        """metatrain_step on stacked batches [slots, tasks, ...] 0..count-1 in one call;
        their objectives [slots] (0 past count)."""
        num_tasks = num_tasks or inputa.shape[1]
        return self._first(self._metatrain_repeated(
            *self._share(inputa, inputb, labela, labelb, num_tasks=num_tasks, axis=1),
            tf.constant(count), num_tasks))

    def pretrain_steps(self, inputa, inputb, labela, labelb, count, num_tasks=None):
        num_tasks = num_tasks or inputa.shape[1]
        return self._first(self._pretrain_repeated(
            *self._share(inputa, inputb, labela, labelb, num_tasks=num_tasks, axis=1),
            tf.constant(count), num_tasks))

    def evaluate(self, inputa, inputb, labela, labelb, num_updates, num_tasks=None):
        """Every value of the reference's graph for this batch, no update.

        The totals and `task_values` (per task: pre-update and each step's
        accuracy, or loss for regression; [num_tasks, 1 + num_updates]) cover
        every worker's tasks; the other per-task arrays this worker's.
        """
        num_tasks = num_tasks or len(inputa)
        totals, per_task = self._evaluate(*self._share(inputa, inputb, labela, labelb,
                                                       num_tasks=num_tasks),
                                          num_updates, num_tasks)
        result = self._first(totals)
        locals_ = [self.strategy.experimental_local_results(x) for x in tf.nest.flatten(per_task)]
        merged = [tf.concat(parts, 0) if len(parts) > 1 else parts[0] for parts in locals_]
        result.update(tf.nest.pack_sequence_as(per_task, merged))
        return result

    def concrete_metatrain_step(self, inputa, inputb, labela, labelb):
        """The traced graph of metatrain_step (for counting its operations)."""
        num_tasks = len(inputa)
        return self._metatrain.get_concrete_function(
            *self._share(inputa, inputb, labela, labelb, num_tasks=num_tasks), num_tasks)

    # ----------------------------------------------------------- helpers
    def _share(self, *arrays, num_tasks, axis=0):
        return self.replicas.distribute([_numpy(x) for x in arrays], num_tasks, axis)

    def _first(self, structure):
        """One replica's copy of values that the all-reduce made equal on all."""
        return tf.nest.map_structure(
            lambda x: self.strategy.experimental_local_results(x)[0], structure)

    def _replica_gradients(self, gradients, clip, num_tasks, index,
                           inputa, inputb, labela, labelb):
        """In one replica: its share's results and meta-gradient terms, summed over
        replicas, and the sum as applied (clipped for MiniImagenet if `clip`)."""
        if index is not None:
            inputa, inputb, labela, labelb = (x[index] for x in (inputa, inputb, labela, labelb))
        if inputa.shape[0] == 0:  # a replica without tasks adds zero
            res, grads = tf.nest.map_structure(tf.zeros_like, gradients(
                *_stand_in_task(inputa, inputb, labela, labelb), num_tasks))
        else:
            res, grads = gradients(inputa, inputb, labela, labelb, num_tasks)
        res, grads = tf.distribute.get_replica_context().all_reduce(SUM, (res, grads))
        applied = self.model.clip_meta_gradients(grads) if clip else grads
        return res, grads, applied

    def _train_step(self, gradients, optimizer, inputa, inputb, labela, labelb, num_tasks, index,
                    clip=False):
        res, grads, applied = self.strategy.run(
            functools.partial(self._replica_gradients, gradients, clip, num_tasks, index),
            args=(inputa, inputb, labela, labelb))
        # Every local replica's copy of the variables takes the same update.
        self.strategy.extended.update(self._anchor, lambda _, g: optimizer.apply(g),
                                      args=(applied,))
        return res, grads, applied

    def _metatrain_step(self, inputa, inputb, labela, labelb, num_tasks, index=None,
                        evaluated_steps=None):
        res, grads, applied = self._train_step(
            functools.partial(self.model.metatrain_gradients, evaluated_steps=evaluated_steps),
            self.optimizers.metatrain, inputa, inputb, labela, labelb, num_tasks, index,
            clip=True)
        return dict(res, metagrads_unclipped=grads, metagrads=applied)

    def _summarised_metatrain_step(self, inputa, inputb, labela, labelb, evaluated_steps,
                                   num_tasks):
        return self._metatrain_step(inputa, inputb, labela, labelb, num_tasks,
                                    evaluated_steps=evaluated_steps)

    def _pretrain_step(self, inputa, inputb, labela, labelb, num_tasks, index=None):
        return self._train_step(self.model.pretrain_gradients, self.optimizers.pretrain,
                                inputa, inputb, labela, labelb, num_tasks, index)[0]

    def _repeat(self, step, inputa, inputb, labela, labelb, count, num_tasks):
        """Run `step` on `count` stacked batches in one loop; their objectives [slots].

        A sinusoid step computes for well under a millisecond, and entering a
        compiled function costs about as much again: a loop inside one call
        pays that once for many steps. Slots past `count` are padding (their
        objectives stay 0), so every call has the same shapes and compiles once.
        """
        slots = self.strategy.experimental_local_results(inputa)[0].shape[0]

        def body(i, objectives):
            objective = self._first(step(inputa, inputb, labela, labelb, num_tasks,
                                         index=i)['objective'])
            return i + 1, tf.tensor_scatter_nd_update(objectives, [[i]], [objective])

        # parallel_iterations=1: each step reads the weights the one before wrote.
        _, objectives = tf.while_loop(lambda i, _: i < count, body,
                                      (tf.constant(0), tf.zeros([slots])),
                                      parallel_iterations=1)
        return objectives

    def _evaluate_step(self, inputa, inputb, labela, labelb, num_updates, num_tasks):
        starts = tf.constant([s.start for s in self.replicas.shares(num_tasks)])

        def replica(inputa, inputb, labela, labelb):
            size = inputa.shape[0]
            if size == 0:  # no tasks: evaluate a stand-in task, then keep none of it
                inputa, inputb, labela, labelb = _stand_in_task(inputa, inputb, labela, labelb)
            res = self.model.meta_batch(inputa, inputb, labela, labelb, num_updates, num_tasks)
            values = self.model.task_values(res)
            totals = {k: v for k, v in res.items() if k.startswith('total_')}
            per_task = {k: v for k, v in res.items() if not k.startswith('total_')}
            if size == 0:
                totals = tf.nest.map_structure(tf.zeros_like, totals)
                per_task = tf.nest.map_structure(lambda x: x[:0], per_task)
                values = values[:0]
            # Each replica's rows at its tasks' places, zero elsewhere: the sum
            # over replicas holds every task's values.
            start = tf.gather(starts, tf.distribute.get_replica_context().replica_id_in_sync_group)
            rows = tf.scatter_nd(tf.reshape(start + tf.range(size), [-1, 1]), values,
                                 [num_tasks, values.shape[1]])
            totals['task_values'] = rows
            return tf.distribute.get_replica_context().all_reduce(SUM, totals), per_task
        return self.strategy.run(replica, args=(inputa, inputb, labela, labelb))


def _stand_in_task(*arrays):
    """One task of zeros shaped like these empty shares: a replica without tasks
    computes on it for the shapes of its results, then keeps none of them."""
    return [tf.zeros([1] + x.shape[1:].as_list()) for x in arrays]


def _numpy(x):
    return x.numpy() if isinstance(x, tf.Tensor) else x
