"""MAML on your own model in a few calls, for a notebook or a script.

    from config import Config
    from learner import MetaLearner

    learner = MetaLearner(model, Config(datasource='sinusoid', norm='None',
                                        update_batch_size=10))
    learner.meta_train(1000)                     # meta-updates on the data source's tasks
    fast = learner.adapt(x, y)                   # one new task's K examples -> its fast weights
    y_query = learner.predict(x_query, fast)     # that task's predictions (or logits)
    learner.evaluate(100)                        # before / after each step, over test tasks

`model` is a Keras model (functional, Sequential or subclassed; built or not),
a networks.Network (networks.ForwardFunction for `forward(inp, weights)` and a
dict of initial weights), or None for the reference's network. The data source,
task shapes, learning rates and inner steps are the Config's, as on the command
line; `meta_train` and `evaluate` draw tasks from the Config's data source
(the image sources read their prepared folders), or take your own batches.
This is the same algorithm and compiled steps as main.py (maml.MAML,
steps.Steps), without the experiment folder, checkpoints and printed lines.
"""
import keras
import numpy as np
import tensorflow as tf

import model_source
from data_generator import DataGenerator
from maml import MAML
from reptile import refuse_where_unsupported
from steps import Steps


class MetaLearner:
    """A model, MAML on it, its compiled steps and its optimiser state."""

    def __init__(self, model, config, seed=None):
        refuse_where_unsupported(config, 'learner.MetaLearner')
        self.config = config
        network = None
        if model is not None:
            name = getattr(model, 'name', type(model).__name__)
            if isinstance(model, keras.Model) and not model.built:
                model_source.build(model, config, name)
            network = model_source.network(config, model, spec=name)
        self.maml = MAML(config, seed=seed, network=network)
        self.steps = Steps(self.maml)
        self._adapt = tf.function(self.maml.adapt)
        self._predict = tf.function(self.maml.forward)
        self._train_batches = self._test_batches = None

    # ------------------------------------------------------------ meta-training
    def meta_train(self, iterations, batches=None):
        """`iterations` meta-updates; the meta-objective (split b's loss after
        --num_updates inner steps, before each update) of each, as floats.

        batches: an iterator of (inputa, inputb, labela, labelb) meta-batches,
        tasks on axis 0; default: the Config's data source's training tasks.
        """
        if batches is None:
            if self._train_batches is None:
                self._train_batches = DataGenerator(
                    self.config.num_samples_per_class, self.config.meta_batch_size,
                    self.config).meta_batches(train=True)
            batches = self._train_batches
        return [float(self.steps.metatrain_step(*next(batches))['objective'])
                for _ in range(iterations)]

    # ------------------------------------------------------------ one new task
    def adapt(self, inputs, labels, num_steps=None):
        """One task's fast weights after `num_steps` inner steps (default the
        Config's test_num_updates) on its examples: inputs [examples, dim_input],
        labels [examples, dim_output] (one-hot for classification, with the
        Config's --update_batch_size examples per class). A dict like the
        network's weights; the meta-learned weights stay as they are."""
        num_steps = self.config.test_num_updates if num_steps is None else num_steps
        fast = self._adapt(_one_task(inputs), _one_task(labels), num_steps)
        return {key: value[0] for key, value in fast.items()}

    def predict(self, inputs, weights=None):
        """One task's outputs [examples, dim_output] (predictions, or logits for
        classification) with `weights` from adapt() (default the meta-learned ones)."""
        weights = self.maml.weights if weights is None else {
            key: value[None] for key, value in weights.items()}
        return self._predict(_one_task(inputs), weights)[0]

    # ------------------------------------------------------------ evaluation
    def evaluate(self, num_tasks=600, num_steps=None, batches=None):
        """Mean over `num_tasks` tasks of each task's accuracy (classification)
        or loss (regression) before adaptation and after each of `num_steps`
        inner steps (default the Config's test_num_updates): [1 + num_steps].

        batches: an iterator of (inputa, inputb, labela, labelb) meta-batches;
        default: the Config's data source's test tasks, one at a time, as the
        reference's test draws them (the first call starts from its first task).
        """
        num_steps = self.config.test_num_updates if num_steps is None else num_steps
        if batches is None:
            if self._test_batches is None:
                self._test_batches = DataGenerator(
                    self.config.num_samples_per_class, 1, self.config).meta_batches(
                        train=False, seed=[1])
            batches = self._test_batches
        values = []
        while len(values) < num_tasks:
            res = self.steps.evaluate(*next(batches), num_steps)
            values.extend(res['task_values'].numpy())
        return np.mean(values[:num_tasks], axis=0)


def _one_task(array):
    """A task's array with the leading task axis MAML's batched steps take."""
    return tf.convert_to_tensor(np.asarray(array, dtype=np.float32))[None]
