"""results/make_figures.py: the figures of results/. Each test one sentence."""
import pytest

from results import make_figures


def test_make_figures_never_replaces_an_existing_figure_without_overwrite(tmp_path, capsys):
    figure = tmp_path / 'figure.png'
    figure.write_bytes(b'committed')
    with pytest.raises(SystemExit) as e:
        make_figures.main(['sine', '--maml', 'a', '--pretrained', 'b', '--out', str(figure)])
    assert e.value.code == 2
    assert 'exists: choose another --out, or pass --overwrite' in capsys.readouterr().err
    assert figure.read_bytes() == b'committed'


def test_the_scalars_of_a_folder_named_like_a_glob_pattern_are_read(tmp_path):
    import tensorflow as tf
    folder = tmp_path / 'run[1]'
    with tf.summary.create_file_writer(str(folder)).as_default():
        tf.summary.scalar('metaval_Pre-update loss', 0.5, step=100)
    assert make_figures.read_scalars(str(folder)) == {'metaval_Pre-update loss': {100: 0.5}}
