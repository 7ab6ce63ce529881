"""Figures for results/: sinusoid adaptation (the paper's Figure 2) and learning curves.

Usage:
  python results/make_figures.py sine --maml EXP_DIR [--pretrained EXP_DIR] --out FIGURE.png
  python results/make_figures.py curves EXP_DIR [EXP_DIR ...] [--labels NAME ...] [--all_steps]
      --out FIGURE.png

`sine` restores the sinusoid checkpoints (a MAML model and, if given, the
pretrained baseline, each an experiment folder written by main.py) and plots,
for one task, the ground truth, the K points of split a, and each model's
prediction before adaptation and after 1 and 10 inner steps. Without
--pretrained the baseline's panel is left out, with a note on how to train it.
`curves` reads the TensorBoard event files of each folder and plots the
pre-update and post-update (at the trained number of steps, or with
--all_steps at every logged step) loss (sinusoid) or accuracy (classification)
against the iteration, on the meta-training batches and, where main.py
summarised them, the meta-validation batches.
TensorFlow's start-up notices are hidden as in main.py (MAML_TF_NOTICES=1
shows them).
Needs matplotlib (optional; the rest of the project runs without it:
`pip install -r requirements-figures.txt`). `--out` is required, and an
existing file is only replaced with `--overwrite`, so the committed figures
are never replaced by accident.
"""
import argparse
import glob
import os
import re
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _tensorflow():
    """TensorFlow, imported with main.py's settings (start-up notices hidden).
    Imported only when a figure is drawn, so that --help and argument errors
    answer at once."""
    import tf_env  # noqa: F401 (before TensorFlow loads)
    import tensorflow as tf
    return tf


def _pyplot():
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        sys.exit('error: the figures need matplotlib: pip install matplotlib')


# A sinusoid experiment folder's name, as main.py builds it from the flags.
_SINE_NAME = re.compile(r'cls_\d+\.mbs_(?P<meta_batch_size>\d+)\.ubs_(?P<update_batch_size>\d+)'
                        r'\.numstep(?P<num_updates>\d+)\.updatelr(?P<update_lr>[0-9.e+-]+?)'
                        r'(?:stopgrad)?(?P<baseline>oracle)?nonorm$')


def _sine_flags(exp_dir):
    """{flag: value as written in the name} of a sinusoid experiment folder."""
    name = os.path.basename(os.path.normpath(exp_dir))
    match = _SINE_NAME.match(name)
    if match is None:
        sys.exit('error: %s is not a sinusoid experiment folder written by main.py (its '
                 'name, e.g. cls_5.mbs_25.ubs_10.numstep1.updatelr0.001nonorm, gives the flags)'
                 % exp_dir)
    return match.groupdict()


def _experiment_config(exp_dir):
    """The Config of a sinusoid experiment folder, from its reference-style name."""
    from config import Config
    flags = _sine_flags(exp_dir)
    return Config(datasource='sinusoid', norm='None',
                  update_batch_size=int(flags['update_batch_size']),
                  update_lr=float(flags['update_lr']), train=False, baseline=flags['baseline'])


def _pretrained_command(maml_dir):
    """main.py's command for the pretrained baseline that matches this MAML run: the
    same folder name under its own --logdir (README, "The paper's experiments")."""
    from config import Config
    flags, defaults = _sine_flags(maml_dir), Config()
    command = ('python main.py --datasource=sinusoid --logdir=logs/sine_pretrained/ '
               '--pretrain_iterations=70000 --metatrain_iterations=0 --norm=None')
    given = {}
    for flag in ('meta_batch_size', 'update_batch_size', 'num_updates', 'update_lr'):
        given[flag] = type(getattr(defaults, flag))(flags[flag])
        if given[flag] != getattr(defaults, flag):
            command += ' --%s=%s' % (flag, flags[flag])
    name = Config(datasource='sinusoid', norm='None', **given).exp_string
    return command, 'logs/sine_pretrained/' + name


def _restored_model(exp_dir):
    import checkpoint
    from maml import MAML
    config = _experiment_config(exp_dir)
    try:
        found = checkpoint.latest_readable(exp_dir)
    except checkpoint.CheckpointError as e:  # every checkpoint there is unreadable
        sys.exit('error: %s' % e)
    if found is None:
        sys.exit('error: no checkpoint in %s' % exp_dir)
    model = MAML(config, seed=0)
    checkpoint.restore(model, found[2], found[1])
    return model, config


def sine_figure(maml_dir, pretrained_dir, out, k=5, seed=2):
    """The paper's Figure 2 for one task; the pretrained panel only if pretrained_dir."""
    tf = _tensorflow()
    from steps import Steps
    plt = _pyplot()
    panels = [('MAML', maml_dir)] + ([('pretrained', pretrained_dir)] if pretrained_dir else [])
    rng = np.random.default_rng(seed)
    amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0, np.pi)
    xa = rng.uniform(-5, 5, (1, k, 1))
    grid = np.linspace(-5, 5, 200)[None, :, None]
    ya, ygrid = amp * np.sin(xa - phase), amp * np.sin(grid - phase)
    batch = [tf.constant(v.astype(np.float32)) for v in (xa, grid, ya, ygrid)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), sharey=True,
                             squeeze=False)
    for ax, (title, exp_dir) in zip(axes[0], panels):
        model, config = _restored_model(exp_dir)
        res = Steps(model).evaluate(*batch, 10)
        pre = model.forward(batch[1], model.weights).numpy()[0, :, 0]
        ax.plot(grid[0, :, 0], ygrid[0, :, 0], 'r', label='ground truth')
        ax.plot(grid[0, :, 0], pre, ':', color='tab:green', label='pre-update')
        ax.plot(grid[0, :, 0], res['outputbs'][0].numpy()[0, :, 0], '--', color='tab:blue',
                label='1 grad step')
        ax.plot(grid[0, :, 0], res['outputbs'][9].numpy()[0, :, 0], '-.', color='tab:purple',
                label='10 grad steps')
        ax.plot(xa[0, :, 0], ya[0, :, 0], '^', color='tab:purple', label='%d points used' % k)
        ax.set_title('%s, K=%d (alpha %g)' % (title, k, config.update_lr))
        ax.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print('wrote %s' % out)
    if not pretrained_dir:
        command, folder = _pretrained_command(maml_dir)
        print('note: no --pretrained, so the pretrained baseline\'s panel is left out; for the '
              'full figure train it with `%s` and add --pretrained %s' % (command, folder),
              file=sys.stderr)
    return fig


def read_scalars(exp_dir):
    """{tag: {iteration: value}} from the folder's TensorBoard event files."""
    tf = _tensorflow()
    scalars = {}
    # glob.escape: a folder named like run[1] is a name, not a pattern
    for path in sorted(glob.glob(os.path.join(glob.escape(exp_dir), 'events.out.tfevents.*'))):
        # TFRecordDataset, not summary_iterator: that one warns that it is deprecated.
        records = iter(tf.data.TFRecordDataset(path))
        while True:
            try:
                record = next(records)
            except StopIteration:
                break
            except tf.errors.DataLossError:
                break  # a last record cut short (a run still writing, or killed): the rest is read
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = value.simple_value if value.HasField('simple_value') else \
                    float(tf.make_ndarray(value.tensor))
                scalars.setdefault(value.tag, {})[event.step] = number
    return scalars


def _trained_steps(exp_dir):
    """num_updates of an experiment folder, from its reference-style name (numstepN)."""
    name = os.path.basename(os.path.normpath(exp_dir))
    return int(name.split('numstep')[1].split('.')[0]) if 'numstep' in name else 1


def _smoothed(series):
    steps = sorted(series)
    values = np.array([series[s] for s in steps])
    window = max(1, len(values) // 50)  # light smoothing of the 100-step summaries
    return steps[window - 1:], np.convolve(values, np.ones(window) / window, mode='valid')


def _post_update_steps(scalars, prefix, kind):
    """The step numbers j of the logged 'Post-update KIND, step j' curves, in order."""
    head = '%sPost-update %s, step ' % (prefix, kind)
    return sorted(int(tag[len(head):]) for tag in scalars if tag.startswith(head))


def curves_figure(exp_dirs, out, labels=None, all_steps=False):
    """Pre-update and post-update curves, one panel per kind of batch written:
    meta-training and, if summarised, meta-validation. Post-update at the trained
    step, or with all_steps at every logged step (earlier steps lighter)."""
    plt = _pyplot()
    runs = [(exp_dir, read_scalars(exp_dir)) for exp_dir in exp_dirs]
    for exp_dir, scalars in runs:
        if not scalars:
            sys.exit('error: no TensorBoard events in %s: give the experiment folder that '
                     'main.py trained in (LOGDIR/EXPERIMENT)' % exp_dir)
    prefixes = [p for p in ('metatrain_', 'metaval_')
                if any(p + 'Pre-update loss' in scalars for _, scalars in runs)]
    fig, axes = plt.subplots(1, len(prefixes), figsize=(6 * len(prefixes), 4), squeeze=False)
    labels = labels or [os.path.basename(os.path.normpath(d)) for d in exp_dirs]
    for ax, prefix in zip(axes[0], prefixes):
        for run, ((exp_dir, scalars), label) in enumerate(zip(runs, labels)):
            kind = 'accuracy' if prefix + 'Pre-update accuracy' in scalars else 'loss'
            logged = _post_update_steps(scalars, prefix, kind)
            steps = logged if all_steps else [_trained_steps(exp_dir)]
            curves = [('Pre-update %s' % kind, ':', 1.0)]
            for step in steps:
                # Steps from light to full colour, so that their order shows.
                shade = 0.35 + 0.65 * (step - steps[0]) / max(1, steps[-1] - steps[0])
                curves.append(('Post-update %s, step %d' % (kind, step), '-',
                               shade if all_steps else 1.0))
            for i, (tag, style, alpha) in enumerate(curves):
                # The legend names the first and last steps; the shades between them
                # are the steps in order (a legend line for each would hide the plot).
                named = i in (0, 1, len(curves) - 1)
                if prefix + tag in scalars:
                    ax.plot(*_smoothed(scalars[prefix + tag]), style, color='C%d' % run,
                            alpha=alpha, label='%s: %s' % (label, tag) if named else None)
            ax.set_ylabel(kind)
        ax.set_title({'metatrain_': 'meta-training batches',
                      'metaval_': 'meta-validation batches'}[prefix])
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print('wrote %s' % out)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='Each subcommand has its own --help: make_figures.py sine --help, '
               'make_figures.py curves --help.')
    sub = parser.add_subparsers(dest='what', required=True, metavar='{sine,curves}')
    sine = sub.add_parser('sine', help='the paper\'s Figure 2: one sinusoid task, MAML against '
                                       'the pretrained baseline, before and after adaptation',
                          description='Restore a MAML and (if given) a pretrained sinusoid '
                                      'checkpoint and plot one task: ground truth, the K points, '
                                      'predictions before adaptation and after 1 and 10 inner '
                                      'steps.')
    sine.add_argument('--maml', required=True, metavar='EXP_DIR',
                      help='experiment folder of the MAML sinusoid run (holds model*)')
    sine.add_argument('--pretrained', metavar='EXP_DIR',
                      help='experiment folder of the pretrained baseline run (main.py with '
                           '--pretrain_iterations=70000 --metatrain_iterations=0 and its own '
                           '--logdir); without it, its panel is left out')
    sine.add_argument('--k', type=int, default=5, help='points to adapt on (default 5)')
    curves = sub.add_parser('curves', help='learning curves from the TensorBoard events of '
                                           'one or more experiment folders',
                            description='Plot pre- and post-update loss (sinusoid) or accuracy '
                                        '(classification) against the iteration, from each '
                                        'folder\'s events.out.tfevents.* files.')
    curves.add_argument('exp_dirs', nargs='+', metavar='EXP_DIR',
                        help='experiment folders written by main.py')
    curves.add_argument('--labels', nargs='+', metavar='NAME', help='one legend name per folder')
    curves.add_argument('--all_steps', action='store_true',
                        help='post-update curves after every inner step main.py summarised '
                             '(sinusoid: 5, Omniglot: 10, MiniImagenet: its --num_updates), not '
                             'only after the trained number of steps')
    for command in (sine, curves):
        command.add_argument('--out', required=True, metavar='FIGURE.png',
                             help='the PNG to write (required: the committed figures are not '
                                  'a default)')
        command.add_argument('--overwrite', action='store_true',
                             help='replace --out if it exists')
    args = parser.parse_args(argv)
    if os.path.exists(args.out) and not args.overwrite:
        parser.exit(2, 'error: %s exists: choose another --out, or pass --overwrite to replace '
                       'it\n' % args.out)
    if args.what == 'sine':
        sine_figure(args.maml, args.pretrained, args.out, k=args.k)
    else:
        curves_figure(args.exp_dirs, args.out, args.labels, args.all_steps)


if __name__ == '__main__':
    main()
