"""TensorFlow's process settings for this project; import before tensorflow.

Environment variables are read once, when TensorFlow loads, so the command
line, the tests and the benchmarks import this first and all run the same
kernels. A value already set in the environment wins.

TensorFlow's C++ libraries also print notices while they load (no CUDA
drivers, cuInit failed, CPU instructions, oneDNN on), before their logging is
set up, so TF_CPP_MIN_LOG_LEVEL cannot filter them: this module imports
TensorFlow with standard error pointed at /dev/null, then restores it. An
import that fails still raises its Python error. A multi-worker job also
silences what TensorFlow's C++ side prints later (`silence_native_stderr`).
MAML_TF_NOTICES=1 shows them all.
"""
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # keep TensorFlow's start-up notices quiet
# oneDNN's CPU kernels: faster on the conv nets (results/benchmarks.md), not on
# by default in every TensorFlow build; the golden parity tests pass with them.
# TF_ENABLE_ONEDNN_OPTS=0 turns them off.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')


def _import_tensorflow_quietly():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow
                # Looking for GPUs tries CUDA once (the cuInit notice on a
                # CPU-only host); the answer is cached for later calls.
                tensorflow.config.list_physical_devices('GPU')
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def silence_native_stderr():
    """From now on, what TensorFlow's C++ side writes to standard error (file
    descriptor 2) goes to /dev/null, while Python's sys.stderr keeps the
    original stream: its lines, tracebacks and progress still show.

    For multi-worker jobs, whose gRPC and collective layers log each lost
    connection and aborted all-reduce from C++ threads, before the Python
    error that says the same in one line. TF_CPP_MIN_LOG_LEVEL cannot do
    this: it is read once, when TensorFlow loads, and a value already in the
    environment (of a shell or a test runner) would win. MAML_TF_NOTICES=1
    keeps them.
    """
    global _native_stderr_silenced
    if os.environ.get('MAML_TF_NOTICES') == '1' or _native_stderr_silenced:
        return
    stream = sys.stderr
    stream.flush()
    kept = os.dup(2)
    with open(os.devnull, 'w') as devnull:
        os.dup2(devnull.fileno(), 2)
    sys.stderr = open(kept, 'w', buffering=1, encoding=stream.encoding, errors=stream.errors)
    _native_stderr_silenced = True


_native_stderr_silenced = False

if os.environ.get('MAML_TF_NOTICES') != '1' and 'tensorflow' not in sys.modules:
    _import_tensorflow_quietly()
