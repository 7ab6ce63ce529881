"""progress.py: progress on stderr, never on stdout. Each test one sentence."""
import io

import progress
from progress import Progress


class _Log(io.StringIO):
    def isatty(self):
        return False


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
    bar.update(5)
    bar.say('Iteration 5: 1.0, 0.5')
    bar.close('wrote the files')
    assert log.getvalue() == ''
    assert capsys.readouterr().out == 'Iteration 5: 1.0, 0.5\n'
