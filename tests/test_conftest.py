"""The shared test helpers' own behaviour: the end-of-run line about missing data.

Each test runs a small pytest session (pytester) with this suite's conftest as a
plugin, on test files that ask for data through `require_data`.
"""
from conftest import HOW_TO_GET_DATA

NEEDS_DATA = '''
import pytest
from conftest import require_data

def test_needs_omniglot():
    require_data('omniglot/images_background.zip')

def test_needs_a_checkpoint():
    require_data('checkpoints/miniimagenet1shot')

def test_skips_for_another_reason():
    pytest.skip('not on this platform')

def test_runs():
    pass
'''


def run_session(pytester, monkeypatch, data_folder):
    monkeypatch.setenv('MAML_DATA_DIR', str(data_folder))
    monkeypatch.delenv('MAML_REQUIRE_DATA', raising=False)
    pytester.makepyfile(test_inner=NEEDS_DATA)
    return pytester.runpytest('-p', 'conftest', '-q')


def test_a_run_that_skipped_tests_for_want_of_data_ends_with_one_line_counting_them(
        pytester, monkeypatch, tmp_path_factory):
    result = run_session(pytester, monkeypatch, tmp_path_factory.mktemp('empty_data'))
    result.assert_outcomes(passed=1, skipped=3)
    line = '2 tests skipped: the real data sets were not found; ' + HOW_TO_GET_DATA
    # Last but one: only pytest's own "1 passed, 3 skipped in ..." follows it.
    assert result.outlines[-2] == line, result.outlines


def test_a_run_with_the_data_present_says_nothing_about_missing_data(
        pytester, monkeypatch, tmp_path_factory):
    data = tmp_path_factory.mktemp('data')
    (data / 'omniglot').mkdir()
    (data / 'omniglot' / 'images_background.zip').write_bytes(b'')
    (data / 'checkpoints' / 'miniimagenet1shot').mkdir(parents=True)
    result = run_session(pytester, monkeypatch, data)
    result.assert_outcomes(passed=3, skipped=1)
    assert not any('real data sets were not found' in line for line in result.outlines)
