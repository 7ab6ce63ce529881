"""Checkpoints by the reference's TF1 variable names, written crash-safely.

This module alone decides what a checkpoint holds and under which names:
`contents(model, optimizers, state)` produces it and `restore(model, contents,
prefix, optimizers)` reads it back, given the model (its variables by TF1 name)
and the training's two Adam optimisers (optimizers.Optimizers) explicitly.

A checkpoint `model{itr}` is a TensorFlow V2 checkpoint (`.index` + `.data`)
holding each trainable variable under its TF1 name (`model/conv1`,
`model/Variable`, `model/0/beta`, ...), so the reference program and any TF1
tool can restore it by name. Beside them it holds what the reference lost on
resume: the Adam slots and beta powers (under TF1's own names) and this
port's run state (`maml/state_json`: the next iteration and the data position).

Saving writes temporary files, flushes them to disk and renames them into
place, data file first and `.index` last; checkpoints are found by their
`.index` files, so a save killed half way is never picked up. A save that
fails (a full disk) removes its temporary files and says which checkpoint is
the last complete one.
"""
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from typing import List, Optional

import numpy as np
import tensorflow as tf

STATE_KEY = 'maml/state_json'
MAX_TO_KEEP = 10
_NAME = re.compile(r'^model(\d+)\.index$')


class CheckpointError(ValueError):
    """A checkpoint that cannot serve these flags; the message says what to do."""


class UnreadableCheckpoint(CheckpointError):
    """The checkpoint to use cannot be read (truncated, corrupt); the caller knows the fix."""


@dataclasses.dataclass
class RunState:
    """What a resumed run needs beyond the weights and the optimisers: where it is."""
    next_iteration: int = 0
    batch_seed: Optional[int] = None    # the image batches' seed (shot order, rotations)
    val_batches_used: int = 0           # validation batches drawn so far
    numpy_random_state: Optional[List] = None  # numpy's global generator (sinusoid batches)

    def to_json(self):
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v is not None})

    @classmethod
    def from_json(cls, text):
        values = json.loads(text)
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


# ------------------------------------------------------------- contents
def optimizer_variables(optimizers):
    """Both Adam optimisers' variables, by the names a TF1 Saver gave them.

    The reference built its pre-training Adam first and its meta-training Adam
    second; TF1 named their slots VAR/Adam, VAR/Adam_1 and VAR/Adam_2,
    VAR/Adam_3, and their beta powers beta1_power, beta2_power and
    beta1_power_1, beta2_power_1.
    """
    entries = {}
    for optimizer, (m_name, v_name), power_suffix in (
            (optimizers.pretrain, ('Adam', 'Adam_1'), ''),
            (optimizers.metatrain, ('Adam_2', 'Adam_3'), '_1')):
        for name in optimizer.variables:
            entries[name + '/' + m_name] = optimizer.m[name]
            entries[name + '/' + v_name] = optimizer.v[name]
        entries['beta1_power' + power_suffix] = optimizer.beta1_power
        entries['beta2_power' + power_suffix] = optimizer.beta2_power
    return entries


def contents(model, optimizers, state):
    """{name: tensor} of one checkpoint: the model's weights, both optimisers, the run state."""
    tensors = dict(model.named_variables())
    tensors.update(optimizer_variables(optimizers))
    tensors[STATE_KEY] = tf.constant(state.to_json())
    return tensors


def read_state(contents):
    """The RunState a checkpoint holds, or None (the reference's hold only weights)."""
    if STATE_KEY not in contents:
        return None
    raw = contents[STATE_KEY]
    raw = raw.item() if isinstance(raw, np.ndarray) else raw
    return RunState.from_json(raw.decode() if isinstance(raw, bytes) else raw)


def restore(model, contents, prefix, optimizers=None, hint=''):
    """Set the model's weights (and, if given, both optimisers' state) from a
    checkpoint's contents; its RunState, or None for a checkpoint that holds
    only weights (the reference's: the optimisers stay as they are)."""
    assign(model.named_variables(), contents, prefix, hint)
    state = read_state(contents)
    if optimizers is not None and state is not None:
        assign(optimizer_variables(optimizers), contents, prefix, hint)
    return state


def list_checkpoints(folder):
    """[(iteration, prefix)] of the complete checkpoints in folder, oldest first."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = _NAME.match(name)
        if m:  # the iteration is parsed from the file name only, never the folder's path
            found.append((int(m.group(1)), os.path.join(folder, 'model' + m.group(1))))
    return sorted(found)


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_earlier_run(folder, subfolder):
    """Move folder's checkpoints, `checkpoint` file and event files into a new
    folder/subfolder (suffixed _2, _3, ... if taken); returns its name, or None
    if there was no checkpoint to move.

    Training afresh (--resume=False) where an earlier run left checkpoints would
    otherwise mix the two: checkpoints are ordered by iteration, so the earlier
    run's later ones would stay "latest" and push the new run's out of the last
    ten. Moving them keeps them, out of the way.
    """
    if not list_checkpoints(folder):
        return None
    names = [n for n in os.listdir(folder)
             if re.match(r'^model\d+\.(index|data-)', n) or n == 'checkpoint'
             or n.startswith('events.out.tfevents.')]
    target, suffix = subfolder, 1
    while os.path.exists(os.path.join(folder, target)):
        suffix += 1
        target = '%s_%d' % (subfolder, suffix)
    os.makedirs(os.path.join(folder, target))
    for name in names:
        os.replace(os.path.join(folder, name), os.path.join(folder, target, name))
    return target


def save(folder, iteration, tensors, max_to_keep=MAX_TO_KEEP):
    """Write `folder/model{iteration}` atomically from {name: tensor}; keep the last few.

    CheckpointError if it cannot be written (a full disk, a file-size limit):
    its temporary files are removed and the previous checkpoints stay as they were.
    """
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):  # left by a save that was killed half way
        if name.startswith('.saving-model'):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    prefix = os.path.join(folder, 'model%d' % iteration)
    tmp_dir = None
    try:
        tmp_dir = tempfile.mkdtemp(prefix='.saving-model%d-' % iteration, dir=folder)
        _write(tmp_dir, folder, iteration, tensors)
    except (tf.errors.OpError, OSError) as e:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        kept = [os.path.basename(p) for _, p in list_checkpoints(folder)]
        raise CheckpointError(
            'could not save checkpoint model%d in %s (%s): free space (or raise the file-size '
            'limit) and run the same command again; %s'
            % (iteration, folder, _reason(e), 'the last complete checkpoint %s is kept'
               % kept[-1] if kept else 'no earlier checkpoint exists'))
    kept = list_checkpoints(folder)
    for _, old in kept[:-max_to_keep] if max_to_keep else []:
        _remove(old)
    try:
        _write_state_file(folder, [p for _, p in list_checkpoints(folder)])
    except OSError as e:
        raise CheckpointError(
            'checkpoint model%d is saved in %s, but the `checkpoint` file naming it could not '
            'be written (%s): free space and run the same command to resume from it'
            % (iteration, folder, e.strerror))
    return prefix


def _write(tmp_dir, folder, iteration, tensors):
    """The files of checkpoint model{iteration}: written in tmp_dir, flushed, moved to folder."""
    prefix = os.path.join(folder, 'model%d' % iteration)
    tmp_prefix = os.path.join(tmp_dir, 'model%d' % iteration)
    names = list(tensors)
    tf.raw_ops.SaveV2(prefix=tmp_prefix, tensor_names=names, shape_and_slices=[''] * len(names),
                      tensors=[tf.convert_to_tensor(tensors[n]) for n in names])
    data_files = [f for f in os.listdir(tmp_dir) if '.data-' in f]
    for f in data_files + ['model%d.index' % iteration]:
        _fsync(os.path.join(tmp_dir, f))
    if os.path.exists(prefix + '.index'):
        os.remove(prefix + '.index')  # an old checkpoint of the same name stops counting first
    for f in data_files + ['model%d.index' % iteration]:  # .index last: it marks completeness
        os.replace(os.path.join(tmp_dir, f), os.path.join(folder, f))
    os.rmdir(tmp_dir)


def _reason(error):
    """The system's words for a failed write: 'File too large', 'No space left on device'."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    # TensorFlow's message: '... PATH.tempstateNNN; File too large [Op:SaveV2]'
    return error.message.split(' [Op:')[0].rsplit('; ', 1)[-1].strip()


def _remove(prefix):
    folder, base = os.path.split(prefix)
    for f in os.listdir(folder):
        if f == base + '.index' or f.startswith(base + '.data-'):
            os.remove(os.path.join(folder, f))


def _state_file_lines(prefixes):
    lines = ['model_checkpoint_path: "%s"' % os.path.basename(prefixes[-1])]
    lines += ['all_model_checkpoint_paths: "%s"' % os.path.basename(p) for p in prefixes]
    return '\n'.join(lines) + '\n'


def _write_state_file(folder, prefixes):
    """TF's `checkpoint` file, so tf.train.latest_checkpoint (and the reference) find ours."""
    if not prefixes:
        return
    write_atomically(os.path.join(folder, 'checkpoint'),
                     lambda f: f.write(_state_file_lines(prefixes)), 'w')


def write_atomically(path, write, mode):
    """Write path through write(file) in a temporary file of a unique name beside it
    (runs side by side never share one), flushed and then renamed over path;
    the temporary file is removed if writing fails."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, '.%s.%s.tmp' % (name, secrets.token_hex(6)))
    try:
        with open(tmp, mode.replace('w', 'x')) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# Temporary files of atomic writes, and the fixed name earlier versions used
# for the `checkpoint` file's. Only those older than STALE_SECONDS are removed:
# a younger one may be another run's write in progress (testing runs beside
# training), and a write of a few hundred bytes takes far less.
_TEMPORARY = re.compile(r'^(\.checkpoint\.tmp|\..+\.[0-9a-f]{12}\.tmp)$')
STALE_SECONDS = 60


def repair_state_file(folder, warn=None):
    """Make the `checkpoint` file name the newest complete checkpoint if it does not
    (a save killed before its last rename leaves it naming an older one, which TF1
    tools and tf.train.latest_checkpoint would then pick), and remove temporary
    files such kills left behind. Nothing happens in a folder that is not writable."""
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    prefixes = [p for _, p in list_checkpoints(folder)]
    if not prefixes or not os.access(folder, os.W_OK):
        return
    try:
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if _TEMPORARY.match(name) and time.time() - os.path.getmtime(path) > STALE_SECONDS:
                os.remove(path)
        if _state_file_names(folder) != os.path.normpath(prefixes[-1]):
            _write_state_file(folder, prefixes)
    except OSError as e:  # the checkpoints themselves are fine; the next save rewrites it
        warn('warning: could not repair %s (%s)'
             % (os.path.join(folder, 'checkpoint'), e.strerror))


def _state_file_names(folder):
    """The checkpoint prefix the `checkpoint` file names (resolved in folder), or None."""
    try:
        with open(os.path.join(folder, 'checkpoint')) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    m = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', text, re.MULTILINE)
    return os.path.normpath(os.path.join(folder, m.group(1))) if m else None


# TensorFlow's checkpoint reader takes its path as a file pattern: a folder
# named like run[1] matches nothing, so the checkpoint would read as missing.
_GLOB_CHARACTERS = re.compile(r'[*?\[\\]')


@contextlib.contextmanager
def _pattern_free(prefix):
    """prefix, or the same files through a link whose path has no pattern characters."""
    folder, base = os.path.split(os.path.abspath(prefix))
    if not _GLOB_CHARACTERS.search(folder):
        yield prefix
        return
    link_dir = tempfile.mkdtemp(prefix='maml-checkpoint-')
    link = os.path.join(link_dir, 'folder')
    try:
        os.symlink(folder, link, target_is_directory=True)
    except OSError:  # no symbolic links here: the reader's own error says what is wrong
        os.rmdir(link_dir)
        yield prefix
        return
    try:
        yield os.path.join(link, base)
    finally:
        os.remove(link)
        os.rmdir(link_dir)


def read(prefix):
    """{name: numpy array} of every tensor in a checkpoint; UnreadableCheckpoint if it
    cannot be read (a truncated .data file reads short: IndexError)."""
    try:
        with _pattern_free(prefix) as path:
            reader = tf.train.load_checkpoint(path)
            return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    except (tf.errors.OpError, ValueError, IndexError, OSError) as e:
        raise UnreadableCheckpoint('checkpoint %s cannot be read (%s)'
                                   % (prefix, (str(e).strip() or type(e).__name__).splitlines()[0]))


def latest_readable(folder, warn=None):
    """(iteration, prefix, contents) of the newest checkpoint that reads, or None if
    there is none.

    A corrupt or partial newest checkpoint is skipped, with a warning, in favour
    of the one before it. If none reads, UnreadableCheckpoint names the newest:
    starting afresh over them is for the user to choose.
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    failures = []
    for iteration, prefix in reversed(list_checkpoints(folder)):
        try:
            contents = read(prefix)
        except UnreadableCheckpoint as e:
            failures.append(e)
            continue
        for e in failures:
            warn('warning: %s; using the previous checkpoint' % e)
        return iteration, prefix, contents
    if failures:
        others = len(failures) - 1
        raise UnreadableCheckpoint('%s%s' % (failures[0], ', nor can the %d before it' % others
                                              if others else ''))
    return None


def find(folder, iteration=-1):
    """(iteration, prefix, contents) of checkpoint model{iteration} (the newest
    readable one for -1 or 0), or None; CheckpointError for a missing iteration,
    UnreadableCheckpoint for one that (or, for the newest, all that) cannot be read."""
    if iteration <= 0:
        return latest_readable(folder)
    prefix = os.path.join(folder, 'model%d' % iteration)
    if not os.path.exists(prefix + '.index'):
        existing = [str(i) for i, _ in list_checkpoints(folder)]
        raise CheckpointError('--test_iter=%d: no checkpoint %s (existing iterations: %s)'
                              % (iteration, prefix, ', '.join(existing) or 'none'))
    return iteration, prefix, read(prefix)


def assign(variables, contents, prefix, hint=''):
    """Set {name: tf.Variable} from a checkpoint's contents, checking names and shapes."""
    for name, var in variables.items():
        if name not in contents:
            raise CheckpointError('checkpoint %s has no variable %s (it was written with other '
                                  'flags%s)' % (prefix, name, hint))
        value = contents[name]
        if tuple(value.shape) != tuple(var.shape):
            raise CheckpointError('checkpoint %s: variable %s has shape %s but these flags need '
                                  '%s%s' % (prefix, name, list(value.shape), var.shape.as_list(),
                                            hint))
    for name, var in variables.items():
        var.assign(contents[name])
