"""The training schedule: when a run summarises, prints, saves, validates and cuts its calls."""
import pytest

from config import Config
from schedule import SAVE_INTERVAL, SUMMARY_INTERVAL, Schedule


def _omniglot(**overrides):
    return Schedule(Config(datasource='omniglot', **overrides), validation=True)


def test_sinusoid_prints_every_thousand_iterations_and_never_validates():
    schedule = Schedule(Config(datasource='sinusoid', metatrain_iterations=70000), validation=False)
    assert [i for i in range(1, 5001) if schedule.prints(i)] == [1000, 2000, 3000, 4000, 5000]
    assert not any(schedule.validates(i) for i in range(70000))
    assert schedule.steps_per_call == SUMMARY_INTERVAL


def test_image_runs_print_every_hundred_and_validate_every_five_hundred_iterations():
    schedule = _omniglot(metatrain_iterations=60000)
    assert [i for i in range(1, 1001) if schedule.prints(i)] == list(range(100, 1001, 100))
    assert [i for i in range(1, 2001) if schedule.validates(i)] == [500, 1000, 1500, 2000]
    assert schedule.steps_per_call == 1


def test_checkpoints_are_saved_every_thousand_iterations_and_after_the_last():
    schedule = _omniglot(metatrain_iterations=2500)
    assert [i for i in range(2500) if schedule.saves(i)] == [1000, 2000, 2499]
    assert SAVE_INTERVAL == 1000


def test_iteration_zero_is_summarised_but_never_printed_saved_or_validated():
    schedule = _omniglot(metatrain_iterations=100)
    assert schedule.summarises(0) and not schedule.reports(0)


def test_the_oracle_pretrains_for_all_its_iterations():
    schedule = Schedule(Config(baseline='oracle', pretrain_iterations=10,
                               metatrain_iterations=70000), validation=False)
    assert schedule.total == 70010 and schedule.pretraining(70009)
    assert Config(baseline='oracle', metatrain_iterations=5).num_pretrain_iterations == 5
    assert Config(pretrain_iterations=3, metatrain_iterations=5).num_pretrain_iterations == 3


@pytest.mark.parametrize('datasource, start, pretrain, metatrain', [
    ('sinusoid', 0, 1050, 1951), ('sinusoid', 1051, 1050, 1951), ('sinusoid', 0, 2000, 0),
    ('sinusoid', 1250, 0, 1500), ('omniglot', 0, 50, 1150), ('omniglot', 37, 0, 560)])
def test_calls_cover_every_iteration_once_and_never_span_a_summary_a_report_or_pretraining(
        datasource, start, pretrain, metatrain):
    schedule = Schedule(Config(datasource=datasource, pretrain_iterations=pretrain,
                               metatrain_iterations=metatrain), validation=datasource != 'sinusoid')
    calls = list(schedule.calls(start))
    assert [i for c in calls for i in c] == list(range(start, pretrain + metatrain))
    for c in calls:
        assert 1 <= len(c) <= schedule.steps_per_call
        assert all(not schedule.summarises(i) and i != pretrain for i in c[1:]), c
        assert not any(schedule.reports(i) for i in c[:-1]), c
        # ... and is as long as it may be between those boundaries.
        end = c[-1] + 1
        assert len(c) == schedule.steps_per_call or end in (schedule.total, pretrain) or \
            schedule.summarises(end) or schedule.reports(c[-1]), c


def test_a_finished_run_has_no_calls_left():
    assert list(_omniglot(metatrain_iterations=100).calls(100)) == []
