"""When a training run summarises, prints, saves and validates: the reference's intervals.

One Schedule answers, for iteration i, what happens after (or, for summaries,
before) its step; the training loop asks it both to act and to cut its compiled
calls, so that a call never runs past an iteration that reports.
"""
SUMMARY_INTERVAL = 100
SAVE_INTERVAL = 1000


class Schedule:
    def __init__(self, config, validation):
        """validation: the data source has a validation set (sinusoid has none)."""
        self.total = config.num_iterations
        self.pretrain = config.num_pretrain_iterations
        self.print_interval = 1000 if config.datasource == 'sinusoid' else 100
        self.validation_interval = 5 * self.print_interval if validation else None
        # A sinusoid step computes for less time than entering a compiled
        # function takes, so its steps run up to a summary interval at a time
        # in one call; an image step computes for much longer: one call each.
        self.steps_per_call = SUMMARY_INTERVAL if config.datasource == 'sinusoid' else 1

    def summarises(self, i):
        """Before step i: the summary values of its batch (and a validation batch)."""
        return i % SUMMARY_INTERVAL == 0

    def pretraining(self, i):
        return i < self.pretrain

    def prints(self, i):
        return i != 0 and i % self.print_interval == 0

    def saves(self, i):
        return (i != 0 and i % SAVE_INTERVAL == 0) or i == self.total - 1

    def validates(self, i):
        return (self.validation_interval is not None and i != 0
                and i % self.validation_interval == 0)

    def reports(self, i):
        """Whether step i is followed by a print, a save or a validation."""
        return self.prints(i) or self.saves(i) or self.validates(i)

    def calls(self, start):
        """The iterations from `start` to the end, as ranges that one compiled call
        runs: at most steps_per_call long, each starting a summary interval or the
        end of pre-training anew, and ending after an iteration that reports."""
        while start < self.total:
            end = start + 1
            while (end - start < self.steps_per_call and end < self.total
                   and end != self.pretrain and not self.summarises(end)
                   and not self.reports(end - 1)):
                end += 1
            yield range(start, end)
            start = end
