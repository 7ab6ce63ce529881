"""Parity of the image task lists with the reference (golden `tasks_*.json`).

test_golden.py turns each `tasks_*.json` into a case and calls check_task_list.
The data tree a file refers to is prepared from the real data once per test
session with this project's own preparation scripts, in a temporary folder.
"""
import atexit
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile

from conftest import REPO_ROOT, require_data
from config import Config
from data_generator import DataGenerator

_TREES = {}


def _prepared_tree(datasource):
    """Omniglot: both archives resized and merged; MiniImagenet: the three zips extracted."""
    if datasource in _TREES:
        return _TREES[datasource]
    if datasource == 'omniglot':
        sources = require_data('omniglot/images_background.zip', 'omniglot/images_evaluation.zip')
        script = os.path.join(REPO_ROOT, 'data', 'omniglot_resized', 'resize_images.py')
        args = sources
    else:
        sources = require_data('miniImagenet/train_subset100.zip', 'miniImagenet/val_subset100.zip',
                               'miniImagenet/test.zip')
        script = os.path.join(REPO_ROOT, 'data', 'miniImagenet', 'proc_images.py')
        args = ['--from'] + sources
    out = tempfile.mkdtemp(prefix='maml-golden-%s-' % datasource)
    atexit.register(shutil.rmtree, out, True)
    subprocess.run([sys.executable, script] + args + ['--out', out], check=True,
                   stdout=subprocess.DEVNULL)
    _TREES[datasource] = out
    return out


def _parse_flags(argv):
    """The file's command-line flags as a Config (types from Config's defaults)."""
    values = {}
    fields = Config.__dataclass_fields__
    for arg in argv:
        name, _, raw = arg.lstrip('-').partition('=')
        assert name in fields, 'unknown flag %s in golden file' % arg
        default = fields[name].default
        if isinstance(default, bool):
            values[name] = raw in ('True', 'true', '1', '')
        elif isinstance(default, int) and not isinstance(default, bool):
            values[name] = int(raw)
        elif isinstance(default, float):
            values[name] = float(raw)
        else:
            values[name] = raw
    return Config(**values)


def check_task_list(path):
    with open(path) as f:
        golden = json.load(f)
    config = _parse_flags(golden['flags'])
    config = dataclasses.replace(config, data_folder=_prepared_tree(config.datasource))
    assert config.num_samples_per_class == golden['num_samples_per_class'], \
        'the port would draw %d images per class for these flags, the reference drew %d' % (
            config.num_samples_per_class, golden['num_samples_per_class'])
    generator = DataGenerator(golden['num_samples_per_class'], config.meta_batch_size, config)
    assert generator.num_classes == golden['num_classes']

    assert generator.metatrain_character_folders == golden['metatrain_folders']
    assert generator.metaval_character_folders == golden['metaval_folders']
    for key, train, count_key in (('train_first_tasks', True, 'train_num_tasks'),
                                  ('eval_first_tasks', False, 'eval_num_tasks')):
        if key not in golden:
            continue
        tasks = generator.task_list(train)
        assert len(tasks) == golden[count_key]
        for i, expected in enumerate(golden[key]):
            assert tasks.task_files(i) == expected, '%s[%d] differs' % (key, i)
