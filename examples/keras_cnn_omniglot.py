"""A custom Keras CNN meta-learned on Omniglot with --model.

Three conv blocks (3x3 conv, exact batch norm, ReLU, 2x2 max pool), a spatial
average and a dense head: a plain Keras model whose only project-specific part
is ExactBatchNormalization, Keras's BatchNormalization with an exact second
derivative (Keras's own would make the second-order meta-gradient wrong).

    python main.py --datasource=omniglot --model=examples/keras_cnn_omniglot.py:cnn \
        --metatrain_iterations=60000 --meta_batch_size=32 --update_batch_size=1 \
        --update_lr=0.4 --num_updates=1 --logdir=logs/omniglot5way/
"""
import keras

from keras_network import ExactBatchNormalization


def cnn(config):
    """The model for this run's Config: one task's flattened images in
    ([examples, 28 * 28]), one logit per class (--num_classes) out;
    --num_filters filters per conv."""
    layers = keras.layers
    inp = keras.Input((config.dim_input,))
    x = layers.Reshape((config.img_size, config.img_size, config.channels))(inp)
    for _ in range(3):
        x = layers.Conv2D(config.num_filters, 3, padding='same')(x)
        # Each task's own batch statistics (MAML runs the model with training=True).
        x = ExactBatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(config.dim_output)(x), name='cnn')
