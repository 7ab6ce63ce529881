"""The one-job-per-folder lock (more in test_distribute.py). Each test one sentence."""
import os

import folder_lock


def test_a_lock_file_removed_by_its_holder_while_a_run_waits_is_not_the_one_it_takes(
        tmp_path, monkeypatch):
    folder = str(tmp_path / 'exp')
    path = os.path.join(folder, folder_lock.LOCK_NAME)
    real_try_lock = folder_lock._try_lock

    def removed_meanwhile(f, attempts):
        # The holder gives the folder up (release(remove=True)) between this
        # run's open and its lock.
        os.remove(path)
        monkeypatch.setattr(folder_lock, '_try_lock', real_try_lock)
        return real_try_lock(f, attempts)

    monkeypatch.setattr(folder_lock, '_try_lock', removed_meanwhile)
    folder_lock.hold(folder)
    try:
        held = folder_lock._held[os.path.abspath(folder)]
        assert os.path.samestat(os.fstat(held.fileno()), os.stat(path))
    finally:
        folder_lock.release(folder)


def test_releasing_with_remove_deletes_the_lock_file(tmp_path):
    folder = str(tmp_path / 'exp')
    folder_lock.hold(folder)
    folder_lock.release(folder, remove=True)
    assert os.listdir(folder) == []
