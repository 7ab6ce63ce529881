"""Layers of utils.py: each test one sentence of behaviour."""
import numpy as np
import tensorflow as tf

from utils import batched_conv2d


def _two_layer_meta_objective(identical_kernels, x, xb, k1, k2, lr=0.1):
    """One inner step of a two-conv net per task, then split b's loss; as MAML runs it."""
    tasks = x.shape[0]
    with tf.GradientTape() as outer:
        fast = [tf.broadcast_to(k, [tasks] + k.shape.as_list()) for k in (k1, k2)]

        def net(inp, kernels, identical):
            hidden = tf.tanh(batched_conv2d(inp, kernels[0], [1, 2, 2, 1], identical))
            return batched_conv2d(hidden, kernels[1], [1, 1, 1, 1], identical)

        with tf.GradientTape() as inner:
            inner.watch(fast)
            out_a = net(x, fast, identical_kernels)
            loss_a = tf.reduce_sum(tf.square(out_a - 0.5))
        grads = inner.gradient(loss_a, fast)
        adapted = [k - lr * g for k, g in zip(fast, grads)]
        objective = tf.reduce_sum(tf.square(net(xb, adapted, False)))
    return out_a, grads, objective, outer.gradient(objective, [k1, k2])


def test_identical_kernel_copies_give_the_per_task_outputs_and_gradients_to_second_order():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((3, 4, 9, 9, 2)), tf.float32)
    xb = tf.constant(rng.standard_normal((3, 4, 9, 9, 2)), tf.float32)
    k1 = tf.Variable(rng.standard_normal((3, 3, 2, 5)) * 0.3, dtype=tf.float32)
    k2 = tf.Variable(rng.standard_normal((3, 3, 5, 4)) * 0.3, dtype=tf.float32)
    shared = _two_layer_meta_objective(True, x, xb, k1, k2)
    per_task = _two_layer_meta_objective(False, x, xb, k1, k2)
    np.testing.assert_allclose(shared[0].numpy(), per_task[0].numpy(), rtol=1e-5, atol=1e-6)
    for got, want in zip(shared[1], per_task[1]):  # each task's own inner gradient
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(per_task[1][0][0].numpy(), per_task[1][0][1].numpy())
    np.testing.assert_allclose(shared[2].numpy(), per_task[2].numpy(), rtol=1e-5)
    for got, want in zip(shared[3], per_task[3]):  # the meta-gradient, second order
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
