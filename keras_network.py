"""Keras models as MAML networks, with normalisation whose second derivative is exact.

`KerasNetwork(model)` meta-learns a built Keras 3 model (functional, Sequential
or subclassed): a forward pass on given weights is what
`model.stateless_call(trainable_values, non_trainable_values, x, training=True)`
computes (see KerasNetwork._forward for why not that call itself), so the
inner loop's fast weights are plain tensors and the meta-gradient
reaches the model's variables through every inner step. `training=True`
throughout: normalisation uses each task's own batch statistics, as the
reference does; the moving averages are not used (the updates stateless_call
returns are dropped). Variables are named by their Keras paths (`v.path`).

Keras's own BatchNormalization and LayerNormalization take their statistics
with `ops.moments`, which stops the gradient through the mean inside the
variance: values and first derivatives are right, second derivatives are not,
so MAML's meta-gradient would be silently wrong. `ExactBatchNormalization` and
`ExactLayerNormalization` are the same layers with exact moments.
"""
import keras
import tensorflow as tf

from networks import ForwardFunction, NetworkError, ReferenceNetwork
from utils import BATCH_NORM_EPSILON, LAYER_NORM_EPSILON


def _exact_moments(x, axes, keepdims=False):
    # No stop_gradient anywhere: the variance's dependence on the mean stays
    # in the graph, which the second derivative needs.
    mean = tf.reduce_mean(x, axes, keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axes, keepdims=keepdims)
    return (mean if keepdims else tf.squeeze(mean, axes)), variance


@keras.saving.register_keras_serializable(package='maml')
class ExactBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization with exact second derivatives (same arguments)."""

    def _moments(self, inputs, mask):
        if mask is not None:  # Keras's masked moments are written out (exact) already
            return super()._moments(inputs, mask)
        return _exact_moments(inputs, self._reduction_axes)


@keras.saving.register_keras_serializable(package='maml')
class ExactLayerNormalization(keras.layers.LayerNormalization):
    """keras.layers.LayerNormalization with exact second derivatives (same arguments).

    params_axis: the axes the scale and offset span, when not those normalised
    over (default: `axis`, as Keras). TF1's layer_norm (the reference's)
    normalises an image over height, width and channels with one scale and
    offset per channel: `axis=[1, 2, 3], params_axis=-1`.
    """

    def __init__(self, axis=-1, params_axis=None, **kwargs):
        super().__init__(axis=axis, **kwargs)
        self.params_axis = params_axis

    def build(self, input_shape):
        if self.params_axis is None:
            return super().build(input_shape)
        # Keras sizes gamma and beta by self.axis: build them over params_axis.
        norm_axis, self.axis = self.axis, self.params_axis
        super().build(input_shape)
        self.axis = sorted(norm_axis) if isinstance(norm_axis, (list, tuple)) else [norm_axis]

    def call(self, inputs):
        x = tf.cast(inputs, keras.backend.result_type(inputs.dtype, 'float32'))
        rank = len(x.shape)
        axes = sorted(a % rank for a in self.axis)
        mean, variance = _exact_moments(x, axes, keepdims=True)
        params_axes = axes if self.params_axis is None else sorted(
            a % rank for a in (self.params_axis if isinstance(self.params_axis, (list, tuple))
                               else [self.params_axis]))
        shape = [x.shape[a] if a in params_axes else 1 for a in range(rank)]
        # tf.nn.batch_normalization's arithmetic, as the reference's layer norm.
        inv = tf.math.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            inv = inv * tf.reshape(tf.cast(self.gamma, x.dtype), shape)
        offset = -mean * inv
        if self.beta is not None:
            offset = tf.reshape(tf.cast(self.beta, x.dtype), shape) + offset
        return tf.cast(x * inv + offset, self.compute_dtype)

    def get_config(self):
        return dict(super().get_config(), params_axis=self.params_axis)


# Layers whose moments stop the gradient (see the module's docstring).
_INEXACT_NORMS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                  keras.layers.GroupNormalization, keras.layers.UnitNormalization)
_EXACT_NORMS = (ExactBatchNormalization, ExactLayerNormalization)
# Layers whose weights the inner loop leaves alone: the reference adapts conv
# and dense weights and biases, and meta-learns the norm offsets only.
_NORM_LAYERS = _INEXACT_NORMS + (keras.layers.RMSNormalization,)


class KerasNetwork(ForwardFunction):
    """A built Keras model as a MAML network (see the module's docstring).

    stop_grad: first-order MAML (the inner gradients are constants), where
    Keras's own normalisation layers are exact enough and allowed.
    adapted: the Keras paths the inner loop adapts; default every trainable
    variable but those of normalisation layers.
    checkpoint_names: Keras path -> checkpoint name (default: the path).
    exact_only=False: accept layers known to give a wrong second derivative
    (only to demonstrate that they do).
    The model's input is one task's examples as the data source gives them
    ([examples, dim_input]); it returns logits or predictions [examples, out].
    """

    def __init__(self, model, stop_grad=False, adapted=None, checkpoint_names=None,
                 exact_only=True, map_tasks='loop'):
        if not isinstance(model, keras.Model):
            raise NetworkError('expected a keras.Model, got %s' % type(model).__name__)
        if not model.built:
            raise NetworkError('Keras model %r is not built: call it once on a batch, or '
                               'model.build(input_shape), before meta-learning it' % model.name)
        # Every layer at any depth (Keras has no public recursive listing;
        # model.layers stops at the first level of a subclassed model).
        layers = list(model._flatten_layers(include_self=False, recursive=True))
        _refuse_random_layers(layers)
        if exact_only and not stop_grad:
            _refuse_inexact_norms(layers)
        self.model = model
        trainable = model.trainable_variables
        if not any(v.dtype.startswith('float') for v in trainable):
            raise NetworkError('Keras model %r has no trainable float weights' % model.name)
        self._trainable = trainable
        self._paths = [v.path for v in trainable]
        if adapted is None:
            norm_weights = {id(v) for layer in layers if isinstance(layer, _NORM_LAYERS)
                            for v in layer.trainable_variables}
            adapted = [v.path for v in trainable if id(v) not in norm_weights]
        super().__init__(self._forward, {v.path: v.value for v in trainable}, adapted,
                         checkpoint_names, map_tasks)

    def _forward(self, inp, weights):
        # What model.stateless_call(trainable, non_trainable, inp, training=True)
        # does, but through model(...) rather than model.call(...): Keras then
        # hands training=True down to every layer, also in a subclassed model
        # whose call() takes no `training` (stateless_call would pass it to
        # call() itself: a TypeError there, and inference-mode normalisation
        # in the nested layers). State updates (moving averages) are dropped.
        mapping = list(zip(self._trainable, [weights[p] for p in self._paths]))
        mapping += [(v, v.value) for v in self.model.non_trainable_variables]
        with keras.StatelessScope(state_mapping=mapping):
            return self.model(inp, training=True)


def _refuse_random_layers(layers):
    for layer in layers:
        if getattr(layer, '_seed_generators', None):
            raise NetworkError(
                "layer %r (%s) draws random numbers in training: MAML runs the model with "
                "training=True in every inner step and in the meta-objective, so it would draw "
                "a different mask or noise in each forward pass of one task; not supported: "
                "remove the layer" % (layer.name, type(layer).__name__))


def _refuse_inexact_norms(layers):
    for layer in layers:
        if isinstance(layer, _INEXACT_NORMS) and not isinstance(layer, _EXACT_NORMS):
            name = type(layer).__name__
            fix = ('use keras_network.Exact%s (same arguments)' % name
                   if name in ('BatchNormalization', 'LayerNormalization') else
                   'remove it')
            raise NetworkError(
                "layer %r is Keras's %s, whose statistics stop the gradient through the mean, "
                "so the second-order meta-gradient would be wrong: %s, or train first order "
                "(stop_grad=True)" % (layer.name, name, fix))


# ------------------------------------------------- the reference's nets in Keras
def reference_keras_model(config, dtype=None):
    """The reference's network for `config` as a plain Keras model.

    Standard Conv2D / Dense / MaxPooling2D / ReLU layers and the exact norms,
    with the reference's initialisers. Layers are named after the reference's
    weight keys (conv1.., w1.., w5, norm scopes 0..), see reference_checkpoint_names.
    Input: one task's examples flattened, [examples, dim_input].
    """
    layers = keras.layers
    inp = keras.Input((config.dim_input,), dtype=dtype)
    if config.conv_net:
        x = layers.Reshape((config.img_size, config.img_size, config.channels), dtype=dtype)(inp)
        for i in range(4):
            x = layers.Conv2D(config.num_filters, 3, strides=1 if config.max_pool else 2,
                              padding='same', kernel_initializer='glorot_uniform',
                              name='conv%d' % (i + 1), dtype=dtype)(x)
            x = _reference_norm(config.norm, str(i), x, dtype, image=True)
            x = layers.ReLU(dtype=dtype)(x)
            if config.max_pool:
                x = layers.MaxPooling2D(2, 2, 'valid', dtype=dtype)(x)
        if config.flattened_head:
            x = layers.Flatten(dtype=dtype)(x)
            init = 'glorot_uniform'
        else:
            x = layers.GlobalAveragePooling2D(dtype=dtype)(x)
            init = keras.initializers.RandomNormal(stddev=1.0)
        out = layers.Dense(config.dim_output, kernel_initializer=init, name='w5',
                           dtype=dtype)(x)
    else:
        hidden = [40, 40] if not config.classification else [256, 128, 64, 64]
        scopes = ['0'] + [str(i + 1) for i in range(1, len(hidden))]
        x = inp
        for i, (size, scope) in enumerate(zip(hidden, scopes)):
            x = layers.Dense(size, kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=0.01), name='w%d' % (i + 1), dtype=dtype)(x)
            x = _reference_norm(config.norm, scope, x, dtype, image=False)
            x = layers.ReLU(dtype=dtype)(x)
        out = layers.Dense(config.dim_output, kernel_initializer=keras.initializers.TruncatedNormal(
            stddev=0.01), name='w%d' % (len(hidden) + 1), dtype=dtype)(x)
    return keras.Model(inp, out, name='reference')


def _reference_norm(norm, scope, x, dtype, image):
    if norm == 'batch_norm':  # offset, no scale, the batch's statistics
        return ExactBatchNormalization(scale=False, epsilon=BATCH_NORM_EPSILON, name=scope,
                                       dtype=dtype)(x)
    if norm == 'layer_norm':  # each example over all its features, per-channel params
        axis = [1, 2, 3] if image else -1
        return ExactLayerNormalization(axis=axis, params_axis=-1, epsilon=LAYER_NORM_EPSILON,
                                       name=scope, dtype=dtype)(x)
    return x


def reference_checkpoint_names(model, config):
    """Keras path -> the reference's TF1 name, for a reference_keras_model(config)."""
    keys = {}  # Keras path -> the built-in net's weight key
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            number = layer.name[len('conv'):] if layer.name.startswith('conv') else \
                layer.name[len('w'):]
            keys[layer.kernel.path] = layer.name
            keys[layer.bias.path] = 'b' + number
        for v in layer.trainable_variables:
            if isinstance(layer, _EXACT_NORMS):
                keys[v.path] = '%s/%s' % (layer.name, v.path.rsplit('/', 1)[-1])
    names = ReferenceNetwork(config).checkpoint_names
    return {path: names[key] for path, key in keys.items()}


# ------------------------------------------------------------------- export
EXPORT_SUFFIXES = ('.keras', '.weights.h5')


def export(maml, path):
    """Write the meta-learned initial weights of `maml` (a MAML on a KerasNetwork) into
    its Keras model and save it to path: `.keras` (the whole model, loadable with
    keras.saving.load_model once this module is imported) or `.weights.h5` (the
    weights only, for model.load_weights). Returns path."""
    network = maml.network
    if not isinstance(network, KerasNetwork):
        raise NetworkError('only a Keras model can be exported: this network is a %s'
                           % type(network).__name__)
    if not path.endswith(EXPORT_SUFFIXES):
        raise NetworkError('cannot export to %s: give a path ending in .keras or .weights.h5'
                           % path)
    # MAML's variables are the model's own (KerasNetwork hands over each Keras
    # variable's backing tf.Variable); assigned all the same, so that the file
    # holds the meta-learned values whatever holds them.
    values = network.initial_weights()
    for variable, key in zip(network._trainable, network._paths):
        variable.assign(values[key])
    if path.endswith('.keras'):
        network.model.save(path)
    else:
        network.model.save_weights(path)
    return path
