"""--model: the network a run meta-learns, named on the command line.

`--model` names one of
- `module:function`: a module on the Python path or in the current folder;
- `path/to/file.py:function`: a Python file;
- `path/to/model.keras`: a Keras model saved with `model.save(...)`.
The function is called with the run's Config and returns a Keras model or a
networks.Network:

    def my_model(config) -> keras.Model | networks.Network

A Keras model takes one task's examples as the data source gives them,
[examples, config.dim_input] (images flattened: reshape them to
[config.img_size, config.img_size, config.channels] inside the model), and
returns [examples, config.dim_output]. `load(config)` turns the flag into the
network maml.MAML runs (None without --model: the reference's net); anything
wrong with it is a NetworkError of one line.
"""
import importlib
import importlib.util
import os
import re
import sys
import traceback

import numpy as np
import tensorflow as tf

from config import KERAS_SUFFIX, MODEL_SPEC as _SPEC
from networks import Network, NetworkError

def _where(error):
    """' (at file:line)' of the innermost frame an exception came from."""
    frames = traceback.extract_tb(error.__traceback__)
    return ' (at %s:%d)' % (frames[-1].filename, frames[-1].lineno) if frames else ''


def _one_line(error):
    return '%s: %s' % (type(error).__name__, str(error).strip().splitlines()[0]
                       if str(error).strip() else '')


def _import(spec, module):
    """The module of --model=module:function (a dotted name or a .py file)."""
    if module.endswith('.py'):
        if not os.path.isfile(module):
            raise NetworkError('--model=%s: no file %s' % (spec, module))
        name = '_maml_model_' + re.sub(r'\W', '_', os.path.abspath(module))
        # The file's folder on the path, so that it can import its neighbours.
        folder = os.path.dirname(os.path.abspath(module))
        if folder not in sys.path:
            sys.path.insert(0, folder)
        loader_spec = importlib.util.spec_from_file_location(name, module)
        mod = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = mod  # so that Keras and pickle find its classes
        try:
            loader_spec.loader.exec_module(mod)
        except Exception as e:  # noqa: BLE001 (the user's code: any error, as one line)
            del sys.modules[name]
            raise NetworkError('--model=%s: importing %s raised %s%s'
                               % (spec, module, _one_line(e), _where(e)))
        return mod
    # python main.py puts main.py's folder on the path, not the current one.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + '.')):
            raise NetworkError('--model=%s: no module %s on the Python path or in the current '
                               'folder (give a module name, or path/to/file.py:function)'
                               % (spec, module))
        raise NetworkError('--model=%s: importing %s raised %s%s'
                           % (spec, module, _one_line(e), _where(e)))
    except Exception as e:  # noqa: BLE001
        raise NetworkError('--model=%s: importing %s raised %s%s'
                           % (spec, module, _one_line(e), _where(e)))


def _call(config):
    """What --model names: the function's result, or the saved Keras model."""
    spec = config.model
    if spec.endswith(KERAS_SUFFIX):
        import keras
        import keras_network  # noqa: F401 (registers the exact norm layers for loading)
        if not os.path.isfile(spec):
            raise NetworkError('--model=%s: no such file' % spec)
        try:
            return keras.saving.load_model(spec, compile=False)
        except Exception as e:  # noqa: BLE001
            raise NetworkError('--model=%s: cannot load the Keras model (%s)'
                               % (spec, _one_line(e)))
    match = _SPEC.match(spec)
    module, function = match.group('module'), match.group('function')
    mod = _import(spec, module)
    if not hasattr(mod, function):
        raise NetworkError('--model=%s: %s has no %s' % (spec, module, function))
    fn = getattr(mod, function)
    if not callable(fn):
        raise NetworkError('--model=%s: %s.%s is of type %s, not a function'
                           % (spec, module, function, type(fn).__name__))
    try:
        return fn(config)
    except NetworkError as e:
        raise NetworkError('--model=%s: %s' % (spec, e))
    except Exception as e:  # noqa: BLE001
        raise NetworkError('--model=%s: %s(config) raised %s%s'
                           % (spec, function, _one_line(e), _where(e)))


def _input_description(config):
    if config.classification:
        return ('%s images of %dx%dx%d, flattened' % (config.datasource, config.img_size,
                                                     config.img_size, config.channels))
    return 'sinusoid x' + (' with amplitude and phase (oracle)' if config.baseline else '')


def build(model, config, spec):
    """Build an unbuilt Keras model for the data source's input [examples, dim_input]."""
    import keras
    try:
        if isinstance(model, keras.Sequential):
            # Any number of examples per task (a call would fix the batch size).
            model.build((None, config.dim_input))
        else:
            # A call rather than model.build(): a subclassed model without a
            # build() of its own would be marked built with no weights.
            model(tf.zeros([2, config.dim_input]))
    except Exception as e:  # noqa: BLE001
        raise NetworkError('--model=%s: the Keras model is not built, and building it for input '
                           'shape (None, %d) (%s) failed (%s): build it in the function, or '
                           'call it once on a batch' % (spec, config.dim_input,
                                                        _input_description(config), _one_line(e)))


def network(config, made, spec=None):
    """`made` (a Keras model or a Network) as the Network MAML runs, checked against
    the data; spec: how errors name it (default: the --model flag)."""
    import keras
    from keras_network import KerasNetwork
    spec = config.model if spec is None else spec
    if isinstance(made, keras.Model):
        if not made.built:
            build(made, config, spec)
            print('note: --model=%s returned an unbuilt Keras model: built it for input shape '
                  '(None, %d) (%s)' % (spec, config.dim_input, _input_description(config)),
                  file=sys.stderr)
        try:
            made = KerasNetwork(made, stop_grad=config.stop_grad)
        except NetworkError as e:
            raise NetworkError('--model=%s: %s' % (spec, e))
    elif not isinstance(made, Network):
        raise NetworkError('--model=%s returned an object of type %s: return a keras.Model or '
                           'a networks.Network' % (spec, type(made).__name__))
    _check_output(made, config, spec)
    return made


def _check_output(net, config, spec):
    """One forward pass on zeros: the outputs must be [tasks, examples, dim_output]."""
    inp = tf.zeros([1, 2, config.dim_input])
    weights = net.initial_weights()
    try:
        out = net.forward_tasks(inp, {k: weights[k] for k in net.adapted})
    except NetworkError as e:
        raise NetworkError('--model=%s: %s' % (spec, e))
    except Exception as e:  # noqa: BLE001
        raise NetworkError('--model=%s: the model fails on the data source\'s input, shape '
                           '(examples, %d) (%s): %s%s' % (spec, config.dim_input,
                                                          _input_description(config),
                                                          _one_line(e), _where(e)))
    shape = list(np.shape(out))
    if len(shape) != 3 or shape[-1] != config.dim_output:
        needs = ('%d class scores (--num_classes)' % config.dim_output if config.classification
                 else '1 prediction')
        raise NetworkError('--model=%s gives outputs of shape %s for one task of 2 examples; '
                           '--datasource=%s needs %s per example: shape (2, %d)'
                           % (spec, shape[1:] if len(shape) > 1 else shape, config.datasource,
                              needs, config.dim_output))
    if not out.dtype.is_floating:
        raise NetworkError('--model=%s gives %s outputs: it must give floats'
                           % (spec, out.dtype.name))


def load(config):
    """The Network that --model names (None without it: the reference's net).
    Call it where the variables belong (inside the strategy's scope)."""
    if config.model is None:
        return None
    return network(config, _call(config))
