"""A custom MLP meta-learned on sinusoid with --model, written without Keras.

The reference's own style: `forward(inp, weights)` for one task's examples and
a dict of initial weights (networks.ForwardFunction). Wider than the
reference's net (two hidden layers of 64, tanh) to show it is not the built-in one.

    python main.py --datasource=sinusoid --model=examples/mlp_sinusoid.py:mlp --norm=None \
        --update_batch_size=10 --update_lr=0.01 --metatrain_iterations=70000 --logdir=logs/sine/
"""
import numpy as np
import tensorflow as tf

from networks import ForwardFunction

HIDDEN = (64, 64)


def forward(inp, weights):
    """inp [examples, 1] -> predictions [examples, 1]; only computes (no variables)."""
    hidden = inp
    for i in range(len(HIDDEN)):
        hidden = tf.tanh(tf.matmul(hidden, weights['w%d' % i]) + weights['b%d' % i])
    last = len(HIDDEN)
    return tf.matmul(hidden, weights['w%d' % last]) + weights['b%d' % last]


def mlp(config):
    """The network for this run's Config (--seed makes its initial weights repeatable)."""
    rng = np.random.default_rng(config.seed)
    sizes = (config.dim_input,) + HIDDEN + (config.dim_output,)
    initial = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        # Glorot-uniform weights, zero biases.
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        initial['w%d' % i] = rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)
        initial['b%d' % i] = np.zeros(fan_out, np.float32)
    return ForwardFunction(forward, initial)
