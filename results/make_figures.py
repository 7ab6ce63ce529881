"""Figures for results/: sinusoid adaptation (the paper's Figure 2) and learning curves.

Usage:
  python results/make_figures.py sine --maml EXP_DIR --pretrained EXP_DIR --out FIGURE.png
  python results/make_figures.py curves EXP_DIR [EXP_DIR ...] [--labels NAME ...] --out FIGURE.png

`sine` restores the two sinusoid checkpoints (a MAML model and the pretrained
baseline, each an experiment folder written by main.py) and plots, for one
task, the ground truth, the K points of split a, and each model's prediction
before adaptation and after 1 and 10 inner steps. `curves` reads the
TensorBoard event files of each folder and plots the pre-update and
post-update (at the trained number of steps) loss (sinusoid) or accuracy
(classification) against the iteration, on the meta-training batches and, where
main.py summarised them, the meta-validation batches.
Needs matplotlib (optional; the rest of the project runs without it:
`pip install -r requirements-figures.txt`). `--out` is required, and an
existing file is only replaced with `--overwrite`, so the committed figures
are never replaced by accident.
"""
import argparse
import glob
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _pyplot():
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        sys.exit('error: the figures need matplotlib: pip install matplotlib')


def _experiment_config(exp_dir):
    """The Config of a sinusoid experiment folder, from its reference-style name."""
    from config import Config
    name = os.path.basename(os.path.normpath(exp_dir))
    if '.ubs_' not in name or 'updatelr' not in name:
        sys.exit('error: %s is not a sinusoid experiment folder written by main.py (its '
                 'name, e.g. cls_5.mbs_25.ubs_10.numstep1.updatelr0.001nonorm, gives the flags)'
                 % exp_dir)
    ubs = int(name.split('.ubs_')[1].split('.')[0])
    lr = float(name.split('updatelr')[1].split('nonorm')[0].split('oracle')[0])
    return Config(datasource='sinusoid', norm='None', update_batch_size=ubs, update_lr=lr,
                  train=False, baseline='oracle' if 'oracle' in name else None)


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
    checkpoint.restore(model, found[2], found[1], with_optimizers=False)
    return model, config


def sine_figure(maml_dir, pretrained_dir, out, k=5, seed=2):
    import tensorflow as tf
    from steps import Steps
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0, np.pi)
    xa = rng.uniform(-5, 5, (1, k, 1))
    grid = np.linspace(-5, 5, 200)[None, :, None]
    ya, ygrid = amp * np.sin(xa - phase), amp * np.sin(grid - phase)
    batch = [tf.constant(v.astype(np.float32)) for v in (xa, grid, ya, ygrid)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (title, exp_dir) in zip(axes, (('MAML', maml_dir), ('pretrained', pretrained_dir))):
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


def read_scalars(exp_dir):
    import tensorflow as tf
    scalars = {}
    for path in sorted(glob.glob(os.path.join(exp_dir, 'events.out.tfevents.*'))):
        for event in tf.compat.v1.train.summary_iterator(path):
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


def curves_figure(exp_dirs, out, labels=None):
    """Pre-update and post-update (at the trained step) curves, one panel per
    kind of batch written: meta-training and, if summarised, meta-validation."""
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
            step = _trained_steps(exp_dir)
            for tag, style in (('Pre-update %s' % kind, ':'),
                               ('Post-update %s, step %d' % (kind, step), '-')):
                if prefix + tag in scalars:
                    ax.plot(*_smoothed(scalars[prefix + tag]), style, color='C%d' % run,
                            label='%s: %s' % (label, tag))
            ax.set_ylabel(kind)
        ax.set_title({'metatrain_': 'meta-training batches',
                      'metaval_': 'meta-validation batches'}[prefix])
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print('wrote %s' % out)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='Each subcommand has its own --help: make_figures.py sine --help, '
               'make_figures.py curves --help.')
    sub = parser.add_subparsers(dest='what', required=True, metavar='{sine,curves}')
    sine = sub.add_parser('sine', help='the paper\'s Figure 2: one sinusoid task, MAML against '
                                       'the pretrained baseline, before and after adaptation',
                          description='Restore a MAML and a pretrained sinusoid checkpoint and '
                                      'plot one task: ground truth, the K points, predictions '
                                      'before adaptation and after 1 and 10 inner steps.')
    sine.add_argument('--maml', required=True, metavar='EXP_DIR',
                      help='experiment folder of the MAML sinusoid run (holds model*)')
    sine.add_argument('--pretrained', required=True, metavar='EXP_DIR',
                      help='experiment folder of the pretrained baseline run')
    sine.add_argument('--k', type=int, default=5, help='points to adapt on (default 5)')
    curves = sub.add_parser('curves', help='learning curves from the TensorBoard events of '
                                           'one or more experiment folders',
                            description='Plot pre- and post-update loss (sinusoid) or accuracy '
                                        '(classification) against the iteration, from each '
                                        'folder\'s events.out.tfevents.* files.')
    curves.add_argument('exp_dirs', nargs='+', metavar='EXP_DIR',
                        help='experiment folders written by main.py')
    curves.add_argument('--labels', nargs='+', metavar='NAME', help='one legend name per folder')
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
        curves_figure(args.exp_dirs, args.out, args.labels)


if __name__ == '__main__':
    main()
