"""Progress of a long run on stderr, so that stdout keeps exactly the reference's lines.

On a terminal, tqdm's live bar (iteration, iterations/s, time left); in a log
file (stderr not a terminal), the same text as one line every LOG_INTERVAL
seconds. Lines for stdout go through `say`, which keeps them clear of the bar.
"""
import os
import sys
import time

from tqdm import tqdm

LOG_INTERVAL = 60  # seconds between progress lines when stderr is not a terminal


class Progress:
    def __init__(self, enabled, total, start=0, what='training'):
        self.enabled, self.total, self.start, self.what = enabled, total, start, what
        self.began = self.last_line = time.monotonic()
        self._bar = None
        if enabled and sys.stderr.isatty():
            # A terminal that reports no size (some ptys) counts as 100 x 24:
            # tqdm would hide its bar on a screen of 0 lines.
            known = os.get_terminal_size(sys.stderr.fileno()).columns > 0
            self._bar = tqdm(total=total, initial=start, desc=what, unit='it', file=sys.stderr,
                             dynamic_ncols=known, ncols=None if known else 100,
                             nrows=None if known else 24, leave=False)

    def update(self, done):
        """`done` iterations (of total) are finished."""
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
        elif self.enabled and time.monotonic() - self.last_line >= LOG_INTERVAL:
            self.last_line = time.monotonic()
            print(tqdm.format_meter(done, self.total, self.last_line - self.began, prefix=self.what,
                                    unit='it', initial=self.start), file=sys.stderr, flush=True)

    def say(self, line):
        """A line for stdout (the reference's), printed clear of a live bar."""
        if self._bar is not None:
            tqdm.write(line, file=sys.stdout)
            sys.stdout.flush()
        else:
            print(line, flush=True)

    def close(self, summary=None):
        """End the bar; `summary` (where the files went) is printed on stderr."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.enabled and summary:
            print(summary, file=sys.stderr, flush=True)
