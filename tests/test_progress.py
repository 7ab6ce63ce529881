"""progress.py: progress on stderr, never on stdout. Each test one sentence."""
import io
import re
import types

import progress
from progress import Progress


class _Log(io.StringIO):
    def isatty(self):
        return False


class _Clock:
    """A stand-in for time.monotonic that moves only when told."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _fake_clock(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress, 'time', types.SimpleNamespace(monotonic=clock))
    return clock


def test_in_a_log_file_progress_is_a_line_with_rate_and_time_left_per_interval(monkeypatch):
    log = _Log()
    monkeypatch.setattr('sys.stderr', log)
    monkeypatch.setattr(progress, 'LOG_INTERVAL', 0)
    bar = Progress(True, 1000, start=200)
    bar.update(600)
    bar.close('wrote the files')
    lines = log.getvalue().splitlines()
    assert lines[0].startswith('training:  60%') and '600/1000' in lines[0] and 'it/s' in lines[0]
    assert '<' in lines[0]  # elapsed<remaining
    assert lines[-1] == 'wrote the files'


def test_disabled_progress_writes_nothing_but_still_passes_stdout_lines(monkeypatch, capsys):
    log = _Log()
    monkeypatch.setattr('sys.stderr', log)
    monkeypatch.setattr(progress, 'LOG_INTERVAL', 0)
    bar = Progress(False, 10)
    with bar.compiling('the training step'):
        bar.update(5)
    bar.say('Iteration 5: 1.0, 0.5')
    bar.close('wrote the files')
    assert log.getvalue() == ''
    assert capsys.readouterr().out == 'Iteration 5: 1.0, 0.5\n'


def test_the_first_call_is_announced_as_compiling_while_it_runs_and_timed_after(monkeypatch):
    log = _Log()
    monkeypatch.setattr('sys.stderr', log)
    clock = _fake_clock(monkeypatch)
    bar = Progress(True, 200)
    with bar.compiling('the training step'):
        assert log.getvalue() == 'compiling the training step...\n'
        clock.now += 364.2
    bar.update(1)
    assert log.getvalue().splitlines()[1] == 'compiled the training step in 6 min 04 s'


def test_the_time_left_counts_only_the_iterations_after_the_compiling_call(monkeypatch):
    # 364 s to compile and run iteration 0, then 1 s an iteration: 99 left
    # after iteration 100 take 99 s, not 99 x 3.6 s.
    log = _Log()
    monkeypatch.setattr('sys.stderr', log)
    monkeypatch.setattr(progress, 'LOG_INTERVAL', 0)
    clock = _fake_clock(monkeypatch)
    bar = Progress(True, 200)
    with bar.compiling('the training step'):
        clock.now += 364
    bar.update(1)
    clock.now += 100
    bar.update(101)
    last = log.getvalue().splitlines()[-1]
    assert '101/200' in last
    elapsed, left = re.search(r'\[([\d:]+)<([\d:]+),', last).groups()
    assert (elapsed, left) == ('01:40', '01:39'), last


def test_a_run_shorter_than_the_log_interval_still_ends_with_a_line_of_its_progress(monkeypatch):
    log = _Log()
    monkeypatch.setattr('sys.stderr', log)
    clock = _fake_clock(monkeypatch)
    bar = Progress(True, 600, what='testing', items='tasks')
    with bar.compiling('the test step'):
        clock.now += 9.8
    bar.update(1)
    clock.now += 2.5
    bar.update(600)
    bar.close()
    assert log.getvalue().splitlines()[-1] == \
        'testing: 600/600 tasks in 12.3 s (9.8 s of it compiling)'
