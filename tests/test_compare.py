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

