"""compare.py: two test results side by side. Each test one sentence."""
import pickle

import numpy as np

import compare


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
