"""The training's optimiser state, owned by the training code rather than the model.

`Optimizers` holds TF1's two Adams over the model's variables, one for
pre-training and one for meta-training, built in this order as the reference
built them. The training code builds it once (`Optimizers.create`, in the
strategy's scope where the variables are mirrored), steps.py applies it, and
checkpoint.py saves and restores it under the names a TF1 Saver gave it.
"""
from typing import NamedTuple

import tensorflow as tf


class Adam:
    """TF1's AdamOptimizer: the same kernel (ApplyAdam), slots and beta powers.

    Kept as plain variables (slots m and v by the variable's checkpoint name,
    and the two beta powers) so that checkpoint.py can save them under the
    names a TF1 Saver gave them and a resumed run continues with its optimiser
    state.
    """

    def __init__(self, variables, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8):
        self.variables = dict(variables)  # checkpoint name -> tf.Variable
        self.learning_rate = learning_rate
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.m = {n: tf.Variable(tf.zeros_like(v), trainable=False) for n, v in self.variables.items()}
        self.v = {n: tf.Variable(tf.zeros_like(v), trainable=False) for n, v in self.variables.items()}
        self.beta1_power = tf.Variable(beta1, dtype=tf.float32, trainable=False)
        self.beta2_power = tf.Variable(beta2, dtype=tf.float32, trainable=False)

    def apply(self, grads, learning_rate=None):
        """grads: dict checkpoint name -> gradient. One TF1 Adam step."""
        lr = self.learning_rate if learning_rate is None else learning_rate
        for name, var in self.variables.items():
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle, m=self.m[name].handle, v=self.v[name].handle,
                beta1_power=self.beta1_power, beta2_power=self.beta2_power,
                lr=tf.cast(lr, tf.float32), beta1=self.beta1, beta2=self.beta2,
                epsilon=self.epsilon, grad=grads[name])
        self.beta1_power.assign(self.beta1_power * self.beta1)
        self.beta2_power.assign(self.beta2_power * self.beta2)


class Optimizers(NamedTuple):
    """Both Adams of a training run: each keeps its own slots and beta powers."""
    pretrain: Adam
    metatrain: Adam

    @classmethod
    def create(cls, model):
        """Fresh Adams over the model's variables (by checkpoint name) at --meta_lr.

        Call it where the model was built (inside the strategy's scope) so
        that the slots are placed as the variables are.
        """
        learning_rate = model.config.meta_lr
        pretrain = Adam(model.named_variables(), learning_rate)
        return cls(pretrain=pretrain, metatrain=Adam(model.named_variables(), learning_rate))
