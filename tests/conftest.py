"""Shared test fixtures: where the real data sets and golden files live.

Tests that need the real data sets read them from ``MAML_DATA_DIR`` (default:
``../shared/data`` beside this repository, when it exists). Without it they skip
with a message saying how to get the data, unless ``MAML_REQUIRE_DATA=1`` (set
by CI), under which a missing data set fails instead.
"""
import os
import sys

import pytest

# The same TensorFlow settings as main.py, so in-process tests check the path
# that training takes.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

DEFAULT_DATA_DIR = os.path.join(REPO_ROOT, '..', 'shared', 'data')
HOW_TO_GET_DATA = (
    'set MAML_DATA_DIR to a folder holding omniglot/images_background.zip, '
    'omniglot/images_evaluation.zip, miniImagenet/{train_subset100,val_subset100,test}.zip '
    'and checkpoints/ (see README.md, "Data")')


def data_dir():
    return os.environ.get('MAML_DATA_DIR', DEFAULT_DATA_DIR)


def require_data(*relative_paths):
    """Return the absolute paths of these data files, or skip (fail under MAML_REQUIRE_DATA=1)."""
    root = data_dir()
    paths = [os.path.join(root, p) for p in relative_paths]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        message = 'real data not found (%s); %s' % (', '.join(missing), HOW_TO_GET_DATA)
        if os.environ.get('MAML_REQUIRE_DATA') == '1':
            pytest.fail(message)
        pytest.skip(message)
    return paths
