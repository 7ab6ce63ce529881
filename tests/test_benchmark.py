"""bench/benchmark.py's command line runs as documented. Each test one sentence.

These check that the options run and print their tables, on the smallest
configuration with the shortest windows; they time nothing (speeds are
recorded in results/benchmarks.md, never asserted).
"""
import os
import subprocess
import sys

BENCHMARK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         'bench', 'benchmark.py')


def _benchmark(*args):
    return subprocess.run([sys.executable, BENCHMARK] + list(args), capture_output=True,
                          text=True, timeout=600)


def _table_rows(stdout, first_cell):
    return [[cell.strip() for cell in line.strip('|').split('|')]
            for line in stdout.splitlines() if line.startswith('| %s |' % first_cell)]


def test_both_networks_run_side_by_side_and_the_table_gives_their_ratio():
    out = _benchmark('--configs', 'sinusoid', '--orders', '2', '--networks', 'builtin', 'keras',
                     '--windows', '2', '--min_window_seconds', '0.01')
    assert out.returncode == 0, out.stderr[-2000:]
    [row] = _table_rows(out.stdout, 'sinusoid')
    assert 'failed' not in ' '.join(row), row
    config, order, threads, builtin, keras, ratio, spread = row[:7]
    assert order == '2'
    # The ratio is the median of the window pairs' ratios: within their spread.
    low, high = (float(x) for x in spread.split(' - '))
    assert float(builtin) > 0 and float(keras) > 0
    assert low <= float(ratio.rstrip('x')) <= high
    assert 'command: python bench/benchmark.py --configs sinusoid' in out.stdout


def test_the_keras_network_alone_fills_the_usual_table():
    out = _benchmark('--configs', 'sinusoid', '--orders', '1', '--networks', 'keras',
                     '--windows', '1', '--min_window_seconds', '0.01')
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'Benchmark (Keras path)' in out.stdout
    [row] = _table_rows(out.stdout, 'sinusoid')
    assert 'failed' not in ' '.join(row) and float(row[3]) > 0, row


def test_options_that_time_the_built_in_network_only_refuse_the_keras_one():
    out = _benchmark('--networks', 'builtin', 'keras', '--reference')
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith(
        'time the built-in network only: run them without --networks')
