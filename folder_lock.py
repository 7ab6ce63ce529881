"""One training job per experiment folder.

The chief of a training job holds an exclusive `flock` on EXPERIMENT/.lock for
as long as it runs; the operating system releases it when the process ends,
however it ends, so a killed run leaves no stale lock. The file names the
holder (host, process, job), so a second run is refused with a line saying who
trains there. A job's other workers only check that the folder is not held by
another job.
"""
import fcntl
import json
import os
import socket
import sys
import time

LOCK_NAME = '.lock'
_held = {}  # folder -> open file, kept for the life of the process


class FolderInUse(ValueError):
    """Another run trains in this experiment folder."""


def _describe(info):
    return 'process %s on host %s' % (info.get('pid', '?'), info.get('host', '?'))


def _read(path):
    try:
        with open(path) as f:
            return json.loads(f.read() or '{}')
    except (OSError, ValueError):
        return {}


def _read_holder(path, patience=2.0):
    """The holder's info. A holder writes it right after taking the lock (truncate,
    then write): a file read empty or half-written in between is read again, for
    at most `patience` seconds."""
    deadline = time.monotonic() + patience
    info = _read(path)
    while 'pid' not in info and time.monotonic() < deadline:
        time.sleep(0.05)
        info = _read(path)
    return info


def _try_lock(f, attempts):
    # A worker of the same job checks the lock for an instant: its chief
    # retries for a moment rather than take that for another run.
    for attempt in range(attempts):
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if attempt + 1 < attempts:
                time.sleep(0.1)
    return False


def hold(folder, job=None, holder=True):
    """Take the folder's lock (holder) or check that only this job holds it;
    FolderInUse if another run or job trains there."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    f = open(path, 'a+')
    if not _try_lock(f, attempts=20 if holder else 1):
        info = _read_holder(path)
        f.close()
        if not holder and job is not None and info.get('job') == job:
            return  # held by this job's chief
        raise FolderInUse('%s is in use: %s trains there (started as: %s). Wait for it to end, '
                          'stop it, or give this run another --logdir'
                          % (folder, _describe(info), info.get('command', '?')))
    if not _is_current(f, path):
        # Removed by a run that gave the folder up (release(remove=True))
        # between our open and our lock: take the lock of the file there now.
        f.close()
        return hold(folder, job, holder)
    if not holder:
        # Nobody trains here yet; this job's chief takes the lock.
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
        return
    f.seek(0)
    f.truncate()
    f.write(json.dumps({'host': socket.gethostname(), 'pid': os.getpid(), 'job': job,
                        'command': ' '.join(sys.argv)}))
    f.flush()
    _held[os.path.abspath(folder)] = f


def _is_current(f, path):
    try:
        return os.path.samestat(os.fstat(f.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def release(folder, remove=False):
    """Give the lock up; remove: delete the lock file too (while still held,
    so that no other run holds a lock on a file no longer there)."""
    f = _held.pop(os.path.abspath(folder), None)
    if f is not None:
        if remove:
            os.remove(os.path.join(folder, LOCK_NAME))
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
