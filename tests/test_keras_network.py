"""Keras models as MAML networks, and the exact normalisation layers.

The meta-gradient checks run in float64 against central finite differences of
the meta-objective, through every inner step: the second-order terms (through
batch norm, layer norm, max pooling) must be exact, and Keras's own
BatchNormalization must visibly fail the same check (the reason for the
exact layers).
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from config import Config
from keras_network import (ExactBatchNormalization, ExactLayerNormalization, KerasNetwork,
                           export, reference_checkpoint_names, reference_keras_model)
from maml import MAML
from networks import ForwardFunction, NetworkError

F64 = 'float64'
LAYERS = keras.layers


def _conv_net(norm=ExactBatchNormalization):
    """8x8 images: conv -> batch norm -> ReLU -> 2x2 max pool, twice; dense head."""
    inp = keras.Input((64,), dtype=F64)
    x = LAYERS.Reshape((8, 8, 1), dtype=F64)(inp)
    for _ in range(2):
        x = LAYERS.Conv2D(3, 3, padding='same', dtype=F64)(x)
        x = norm(dtype=F64)(x)
        x = LAYERS.ReLU(dtype=F64)(x)
        x = LAYERS.MaxPooling2D(2, dtype=F64)(x)
    x = LAYERS.Flatten(dtype=F64)(x)
    return keras.Model(inp, LAYERS.Dense(5, dtype=F64)(x))


def _dense_layer_norm_net(norm=ExactLayerNormalization):
    """Layer norm after a hidden layer: right after the input layer, the error of
    Keras's own layer norm would lie in the shifts that the norm removes."""
    model = keras.Sequential([LAYERS.Dense(12, dtype=F64), LAYERS.ReLU(dtype=F64),
                              LAYERS.Dense(12, dtype=F64), norm(dtype=F64),
                              LAYERS.ReLU(dtype=F64), LAYERS.Dense(5, dtype=F64)])
    model.build((None, 64))
    return model


class StridedLayerNormNet(keras.Model):
    """A subclassed model: strided convs, layer norm over each image with one
    scale and offset per channel (the reference's), spatial average head."""

    def __init__(self):
        super().__init__(dtype=F64)
        self.reshape = LAYERS.Reshape((8, 8, 1), dtype=F64)
        self.convs = [LAYERS.Conv2D(3, 3, strides=2, padding='same', dtype=F64)
                      for _ in range(2)]
        self.norms = [ExactLayerNormalization(axis=[1, 2, 3], params_axis=-1, dtype=F64)
                      for _ in range(2)]
        self.head = LAYERS.Dense(5, dtype=F64)

    def call(self, x):
        x = self.reshape(x)
        for conv, norm in zip(self.convs, self.norms):
            x = tf.nn.relu(norm(conv(x)))
        return self.head(tf.reduce_mean(x, [1, 2]))


def _subclassed_net():
    model = StridedLayerNormNet()
    model(np.zeros((1, 64)))
    return model


def _batch(seed=0, tasks=2):
    """5-way 1-shot classification tasks of 8x8 images, float64."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(tasks, 10, 64))
    labels = np.eye(5)[np.tile(np.arange(5), 2)]
    y = np.broadcast_to(labels, (tasks, 10, 5)).copy()
    return [tf.constant(v) for v in (x[:, :5], x[:, 5:], y[:, :5], y[:, 5:])]


def _config(num_updates, **overrides):
    return Config(datasource='omniglot', update_batch_size=1, update_lr=0.1,
                  num_updates=num_updates, **overrides)


def _finite_difference_error(build, num_updates, exact_only=True, seed=0, per_variable=8):
    """Largest relative error of the meta-gradient against central differences
    of the meta-objective (split b's loss after num_updates inner steps).

    Each checked element's error is |g - fd| / max(|fd|, 1e-3 * largest |fd|),
    on up to `per_variable` random elements of every variable.
    """
    keras.utils.set_random_seed(seed)  # the same initial weights on every run
    model = MAML(_config(num_updates), network=KerasNetwork(build(), exact_only=exact_only))
    batch = _batch(seed)
    _, grads = tf.function(model.metatrain_gradients)(*batch)
    objective = tf.function(lambda: model.meta_batch(*batch, num_updates)['total_losses2'][-1])
    rng = np.random.default_rng(seed)
    # Fourth-order central differences: error O(h^4) from truncation and about
    # 1e-16 / h from rounding, both far below the 1e-6 checked. h stays small:
    # a larger step moves some ReLU inputs or pooled maxima across a kink.
    h = 1e-5
    analytic, numeric = [], []
    for name, var in model.named_variables().items():
        assert var.dtype == tf.float64, name
        size = int(np.prod(var.shape))
        for flat in rng.choice(size, min(per_variable, size), replace=False):
            index = np.unravel_index(flat, var.shape)
            values = {}
            for steps in (-2, -1, 1, 2):
                delta = np.zeros(var.shape)
                delta[index] = steps * h
                var.assign_add(delta)
                values[steps] = objective().numpy()
                var.assign_sub(delta)
            numeric.append((8 * (values[1] - values[-1]) - (values[2] - values[-2])) / (12 * h))
            analytic.append(grads[name].numpy()[index])
    analytic, numeric = np.array(analytic), np.array(numeric)
    floor = 1e-3 * np.abs(numeric).max()
    return float(np.max(np.abs(analytic - numeric) / np.maximum(np.abs(numeric), floor)))


@pytest.mark.parametrize('build, num_updates', [
    (_conv_net, 2),
    (_dense_layer_norm_net, 3),
    (_subclassed_net, 2),
], ids=['conv_batch_norm_max_pool_2_steps', 'dense_layer_norm_3_steps',
        'subclassed_strided_conv_layer_norm_2_steps'])
def test_meta_gradient_of_a_keras_model_matches_central_finite_differences(build, num_updates):
    assert _finite_difference_error(build, num_updates) < 1e-6


@pytest.mark.parametrize('build, num_updates', [
    (lambda: _conv_net(LAYERS.BatchNormalization), 2),
    (lambda: _dense_layer_norm_net(LAYERS.LayerNormalization), 3),
], ids=['conv_keras_batch_norm', 'dense_keras_layer_norm'])
def test_keras_own_normalization_fails_the_finite_difference_check(build, num_updates):
    # The same nets and data as the first two cases above with Keras's own
    # layers: their moments stop the gradient through the mean, so the second
    # order is off (by far more than the exact layers' error).
    assert _finite_difference_error(build, num_updates, exact_only=False) > 1e-3


def test_exact_normalization_layers_compute_the_values_of_keras_own():
    x = np.random.default_rng(0).normal(3.0, 2.0, (6, 4, 4, 3))
    pairs = [(ExactBatchNormalization(dtype=F64), LAYERS.BatchNormalization(dtype=F64)),
             (ExactLayerNormalization(dtype=F64), LAYERS.LayerNormalization(dtype=F64)),
             (ExactLayerNormalization(axis=[1, 2, 3], dtype=F64),
              LAYERS.LayerNormalization(axis=[1, 2, 3], dtype=F64))]
    for exact, own in pairs:
        exact.build(x.shape)
        own.build(x.shape)
        for e, o in zip(exact.weights, own.weights):
            e.assign(np.random.default_rng(1).normal(size=e.shape) if e.trainable else o)
            o.assign(e)
        np.testing.assert_allclose(exact(x, training=True), own(x, training=True), rtol=1e-12,
                                   atol=1e-12)


def test_layer_normalization_with_params_axis_has_one_scale_and_offset_per_channel():
    layer = ExactLayerNormalization(axis=[1, 2, 3], params_axis=-1, epsilon=1e-12)
    layer.build((None, 4, 4, 3))
    assert [tuple(v.shape) for v in layer.trainable_weights] == [(3,), (3,)]
    out = layer(np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32)).numpy()
    # Each example normalised over all its features (gamma 1, beta 0).
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, rtol=1e-4)


def test_functional_sequential_and_subclassed_models_give_the_same_meta_gradient():
    functional = _dense_layer_norm_net()
    inp = keras.Input((64,), dtype=F64)
    x = inp
    for layer in functional.layers:
        x = layer.__class__.from_config(layer.get_config())(x)
    as_functional = keras.Model(inp, x)
    as_functional.set_weights(functional.get_weights())

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(dtype=F64)
            self.inner = [layer.__class__.from_config(layer.get_config())
                          for layer in functional.layers]

        def call(self, x):
            for layer in self.inner:
                x = layer(x)
            return x
    subclassed = Subclassed()
    subclassed(np.zeros((1, 64)))
    subclassed.set_weights(functional.get_weights())
    batch = _batch(3)
    results = []
    for keras_model in (functional, as_functional, subclassed):
        model = MAML(_config(2), network=KerasNetwork(keras_model))
        _, grads = model.metatrain_gradients(*batch)
        results.append([g.numpy() for g in grads.values()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(b, a, rtol=1e-12)


def test_variables_are_named_by_keras_paths_and_norm_parameters_are_not_adapted():
    keras_model = _conv_net()
    model = MAML(_config(1), network=KerasNetwork(keras_model))
    assert list(model.named_variables()) == [v.path for v in keras_model.trainable_variables]
    norm = {v.path for layer in keras_model.layers if isinstance(layer, ExactBatchNormalization)
            for v in layer.trainable_variables}
    assert norm and list(model.weights) == [v.path for v in keras_model.trainable_variables
                                            if v.path not in norm]


def test_meta_training_leaves_the_moving_averages_alone():
    keras_model = _conv_net()
    moving = [v.numpy().copy() for v in keras_model.non_trainable_variables]
    model = MAML(_config(2), network=KerasNetwork(keras_model))
    model.metatrain_gradients(*_batch())
    assert moving and all(np.array_equal(v.numpy(), m)
                          for v, m in zip(keras_model.non_trainable_variables, moving))


@pytest.mark.parametrize('layer, fix', [
    (LAYERS.BatchNormalization(), 'use keras_network.ExactBatchNormalization'),
    (LAYERS.LayerNormalization(), 'use keras_network.ExactLayerNormalization'),
    (LAYERS.GroupNormalization(groups=2), 'remove it'),
    (LAYERS.UnitNormalization(), 'remove it'),
], ids=lambda x: type(x).__name__ if isinstance(x, keras.layers.Layer) else None)
def test_keras_own_normalization_is_refused_naming_the_layer_and_the_fix(layer, fix):
    model = keras.Sequential([LAYERS.Dense(4), layer, LAYERS.Dense(5)])
    model.build((None, 64))
    with pytest.raises(NetworkError) as error:
        KerasNetwork(model)
    message = str(error.value)
    assert '\n' not in message
    assert repr(layer.name) in message and fix in message and 'stop_grad=True' in message


def test_keras_own_normalization_is_accepted_for_first_order_maml():
    model = keras.Sequential([LAYERS.Dense(4), LAYERS.BatchNormalization(), LAYERS.Dense(5)])
    model.build((None, 64))
    assert KerasNetwork(model, stop_grad=True).adapted


@pytest.mark.parametrize('layer', [LAYERS.Dropout(0.5), LAYERS.GaussianNoise(0.1)],
                         ids=lambda x: type(x).__name__)
def test_layers_drawing_random_numbers_are_refused_saying_what_maml_would_do(layer):
    model = keras.Sequential([LAYERS.Dense(4), layer, LAYERS.Dense(5)])
    model.build((None, 64))
    with pytest.raises(NetworkError, match=r"layer '%s' \(%s\) draws random numbers in training:"
                       r".* a different mask or noise in each forward pass"
                       % (layer.name, type(layer).__name__)):
        KerasNetwork(model, stop_grad=True)


def test_a_subclassed_models_nested_batch_norm_uses_each_tasks_own_statistics():
    class Net(keras.Model):
        def __init__(self):
            super().__init__(dtype=F64)
            self.dense = LAYERS.Dense(3, dtype=F64)
            self.norm = ExactBatchNormalization(center=False, scale=False, dtype=F64)

        def call(self, x):  # no `training` argument: Keras hands it down
            return self.norm(self.dense(x))
    model = Net()
    model(np.zeros((1, 4)))
    network = KerasNetwork(model)
    rng = np.random.default_rng(0)
    tasks = tf.constant(np.stack([rng.normal(0, 1, (6, 4)), rng.normal(5, 3, (6, 4))]))
    out = network.forward_tasks(tasks, {}).numpy()
    # Each task normalised by its own batch: zero mean, unit variance per unit.
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=1), 1, rtol=1e-2)


def test_a_model_without_trainable_float_weights_is_refused():
    model = keras.Sequential([LAYERS.ReLU()])
    model.build((None, 4))
    with pytest.raises(NetworkError, match='has no trainable float weights'):
        KerasNetwork(model)


def test_an_unbuilt_model_is_refused():
    with pytest.raises(NetworkError, match='is not built: call it once on a batch'):
        KerasNetwork(keras.Sequential([LAYERS.Dense(5)]))


@pytest.mark.parametrize('config', [
    Config(datasource='miniimagenet', num_filters=32, max_pool=True),
    Config(datasource='omniglot', norm='layer_norm', num_filters=16),
    Config(datasource='omniglot', conv=False),
    Config(datasource='sinusoid', norm='None'),
], ids=['miniimagenet', 'omniglot_layer_norm', 'omniglot_fc', 'sinusoid'])
def test_the_reference_net_in_keras_has_the_builtin_nets_variables(config):
    keras_model = reference_keras_model(config)
    names = reference_checkpoint_names(keras_model, config)
    keras_shapes = {names[v.path]: tuple(v.shape) for v in keras_model.trainable_variables}
    builtin = MAML(config, seed=0)
    assert keras_shapes == {n: tuple(v.shape) for n, v in builtin.named_variables().items()}
    adapted = KerasNetwork(keras_model).adapted
    assert sorted(names[p] for p in adapted) == sorted(builtin.tf1_names[v.ref()]
                                                       for v in builtin.weights.values())


@pytest.mark.parametrize('suffix', ['.keras', '.weights.h5'])
def test_export_writes_the_meta_learned_initial_weights_into_the_keras_model(tmp_path, suffix):
    keras_model = _conv_net()
    model = MAML(_config(1), network=KerasNetwork(keras_model))
    for v in model.named_variables().values():  # as meta-training would
        v.assign_add(tf.ones_like(v))
    learned = {n: v.numpy() for n, v in model.named_variables().items()}
    path = export(model, str(tmp_path / ('net' + suffix)))
    if suffix == '.keras':
        reloaded = keras.saving.load_model(path, compile=False)
    else:
        reloaded = _conv_net()
        reloaded.load_weights(path)
    assert len(reloaded.trainable_variables) == len(learned)
    for value, v in zip(learned.values(), reloaded.trainable_variables):
        np.testing.assert_array_equal(v.numpy(), value)


def test_export_refuses_forward_functions_and_other_file_types(tmp_path):
    with pytest.raises(NetworkError, match='give a path ending in .keras or .weights.h5'):
        export(MAML(_config(1), network=KerasNetwork(_conv_net())), str(tmp_path / 'net.h5'))
    forward = ForwardFunction(lambda inp, w: inp @ w['w'], {'w': np.zeros((64, 5))})
    with pytest.raises(NetworkError, match='only a Keras model can be exported'):
        export(MAML(_config(1), network=forward), str(tmp_path / 'net.keras'))
