"""Meta-training speed of a whole program, from the lines it prints.

`python bench/benchmark.py --end_to_end --omniglot_folder F --miniimagenet_folder M`
starts main.py with each configuration's README usage line (`--log=False`,
a fresh experiment folder), notes when each `Iteration N: ...` line appears
on its stdout, and reports the iterations/s between two of them: everything
a run does (drawing batches, the steps, the summary iterations, validation,
printing) counts, as a researcher sees it. Start-up is the time from launch to
"Done initializing, starting training.". Beside it, in the same run, the
benchmark's step rate of the same configuration (one compiled step on a fixed
batch, in a fresh process): the difference is what the loop around the step
costs.

`--against_main PATH` times another program's main.py the same way, started
in its own folder with the same usage line: for example the original TF1
program made to run under tf.compat.v1, which reads its data from its own
./data/omniglot_resized and ./data/miniImagenet (it has no --data_folder).
"""
import os
import subprocess
import sys
import tempfile
import time

# name: (the first and the last printed iteration timed)
WINDOWS = {'sinusoid': (1000, 10000), 'omniglot5': (100, 400), 'omniglot5shot': (100, 400),
           'omniglot20': (100, 300), 'miniimagenet': (100, 200)}


def usage_flags(flags, first_order):
    """A configuration's flags (benchmark.CONFIGS) as a command line."""
    line = ['--%s=%s' % (key, value) for key, value in flags.items()]
    return line + (['--stop_grad=True'] if first_order else [])


def time_program(main_py, flags, last, data_folder=None, timeout=7200):
    """Run one program to iteration `last`; {'startup_s', 'times': {iteration: seconds
    since launch}, 'peak_rss_mb'}, or {'error': ...}."""
    with tempfile.TemporaryDirectory() as logdir:
        args = [sys.executable, '-u', main_py] + flags + [
            '--log=False', '--resume=False', '--metatrain_iterations=%d' % (last + 1),
            '--logdir=' + logdir]
        if data_folder:
            args.append('--data_folder=' + data_folder)
        start = time.perf_counter()
        with tempfile.TemporaryFile('w+') as err:
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True,
                                    cwd=os.path.dirname(os.path.abspath(main_py)))
            startup, times = None, {}
            deadline = start + timeout
            for line in proc.stdout:
                now = time.perf_counter() - start
                if line.startswith('Done initializing') and startup is None:
                    startup = now
                elif line.startswith('Iteration '):
                    times[int(line.split()[1].rstrip(':'))] = now
                if time.perf_counter() > deadline:
                    proc.kill()
                    break
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
            err.seek(0)
            error = err.read().strip()
    code, peak_rss_mb = os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024.0
    if code < 0:  # its last stderr line is then some earlier notice, not the cause
        return {'error': 'killed by signal %d (SIGKILL: out of memory?) at peak RSS %.0f MB'
                         % (-code, peak_rss_mb)}
    if code != 0 or last not in times:
        return {'error': error.splitlines()[-1] if error else 'no output'}
    return {'startup_s': startup, 'times': times, 'peak_rss_mb': peak_rss_mb}


def rate(result, first, last):
    return (last - first) / (result['times'][last] - result['times'][first])


def end_to_end(configs, orders, data_folders, step_rate, against_main=None):
    """Print the table: end-to-end it/s of main.py (and of against_main), the step rate."""
    from benchmark import CONFIGS, REPO

    main_py = os.path.join(REPO, 'main.py')
    print('| config | order | window (printed iterations) | main.py it/s | start-up (s) '
          '| peak RSS (MB) | step it/s (benchmark) | loop cost |'
          + (' other program it/s | start-up (s) | main.py / other |' if against_main else ''))
    print('|---|---|---|---|---|---|---|---|' + ('---|---|---|' if against_main else ''))
    for name in configs:
        flags = CONFIGS[name][0]
        folder = data_folders.get(flags['datasource'])
        if flags['datasource'] != 'sinusoid' and not folder:
            print('| %s | | skipped: no --%s_folder |' % (name, flags['datasource']))
            continue
        first, last = WINDOWS[name]
        for order in orders:
            line = usage_flags(flags, order == 1)
            ours = time_program(main_py, line, last, folder)
            if 'error' in ours:
                print('| %s | %d | %d-%d | failed: %s |' % (name, order, first, last, ours['error']))
                continue
            ours_rate = rate(ours, first, last)
            step = step_rate(name, order)
            cells = [name, str(order), '%d-%d' % (first, last), '%.2f' % ours_rate,
                     '%.1f' % ours['startup_s'], '%.0f' % ours['peak_rss_mb'],
                     '%.2f' % step if step else 'failed',
                     '%.0f%%' % (100 * (1 - ours_rate / step)) if step else '']
            if against_main:
                other = time_program(against_main, line, last)
                if 'error' in other:
                    cells += ['failed: %s' % other['error'], '', '']
                else:
                    other_rate = rate(other, first, last)
                    cells += ['%.2f' % other_rate, '%.1f' % (other['startup_s'] or 0),
                              '%.2fx' % (ours_rate / other_rate)]
            print('| ' + ' | '.join(cells) + ' |', flush=True)
