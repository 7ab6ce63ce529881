"""Figures for results/: sinusoid adaptation (the paper's Figure 2) and learning curves.

Usage:
  python results/make_figures.py sine --maml EXP_DIR --pretrained EXP_DIR [--out results/sinusoid_adaptation.png]
  python results/make_figures.py curves EXP_DIR [EXP_DIR ...] --out results/curves.png

`sine` restores the two sinusoid checkpoints (a MAML model and the pretrained
baseline, each an experiment folder written by main.py) and plots, for one
task, the ground truth, the K points of split a, and each model's prediction
before adaptation and after 1 and 10 inner steps. `curves` reads the
TensorBoard event files of each folder and plots the pre- and post-update
training loss (sinusoid) or accuracy (classification) against the iteration.
Needs matplotlib (optional; the rest of the project runs without it).
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
    ubs = int(name.split('.ubs_')[1].split('.')[0])
    lr = float(name.split('updatelr')[1].split('nonorm')[0].split('oracle')[0])
    return Config(datasource='sinusoid', norm='None', update_batch_size=ubs, update_lr=lr,
                  train=False, baseline='oracle' if 'oracle' in name else None)


def _restored_model(exp_dir):
    import checkpoint
    from maml import MAML
    config = _experiment_config(exp_dir)
    found = checkpoint.latest_readable(exp_dir)
    if found is None:
        sys.exit('error: no checkpoint in %s' % exp_dir)
    model = MAML(config, 1, 1, seed=0)
    checkpoint.assign(model.named_variables(), found[2], found[1])
    return model, config


def sine_figure(maml_dir, pretrained_dir, out, k=5, seed=2):
    import tensorflow as tf
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
        config.update_batch_size = k
        res = model.evaluate(*batch, 10)
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


def curves_figure(exp_dirs, out):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for exp_dir in exp_dirs:
        scalars = read_scalars(exp_dir)
        kind = 'accuracy' if 'metatrain_Pre-update accuracy' in scalars else 'loss'
        label = os.path.basename(os.path.normpath(exp_dir))
        for tag, style in (('metatrain_Pre-update %s' % kind, ':'),
                           ('metatrain_Post-update %s, step 1' % kind, '-')):
            if tag in scalars:
                steps = sorted(scalars[tag])
                values = np.array([scalars[tag][s] for s in steps])
                window = max(1, len(values) // 50)  # light smoothing of the 100-step summaries
                smooth = np.convolve(values, np.ones(window) / window, mode='valid')
                ax.plot(steps[window - 1:], smooth, style,
                        label='%s: %s' % (label, tag.replace('metatrain_', '')))
        ax.set_ylabel(kind)
    ax.set_xlabel('iteration')
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print('wrote %s' % out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='what', required=True)
    sine = sub.add_parser('sine')
    sine.add_argument('--maml', required=True)
    sine.add_argument('--pretrained', required=True)
    sine.add_argument('--k', type=int, default=5)
    sine.add_argument('--out', default=os.path.join(REPO, 'results', 'sinusoid_adaptation.png'))
    curves = sub.add_parser('curves')
    curves.add_argument('exp_dirs', nargs='+')
    curves.add_argument('--out', default=os.path.join(REPO, 'results', 'learning_curves.png'))
    args = parser.parse_args()
    if args.what == 'sine':
        sine_figure(args.maml, args.pretrained, args.out, k=args.k)
    else:
        curves_figure(args.exp_dirs, args.out)


if __name__ == '__main__':
    main()
