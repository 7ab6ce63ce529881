"""TensorFlow's process settings: what reaches standard error. Each test one sentence."""
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A native write to file descriptor 2 (as TensorFlow's C++ logging does) and
# a Python line, after silencing. TensorFlow itself is not needed: marking it
# loaded keeps tf_env from importing it.
SILENCE_THEN_WRITE = (
    'import os, sys; sys.modules["tensorflow"] = None; import tf_env; '
    'tf_env.silence_native_stderr(); os.write(2, b"native notice\\n"); '
    'print("python line", file=sys.stderr)')


@pytest.mark.parametrize('notices, expected', [
    ('0', 'python line\n'),
    ('1', 'native notice\npython line\n'),
])
def test_silenced_native_stderr_keeps_python_lines_unless_notices_are_asked_for(notices, expected):
    proc = subprocess.run([sys.executable, '-c', SILENCE_THEN_WRITE], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=60,
                          env=dict(os.environ, MAML_TF_NOTICES=notices))
    assert proc.returncode == 0
    assert proc.stderr == expected
