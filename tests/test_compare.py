"""compare.py: two test results side by side. Each test one sentence."""
import glob
import os
import pickle

import numpy as np
import pytest

import compare
from conftest import REPO_ROOT


def _write(path, mses):
    with open(path, 'wb') as f:
        pickle.dump({'mses': np.asarray(mses, dtype=np.float32)}, f)
    return str(path)


def test_the_same_tasks_in_another_order_are_not_called_different(tmp_path, capsys):
    rng = np.random.default_rng(0)
    values = rng.normal(0.5, 0.1, (600, 3))
    a = _write(tmp_path / 'a.pkl', values)
    b = _write(tmp_path / 'b.pkl', values[rng.permutation(600)])
    assert compare.main([a, b]) == 0
    rows = [l for l in capsys.readouterr().out.splitlines() if l.startswith('| update')]
    assert len(rows) == 3 and all(l.endswith('| no |') for l in rows)


def test_a_real_shift_is_called_different_with_its_size(tmp_path, capsys):
    rng = np.random.default_rng(1)
    a = _write(tmp_path / 'a.pkl', rng.normal(0.5, 0.1, (600, 2)))
    b = _write(tmp_path / 'b.pkl', rng.normal(0.6, 0.1, (600, 2)))
    rows = compare.compare(compare.load_result(a), compare.load_result(b))
    assert all(r[-1] for r in rows)
    assert abs(rows[0][5] + 0.1) < 0.02


def test_a_folder_with_one_result_is_read_and_one_with_none_is_refused(tmp_path, capsys):
    (tmp_path / 'run').mkdir()
    _write(tmp_path / 'run' / 'test_ubs1_stepsize0.4.pkl', np.ones((600, 2)))
    assert compare.load_result(str(tmp_path / 'run')).shape == (600, 2)
    (tmp_path / 'empty').mkdir()
    assert compare.main([str(tmp_path / 'run'), str(tmp_path / 'empty')]) == 2
    assert 'holds 0 test_*.pkl files' in capsys.readouterr().err


def test_a_pickle_of_an_unknown_class_is_one_error_line_naming_the_file(tmp_path, capsys):
    good = _write(tmp_path / 'a.pkl', np.ones((600, 2)))
    bad = tmp_path / 'b.pkl'
    bad.write_bytes(b'cno_such_module\nResult\n)\x81.')  # protocol-0 GLOBAL of a missing module
    assert compare.main([good, str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'b.pkl' in err[0] and 'no_such_module' in err[0]


def test_results_of_different_k_step_size_or_steps_are_refused_naming_what_differs(
        tmp_path, capsys):
    for name in ('sine10', 'sine5'):
        (tmp_path / name).mkdir()
    k10 = _write(tmp_path / 'sine10' / 'test_ubs10_stepsize0.01.pkl', np.ones((600, 11)))
    k5 = _write(tmp_path / 'sine5' / 'test_ubs5_stepsize0.01.pkl', np.ones((600, 11)))
    assert compare.main([k10, k5]) == 2
    err = capsys.readouterr().err
    assert 'K (update_batch_size): 10 vs 5' in err and '--force' in err
    lr = _write(tmp_path / 'sine5' / 'test_ubs10_stepsize0.001.pkl', np.ones((600, 11)))
    assert compare.main([k10, lr]) == 2
    assert 'inner step size (update_lr): 0.01 vs 0.001' in capsys.readouterr().err
    steps = _write(tmp_path / 'sine5' / 'test_ubs10_stepsize0.01.pkl', np.ones((600, 6)))
    assert compare.main([k10, steps]) == 2
    assert 'inner steps tested: 10 vs 5' in capsys.readouterr().err
    assert compare.main([k10, k5, '--force']) == 0
    assert 'warning: the results differ in K' in capsys.readouterr().err


def test_results_trained_with_different_flags_are_refused(tmp_path, capsys):
    folders = ['cls_5.mbs_25.ubs_10.numstep1.updatelr0.01nonorm',
               'cls_5.mbs_25.ubs_10.numstep5.updatelr0.01nonorm']
    paths = []
    for folder in folders:
        (tmp_path / folder).mkdir()
        paths.append(_write(tmp_path / folder / 'test_ubs10_stepsize0.01.pkl', np.ones((600, 11))))
    assert compare.main(paths) == 2
    assert 'training inner steps (num_updates): 1 vs 5' in capsys.readouterr().err



class _RunsACommand:
    """Unpickling this runs a shell command, as a hostile result file could."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, ('touch %s' % self.marker,)


def test_a_result_that_would_run_a_command_is_refused_without_running_it(tmp_path, capsys):
    good = _write(tmp_path / 'a.pkl', np.ones((600, 2)))
    marker = tmp_path / 'ran'
    hostile = tmp_path / 'b.pkl'
    with open(hostile, 'wb') as f:
        pickle.dump({'mses': _RunsACommand(marker)}, f)
    assert compare.main([good, str(hostile)]) == 2
    assert not marker.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(hostile) in err[0]
    assert 'not a plain test result' in err[0] and 'system' in err[0]


@pytest.mark.parametrize('protocol', range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_result_pickled_with_any_protocol_is_read(tmp_path, protocol):
    values = np.random.default_rng(2).normal(0.5, 0.1, (600, 3)).astype(np.float32)
    path = tmp_path / 'a.pkl'
    with open(path, 'wb') as f:
        pickle.dump({'mses': values}, f, protocol=protocol)
    np.testing.assert_array_equal(compare.load_result(str(path)), values)


# {'mses': np.array([[0.5, 0.25], [0.75, 1.0], [0.125, 0.375]], np.float32)}
# as Python 2.7's pickle writes it with numpy 1.x (the original program's
# results), with protocol 0 (its default) and 2.
PYTHON2_PICKLES = {
    0: b"(dp0\nS'mses'\np1\ncnumpy.core.multiarray\n_reconstruct\np2\n(cnumpy\nndarray\np3\n"
       b"(I0\ntp4\nS'b'\np5\ntp6\nRp7\n(I1\n(I3\nI2\ntp8\ncnumpy\ndtype\np9\n(S'f4'\np10\nI0\n"
       b"I1\ntp11\nRp12\n(I3\nS'<'\np13\nNNNI-1\nI-1\nI0\ntp14\nbI00\nS'\\x00\\x00\\x00?\\x00"
       b"\\x00\\x80>\\x00\\x00@?\\x00\\x00\\x80?\\x00\\x00\\x00>\\x00\\x00\\xc0>'\np15\ntp16\nbs.",
    2: b'\x80\x02}q\x00U\x04msesq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray'
       b'\nq\x03K\x00\x85q\x04U\x01bq\x05\x87q\x06Rq\x07(K\x01K\x03K\x02\x86q\x08cnumpy\ndtype\n'
       b'q\tU\x02f4q\nK\x00K\x01\x87q\x0bRq\x0c(K\x03U\x01<q\rNNNJ\xff\xff\xff\xffJ\xff\xff\xff'
       b'\xffK\x00tq\x0eb\x89U\x18\x00\x00\x00?\x00\x00\x80>\x00\x00@?\x00\x00\x80?\x00\x00\x00>'
       b'\x00\x00\xc0>q\x0ftq\x10bs.',
}


@pytest.mark.parametrize('protocol', sorted(PYTHON2_PICKLES))
def test_a_python2_result_of_the_original_program_is_read(tmp_path, protocol):
    path = tmp_path / 'test_ubs1_stepsize0.4.pkl'
    path.write_bytes(PYTHON2_PICKLES[protocol])
    np.testing.assert_array_equal(compare.load_result(str(path)),
                                  [[0.5, 0.25], [0.75, 1.0], [0.125, 0.375]])


def test_every_result_committed_to_the_repository_is_read():
    paths = glob.glob(os.path.join(REPO_ROOT, 'results', '**', 'test_*.pkl'), recursive=True)
    assert paths
    for path in paths:
        assert compare.load_result(path).shape[0] == 600, path


def test_a_result_with_a_nan_is_refused_rather_than_called_no_different(tmp_path, capsys):
    good = _write(tmp_path / 'a.pkl', np.ones((600, 2)))
    values = np.ones((600, 2))
    values[7, 1] = np.nan
    bad = _write(tmp_path / 'b.pkl', values)
    assert compare.main([good, bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and bad in err[0] and 'not finite' in err[0] and 'task 7' in err[0]


def test_a_result_without_tasks_is_refused_rather_than_called_no_different(tmp_path, capsys):
    good = _write(tmp_path / 'a.pkl', np.ones((600, 2)))
    empty = _write(tmp_path / 'b.pkl', np.ones((0, 2)))
    assert compare.main([good, empty]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and empty in err[0] and 'at least 2 tasks' in err[0]


def test_a_folder_named_like_a_glob_pattern_is_read_as_a_name(tmp_path):
    folder = tmp_path / 'run[1]'
    folder.mkdir()
    _write(folder / 'test_ubs1_stepsize0.4.pkl', np.ones((600, 2)))
    assert compare.load_result(str(folder)).shape == (600, 2)


def test_a_result_whose_mses_is_not_an_array_of_numbers_is_one_error_line(tmp_path, capsys):
    good = _write(tmp_path / 'a.pkl', np.ones((600, 2)))
    odd = tmp_path / 'b.pkl'
    with open(odd, 'wb') as f:
        pickle.dump({'mses': [[10 ** 400, 1], [1, 2]]}, f)  # too large for a float
    assert compare.main([good, str(odd)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(odd) in err[0] and 'not an array of numbers' in err[0]
