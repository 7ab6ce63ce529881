"""Progress of a long run on stderr, so that stdout keeps exactly the reference's lines.

On a terminal, tqdm's live bar (iteration, iterations/s, time left); in a log
file (stderr not a terminal), the same text as one line every LOG_INTERVAL
seconds. Lines for stdout go through `say`, which keeps them clear of the bar.

The first call of a compiled step traces and compiles it, which can take
minutes: `compiling` announces it with a line before and its duration after,
and the rate (hence the time left) counts only the iterations after it.
When the run ends, one line says how far it got and how long it took, so
that a run shorter than LOG_INTERVAL shows its progress in a log too.
"""
import contextlib
import os
import sys
import threading
import time

from tqdm import tqdm

LOG_INTERVAL = 60  # seconds between progress lines when stderr is not a terminal


def duration(seconds):
    """'6.1 s', or '6 min 04 s' from a minute on."""
    if seconds < 60:
        return '%.1f s' % seconds
    return '%d min %02d s' % divmod(int(round(seconds)), 60)


def _on_stderr():
    """tqdm's settings for a line on the terminal that stderr is, erased when done."""
    # A terminal that reports no size (some ptys) counts as 100 x 24:
    # tqdm would hide its bar on a screen of 0 lines.
    known = os.get_terminal_size(sys.stderr.fileno()).columns > 0
    return dict(file=sys.stderr, dynamic_ncols=known, ncols=None if known else 100,
                nrows=None if known else 24, leave=False)


class Progress:
    def __init__(self, enabled, total, start=0, what='training', items='iterations'):
        self.enabled, self.total, self.what, self.items = enabled, total, what, items
        self._tty = enabled and sys.stderr.isatty()
        self._bar = None  # made at the first update: a bar frozen at 0 while compiling misleads
        self.created = time.monotonic()
        self.done = start
        self.compile_time = 0.0
        self._compiled = False
        self._rebase(start)

    def _rebase(self, done):
        """Measure the rate from here on: `done` iterations are finished."""
        self.start = done
        self.began = self.last_line = time.monotonic()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _new_bar(self):
        return tqdm(total=self.total, initial=self.start, desc=self.what, unit='it',
                    **_on_stderr())

    @contextlib.contextmanager
    def compiling(self, name):
        """Around the first call of a compiled step (`name`, e.g. 'the training step'):
        a line before, one with its duration after; the iterations of the call
        that holds it are left out of the rate."""
        began = time.monotonic()
        if self._tty:
            with self._spinner('compiling %s...' % name):
                yield  # an exception (Ctrl-C, an error) skips the line after
        else:
            self.note('compiling %s...' % name)
            yield
        took = time.monotonic() - began
        self.compile_time += took
        self._compiled = True
        self.note('compiled %s in %s' % (name, duration(took)))

    @contextlib.contextmanager
    def _spinner(self, text):
        """`text` and the time since it began, kept current on the terminal: the
        compiled call blocks, so a thread redraws it each second."""
        line = tqdm(total=None, desc=text, bar_format='{desc} {elapsed}', **_on_stderr())
        stop = threading.Event()

        def redraw():
            while not stop.wait(1):
                line.refresh()
        thread = threading.Thread(target=redraw, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            line.close()

    def update(self, done):
        """`done` iterations (of total) are finished."""
        if not self.enabled:
            return
        if self._compiled:
            self._compiled = False
            self._rebase(done)
        self.done = done
        if self._tty:
            if self._bar is None:
                self._bar = self._new_bar()
            self._bar.update(done - self._bar.n)
        elif time.monotonic() - self.last_line >= LOG_INTERVAL:
            self.last_line = time.monotonic()
            print(tqdm.format_meter(done, self.total, self.last_line - self.began, prefix=self.what,
                                    unit='it', initial=self.start), file=sys.stderr, flush=True)

    def note(self, line):
        """A line for stderr, printed clear of a live bar; nothing when disabled."""
        if not self.enabled:
            return
        if self._bar is not None:
            tqdm.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def say(self, line):
        """A line for stdout (the reference's), printed clear of a live bar."""
        if self._bar is not None:
            tqdm.write(line, file=sys.stdout)
            sys.stdout.flush()
        else:
            print(line, flush=True)

    def close(self, summary=None):
        """End the bar with a line saying how far the run got; `summary` (where the
        files went) is printed on stderr after it."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self.enabled:
            return
        line = '%s: %d/%d %s in %s' % (self.what, self.done, self.total, self.items,
                                         duration(time.monotonic() - self.created))
        if self.compile_time:
            line += ' (%s of it compiling)' % duration(self.compile_time)
        print(line, file=sys.stderr, flush=True)
        if summary:
            print(summary, file=sys.stderr, flush=True)
