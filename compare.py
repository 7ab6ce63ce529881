"""Compare two test results side by side, e.g. this port against the original program.

Usage:
  python compare.py RESULT_A RESULT_B [--names port reference] [--alpha 0.05]

Each RESULT is a `test_ubs*_stepsize*.pkl` written by `main.py --train=False`
(by this port or by the original TF1 program: both write `{'mses': [600, steps+1]}`),
or the experiment folder holding exactly one such file. For every column
(update0 = before adaptation, updatej = after j inner steps) it prints both
means +- 95% CI (1.96 std / sqrt(n), as main.py reports them), their
difference, and Welch's two-sample t-test (the tasks of the two runs are drawn
independently), saying whether the two differ at the chosen level.

Results of different settings are refused, naming what differs: K and the
inner step size (from the file names `test_ubs{K}_stepsize{alpha}.pkl`), the
number of inner steps (the columns), and, when the experiment folder is
named as main.py names it, the training K, steps and step size. `--force`
compares them anyway.

A result file is read without running anything it holds (a pickle can name
any function to call): only the few numpy names an array needs are admitted,
anything else is refused naming the file. Results with fewer than 2 tasks or
with NaN or infinite values are refused too (they would compare as "no").
"""
import argparse
import glob
import os
import pickle
import re
import sys

import numpy as np
from scipy import stats


class CompareError(ValueError):
    pass


def result_file(path):
    """The .pkl a RESULT names: itself, or the one test_*.pkl of a folder."""
    if os.path.isdir(path):
        # glob.escape: a folder named like run[1] is a name, not a pattern
        found = sorted(glob.glob(os.path.join(glob.escape(path), 'test_*.pkl')))
        if len(found) != 1:
            raise CompareError('%s holds %d test_*.pkl files (%s): name the one to compare'
                               % (path, len(found), ', '.join(os.path.basename(f) for f in found)
                                  or 'none'))
        path = found[0]
    return path


def settings(path, values):
    """What a result was made with, as far as its names and shape tell: {setting: value}."""
    found = {'inner steps tested': values.shape[1] - 1}
    name = re.match(r'^test_ubs(\d+)_stepsize(.+)\.pkl$', os.path.basename(path))
    if name:
        found['K (update_batch_size)'] = int(name.group(1))
        found['inner step size (update_lr)'] = float(name.group(2))
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    trained = re.match(r'^cls_(\d+)\.mbs_\d+\.ubs_(\d+)\.numstep(\d+)\.updatelr([0-9.e-]+?)'
                       r'(?:hidden|maxpool|stopgrad|oracle|batchnorm|layernorm|nonorm)', folder)
    if trained:
        found['classes (num_classes)'] = int(trained.group(1))
        found['training K'] = int(trained.group(2))
        found['training inner steps (num_updates)'] = int(trained.group(3))
        found['training inner step size'] = float(trained.group(4))
    return found


def mismatches(settings_a, settings_b):
    """['name: a vs b'] for every setting both results know and that differs."""
    return ['%s: %s vs %s' % (k, settings_a[k], settings_b[k])
            for k in settings_a if k in settings_b and settings_a[k] != settings_b[k]]


try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1
    from numpy.core.multiarray import _reconstruct


class _Refused(pickle.UnpicklingError):
    """A result pickle asked for something a plain array of numbers never needs."""


class _NdarrayName:
    """Stands for numpy.ndarray in a result pickle: it is only ever the first
    argument of _reconstruct, never called (that would allocate any size asked)."""


def _empty_array(subtype, shape, typecode):
    """numpy's _reconstruct as an array's pickle calls it: an empty ndarray,
    which the pickled state then fills (from bytes that are in the file)."""
    if subtype is not _NdarrayName or tuple(shape) != (0,):
        raise _Refused('numpy _reconstruct with other arguments')
    return _reconstruct(np.ndarray, (0,), typecode)


def _from_buffer(buffer, dtype, shape, order):
    """numpy's _frombuffer as protocol 5 pickles an array: the array over bytes from the file."""
    if not isinstance(buffer, (bytes, bytearray)) or not isinstance(dtype, np.dtype):
        raise _Refused('numpy _frombuffer with other arguments')
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _latin1(text, encoding='latin1', errors='strict'):
    """_codecs.encode as Python 3's protocols 0-2 use it for an array's bytes."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1') or errors != 'strict':
        raise _Refused('_codecs.encode with encoding %r' % (encoding,))
    return text.encode('latin1')


# Every name the pickle of {'mses': ndarray} can hold, in Python 2 and 3 and
# under numpy 1's and 2's module names; nothing else is looked up.
_ADMITTED = {
    ('numpy.core.multiarray', '_reconstruct'): _empty_array,
    ('numpy._core.multiarray', '_reconstruct'): _empty_array,
    ('numpy.core.numeric', '_frombuffer'): _from_buffer,
    ('numpy._core.numeric', '_frombuffer'): _from_buffer,
    ('numpy', 'ndarray'): _NdarrayName,
    ('numpy', 'dtype'): np.dtype,
    ('_codecs', 'encode'): _latin1,
}


class ResultUnpickler(pickle.Unpickler):
    """Reads a test result and nothing else: a pickle calls whatever it names,
    so a result file from elsewhere could run any code; here a name outside
    the few an array of numbers needs is refused before anything is called."""

    def find_class(self, module, name):
        if (module, name) in _ADMITTED:
            return _ADMITTED[(module, name)]
        raise _Refused('%s.%s' % (module, name))

    def persistent_load(self, pid):
        raise _Refused('a persistent object %r' % (pid,))


def load_result(path):
    """The [tasks, steps+1] array of a test result (.pkl, or a folder with one)."""
    path = result_file(path)
    try:
        with open(path, 'rb') as f:
            # latin1 reads Python 2 pickles (the original program's) too
            result = ResultUnpickler(f, encoding='latin1').load()
    except _Refused as e:
        raise CompareError('%s is not a plain test result (it asks to load %s): nothing in it '
                           'was run; compare only results written by main.py --train=False or '
                           'the original program' % (path, e))
    except Exception as e:  # a pickle can fail in any way: name the file, not a traceback
        raise CompareError('cannot read %s as a pickled test result (%s: %s)'
                           % (path, type(e).__name__, e))
    if not isinstance(result, dict) or 'mses' not in result:
        raise CompareError("%s is not a test result: expected a dict with key 'mses'" % path)
    mses = result['mses']
    if not isinstance(mses, np.ndarray) or mses.dtype.kind not in 'biuf':
        raise CompareError('%s: mses is %s, not an array of numbers; compare only results '
                           'written by main.py --train=False or the original program'
                           % (path, 'an array of %s' % mses.dtype if isinstance(mses, np.ndarray)
                                    else 'a %s' % type(mses).__name__))
    values = mses.astype(np.float64)
    if values.ndim != 2:
        raise CompareError('%s: mses has shape %s, expected [tasks, steps+1]' % (path, values.shape))
    # Means, CIs and Welch's test need at least two tasks of finite values; a
    # NaN would otherwise read as "no difference".
    if values.shape[0] < 2 or values.shape[1] < 1:
        raise CompareError('%s: mses has shape %s, expected [tasks, steps+1] with at least 2 tasks; '
                           'compare the result of a complete test run' % (path, values.shape))
    bad = ~np.isfinite(values)
    if bad.any():
        task, step = np.argwhere(bad)[0]
        raise CompareError('%s: %d values are not finite (the first: task %d, update%d = %s); '
                           'a run whose loss diverged cannot be compared, rerun its test'
                           % (path, bad.sum(), task, step, values[task, step]))
    return values


def compare(a, b, alpha=0.05):
    """Rows of (step, mean_a, ci_a, mean_b, ci_b, difference, p-value, differ)."""
    rows = []
    for step in range(min(a.shape[1], b.shape[1])):
        x, y = a[:, step], b[:, step]
        ci_x = 1.96 * x.std() / np.sqrt(len(x))
        ci_y = 1.96 * y.std() / np.sqrt(len(y))
        if x.std() == 0 and y.std() == 0:
            p = 1.0 if x.mean() == y.mean() else 0.0
        else:
            p = float(stats.ttest_ind(x, y, equal_var=False).pvalue)
        rows.append((step, x.mean(), ci_x, y.mean(), ci_y, x.mean() - y.mean(), p, p < alpha))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('result_a')
    parser.add_argument('result_b')
    parser.add_argument('--names', nargs=2, default=['A', 'B'])
    parser.add_argument('--alpha', type=float, default=0.05)
    parser.add_argument('--force', action='store_true',
                        help='compare results made with different settings anyway')
    args = parser.parse_args(argv)
    try:
        a, b = load_result(args.result_a), load_result(args.result_b)
        differ = mismatches(settings(result_file(args.result_a), a),
                            settings(result_file(args.result_b), b))
        if differ and not args.force:
            raise CompareError('the two results were made with different settings (%s): compare '
                               'results of the same flags, or pass --force'
                               % '; '.join(differ))
    except CompareError as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    name_a, name_b = args.names
    for line in differ:
        print('warning: the results differ in %s (--force)' % line, file=sys.stderr)
    print('%s: %s (%d tasks)' % (name_a, args.result_a, a.shape[0]))
    print('%s: %s (%d tasks)' % (name_b, args.result_b, b.shape[0]))
    if a.shape[1] != b.shape[1]:
        print('note: %d vs %d columns; comparing the first %d'
              % (a.shape[1], b.shape[1], min(a.shape[1], b.shape[1])))
    print('| step | %s mean +- 95%% CI | %s mean +- 95%% CI | difference | Welch p | differ at %g? |'
          % (name_a, name_b, args.alpha))
    print('|---|---|---|---|---|---|')
    for step, ma, ca, mb, cb, diff, p, differ in compare(a, b, args.alpha):
        print('| update%d | %.4f +- %.4f | %.4f +- %.4f | %+.4f | %.3g | %s |'
              % (step, ma, ca, mb, cb, diff, p, 'yes' if differ else 'no'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
