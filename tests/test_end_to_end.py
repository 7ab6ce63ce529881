"""bench/end_to_end.py times a program from the lines it prints. Each test one sentence.

The programs here are stand-ins that print main.py's lines on a known
schedule, so the measured rates can be checked against it.
"""
import sys
import textwrap

import pytest

from bench.end_to_end import rate, time_program, usage_flags


def _program(tmp_path, body):
    path = tmp_path / 'main.py'
    path.write_text(textwrap.dedent('''\
        import sys, time
        args = dict(a[2:].split('=', 1) for a in sys.argv[1:])
        ''') + textwrap.dedent(body))
    return str(path)


def test_the_rate_between_two_printed_iterations_follows_the_lines_timestamps(tmp_path):
    main_py = _program(tmp_path, '''\
        print('Done initializing, starting training.', flush=True)
        for itr in range(100, int(args['metatrain_iterations']), 100):
            time.sleep(0.2)
            print('Iteration %d: 0.5, 0.6' % itr, flush=True)
        ''')
    result = time_program(main_py, ['--datasource=omniglot'], 400)
    assert sorted(result['times']) == [100, 200, 300, 400]
    # 300 iterations in three sleeps of 0.2 s: about 500 it/s, slower if the host is busy.
    assert 250 < rate(result, 100, 400) <= 300 / 0.6 * 1.01
    assert result['startup_s'] < result['times'][100]


def test_a_program_that_fails_reports_its_last_error_line(tmp_path):
    main_py = _program(tmp_path, '''\
        print('Done initializing, starting training.', flush=True)
        sys.exit('DataError: no images in data/omniglot_resized')
        ''')
    result = time_program(main_py, [], 400)
    assert result == {'error': 'DataError: no images in data/omniglot_resized'}


def test_a_program_killed_by_a_signal_reports_the_signal_not_its_last_notice(tmp_path):
    main_py = _program(tmp_path, '''\
        import os, signal
        print('WARNING: some deprecation notice', file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        ''')
    error = time_program(main_py, [], 400)['error']
    assert error.startswith('killed by signal 9 (SIGKILL: out of memory?) at peak RSS '), error


def test_the_program_gets_the_usage_line_the_window_and_a_fresh_folder(tmp_path):
    main_py = _program(tmp_path, '''\
        print(' '.join(sys.argv[1:]), file=sys.stderr)
        sys.exit(1)
        ''')
    error = time_program(main_py, usage_flags({'datasource': 'omniglot', 'num_updates': 1}, True),
                         300, data_folder='/data/omni')['error']
    assert error.startswith('--datasource=omniglot --num_updates=1 --stop_grad=True --log=False '
                            '--resume=False --metatrain_iterations=301 --logdir=')
    assert error.endswith(' --data_folder=/data/omni')


@pytest.mark.parametrize('order,flag', [(2, []), (1, ['--stop_grad=True'])])
def test_first_order_adds_stop_grad_to_the_usage_line(order, flag):
    assert usage_flags({'datasource': 'sinusoid'}, order == 1) == ['--datasource=sinusoid'] + flag
