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


def test_a_worker_that_checks_while_its_chief_is_still_writing_the_lock_file_passes(tmp_path):
    # The chief holds the lock but has not yet written who it is (its file
    # is empty between its truncate and its write): the worker reads again.
    import fcntl
    import json
    import threading
    folder = str(tmp_path / 'exp')
    os.makedirs(folder)
    path = os.path.join(folder, folder_lock.LOCK_NAME)
    with open(path, 'a+') as chief:
        fcntl.flock(chief, fcntl.LOCK_EX | fcntl.LOCK_NB)

        def write_info():
            chief.write(json.dumps({'host': 'h', 'pid': 1, 'job': 'job-a', 'command': 'c'}))
            chief.flush()
        writer = threading.Timer(0.3, write_info)
        writer.start()
        try:
            folder_lock.hold(folder, job='job-a', holder=False)
        finally:
            writer.join()
