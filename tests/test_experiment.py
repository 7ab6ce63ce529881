"""The experiment in-process: what a run saves. Each test one sentence."""
import os

import checkpoint
import experiment
import schedule
from config import Config
from conftest import tiny_miniimagenet


class _ShortSchedule(schedule.Schedule):
    """The reference's schedule compressed a hundredfold: summaries every 1,
    prints every 1, validations every 5 and saves every 10 iterations."""

    def __init__(self, config, validation):
        super().__init__(config, validation)
        self.print_interval, self.validation_interval = 1, 5 if validation else None


def test_a_checkpoint_saved_where_a_run_also_validates_counts_that_validation_batch(
        tmp_path, monkeypatch):
    # Iteration 10 saves and validates. A run resumed from model10 must draw
    # the validation batches after the one that validation used, as the
    # uninterrupted run does: 11 summary batches (0 to 10) and the
    # validations at 5 and 10.
    monkeypatch.setattr(schedule, 'SUMMARY_INTERVAL', 1)
    monkeypatch.setattr(schedule, 'SAVE_INTERVAL', 10)
    monkeypatch.setattr(experiment, 'Schedule', _ShortSchedule)
    config = Config(datasource='miniimagenet', num_filters=2, meta_batch_size=1,
                    update_batch_size=1, max_pool=True, metatrain_iterations=12, seed=4,
                    log=False, logdir=str(tmp_path / 'logs'),
                    data_folder=tiny_miniimagenet(str(tmp_path / 'data'), classes=5))
    assert experiment.run(config) == 0
    exp_dir = os.path.join(config.logdir, config.exp_string)
    assert [i for i, _ in checkpoint.list_checkpoints(exp_dir)] == [10, 11]
    state = checkpoint.read_state(checkpoint.read(os.path.join(exp_dir, 'model10')))
    assert state.next_iteration == 11
    assert state.val_batches_used == 11 + 2
