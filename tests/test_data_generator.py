"""Behaviour of the task generators: each test one sentence."""
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, require_data
from config import Config
from data_generator import DataError, DataGenerator, Prefetcher


# ------------------------------------------------------------------ sinusoid
def test_sinusoid_batch_holds_sines_with_the_reference_ranges():
    np.random.seed(0)
    inputs, outputs, amp, phase = DataGenerator(20, 25, Config()).generate()
    assert inputs.shape == outputs.shape == (25, 20, 1)
    assert np.all((amp >= 0.1) & (amp <= 5.0)) and np.all((phase >= 0) & (phase <= np.pi))
    assert np.all(np.abs(inputs) <= 5.0)
    np.testing.assert_allclose(outputs, amp[:, None, None] * np.sin(inputs - phase[:, None, None]))


def test_sinusoid_batches_repeat_for_the_same_numpy_seed():
    np.random.seed(7)
    first = DataGenerator(10, 4, Config()).generate()
    np.random.seed(7)
    second = DataGenerator(10, 4, Config()).generate()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------- synthetic images
def _make_omniglot_tree(root, alphabets=2, characters=4, drawings=20, size=28):
    rng = np.random.default_rng(0)
    for a in range(alphabets):
        for c in range(characters):
            folder = os.path.join(root, 'Alphabet%d' % a, 'character%02d' % (c + 1))
            os.makedirs(folder)
            for d in range(drawings):
                pixels = (rng.uniform(size=(size, size)) > 0.8).astype(np.uint8) * 255
                Image.fromarray(pixels).convert('1').save(os.path.join(folder, '%02d.png' % d))
    return root


def _omniglot(root, **overrides):
    values = dict(datasource='omniglot', num_classes=3, update_batch_size=2, data_folder=root)
    values.update(overrides)
    config = Config(**values)
    return DataGenerator(config.num_samples_per_class, 2, config)


def test_omniglot_tasks_are_ordered_shot_by_shot_with_one_hot_labels(tmp_path):
    generator = _omniglot(_make_omniglot_tree(str(tmp_path)))
    tasks = generator.task_list(train=True)
    generator.load_images(generator.folders(True))
    images, labels = generator.batch(tasks, 0, [0])
    assert images.shape == (2, 3 * 4, 784) and labels.shape == (2, 12, 3)
    assert np.all(labels.sum(-1) == 1)
    for t in range(2):
        classes = labels[t].argmax(-1).reshape(4, 3)  # shot k of every class, then shot k+1
        for shot in classes:
            assert sorted(shot) == [0, 1, 2]


def test_omniglot_images_are_inverted_and_each_class_keeps_one_rotation(tmp_path):
    generator = _omniglot(_make_omniglot_tree(str(tmp_path)))
    tasks = generator.task_list(train=True)
    generator.load_images(generator.folders(True))
    images, labels = generator.batch(tasks, 3, [1])
    task = tasks.task_indices(3 * 2)  # first task of batch 3
    s = generator.num_samples_per_class
    for c in range(3):
        rows = np.flatnonzero(labels[0].argmax(-1) == c)
        for shot, row in enumerate(rows):
            folder, index = task[c * s + shot]
            original = 1.0 - generator._images[folder][index][..., 0] / 255.0
            matches = [k for k in range(4)
                       if np.allclose(images[0, row].reshape(28, 28), np.rot90(original, k))]
            if shot == 0:
                rotation = set(matches)
            rotation &= set(matches)
        assert rotation, 'class %d is not one rotation of its inverted originals' % c


def test_a_batch_depends_only_on_its_position_and_seed(tmp_path):
    root = _make_omniglot_tree(str(tmp_path))
    first, second = _omniglot(root), _omniglot(root)
    for generator in (first, second):
        generator.load_images(generator.folders(True))
    late = first.batch(first.task_list(True), 5, [9])
    for index in range(5):  # the second generator draws batches 0-4 first
        second.batch(second.task_list(True), index, [9])
    again = second.batch(second.task_list(True), 5, [9])
    np.testing.assert_array_equal(late[0], again[0])
    np.testing.assert_array_equal(late[1], again[1])


def test_a_workers_share_of_a_batch_equals_those_tasks_of_the_whole_batch(tmp_path):
    root = _make_omniglot_tree(str(tmp_path))
    values = dict(datasource='omniglot', num_classes=3, update_batch_size=2, data_folder=root)
    config = Config(**values)
    whole = DataGenerator(config.num_samples_per_class, 5, config).meta_batches(seed=[3])
    share = DataGenerator(config.num_samples_per_class, 5, config).meta_batches(
        seed=[3], tasks=range(2, 4))
    for _ in range(3):
        for a, b in zip(next(whole), next(share)):
            np.testing.assert_array_equal(b, a[2:4])


def test_a_workers_share_of_a_sinusoid_batch_comes_from_the_same_numpy_draws():
    config = Config(norm='None', update_batch_size=5)
    np.random.seed(4)
    whole = next(DataGenerator(10, 5, config).meta_batches())
    np.random.seed(4)
    share = next(DataGenerator(10, 5, config).meta_batches(tasks=range(3, 5)))
    for a, b in zip(whole, share):
        np.testing.assert_array_equal(b, a[3:5])


def test_prefetched_batches_are_floats_of_the_configured_shape(tmp_path):
    generator = _omniglot(_make_omniglot_tree(str(tmp_path)))
    images, labels = next(generator.batches(train=True, seed=[0]))
    assert images.shape == (2, 12, 784) and labels.shape == (2, 12, 3)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0


def test_miniimagenet_training_draws_fifteen_queries_per_class(tmp_path):
    root = str(tmp_path)
    for split in ('train', 'val'):
        for c in range(5):
            folder = os.path.join(root, split, 'n%08d' % c)
            os.makedirs(folder)
            for i in range(16):
                Image.new('RGB', (84, 84), (i, c, 0)).save(os.path.join(folder, '%03d.jpg' % i))
    config = Config(datasource='miniimagenet', update_batch_size=1, data_folder=root)
    assert config.num_samples_per_class == 16
    generator = DataGenerator(config.num_samples_per_class, 1, config)
    images, labels = next(generator.batches(train=True, seed=[0]))
    assert images.shape == (1, 80, 84 * 84 * 3) and labels.shape == (1, 80, 5)
    test_config = Config(datasource='miniimagenet', update_batch_size=1, train=False)
    assert test_config.num_samples_per_class == 2


def test_testing_miniimagenet_needs_only_the_test_split(tmp_path):
    root = str(tmp_path)
    for c in range(5):
        folder = os.path.join(root, 'test', 'n%08d' % c)
        os.makedirs(folder)
        for i in range(2):
            Image.new('RGB', (84, 84), (i, c, 0)).save(os.path.join(folder, '%03d.jpg' % i))
    config = Config(datasource='miniimagenet', update_batch_size=1, train=False, test_set=True,
                    data_folder=root)
    generator = DataGenerator(config.num_samples_per_class, 1, config)
    images, _ = next(generator.batches(train=False, seed=[0]))
    assert images.shape == (1, 10, 84 * 84 * 3)
    with pytest.raises(DataError, match='no folder .*train'):  # training does need train/
        DataGenerator(config.num_samples_per_class, 1,
                      Config(datasource='miniimagenet', test_set=True, data_folder=root))


def test_hidden_files_and_files_that_are_not_images_in_a_class_folder_are_skipped(tmp_path):
    root = _make_omniglot_tree(str(tmp_path))
    folder = os.path.join(root, 'Alphabet0', 'character01')
    with open(os.path.join(folder, '.DS_Store'), 'wb') as f:
        f.write(b'\x00\x00\x00\x01Bud1')
    with open(os.path.join(folder, 'README.txt'), 'w') as f:
        f.write('drawn by hand\n')
    os.makedirs(os.path.join(root, '__MACOSX', 'Alphabet0'))
    generator = _omniglot(root)
    assert len(generator.folders(True)) + len(generator.folders(False)) == 2 * 4
    generator.load_images(generator.folders(True) + generator.folders(False))
    assert len(generator._files(os.path.join('Alphabet0', 'character01'))) == 20


# ---------------------------------------------------------------- bad input
def test_a_missing_data_folder_names_the_folder_and_the_preparation_script(tmp_path):
    with pytest.raises(DataError) as e:
        _omniglot(str(tmp_path / 'nowhere'))
    assert 'nowhere' in str(e.value) and 'resize_images.py' in str(e.value)
    with pytest.raises(DataError) as e:
        DataGenerator(2, 1, Config(datasource='miniimagenet', data_folder=str(tmp_path)))
    assert 'proc_images.py' in str(e.value)


def test_fewer_classes_than_num_classes_is_refused(tmp_path):
    generator = _omniglot(_make_omniglot_tree(str(tmp_path), alphabets=1, characters=2))
    with pytest.raises(DataError, match='fewer than --num_classes=3'):
        generator.task_list(train=True)


def test_fewer_images_than_a_task_needs_is_refused(tmp_path):
    generator = _omniglot(_make_omniglot_tree(str(tmp_path), drawings=3))
    with pytest.raises(DataError, match='3 images, fewer than the 4 per class'):
        generator.task_list(train=True)


def test_an_unreadable_image_is_named(tmp_path):
    root = _make_omniglot_tree(str(tmp_path))
    bad = os.path.join(root, 'Alphabet0', 'character01', '05.png')
    with open(bad, 'wb') as f:
        f.write(b'not a png')
    generator = _omniglot(root)
    with pytest.raises(DataError, match='cannot read image .*05.png'):
        generator.load_images(generator.folders(True))


def test_a_wrongly_sized_image_is_named(tmp_path):
    root = _make_omniglot_tree(str(tmp_path))
    bad = os.path.join(root, 'Alphabet1', 'character02', '07.png')
    Image.new('L', (105, 105)).save(bad)
    generator = _omniglot(root)
    with pytest.raises(DataError, match='07.png is 105x105, expected 28x28'):
        generator.load_images(generator.folders(True))


# ------------------------------------------------------------------ real data
@pytest.mark.slow
def test_real_omniglot_characters_load_as_binary_inverted_28x28_images(tmp_path):
    archive, = require_data('omniglot/images_background.zip')
    small = tmp_path / 'small.zip'
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(small, 'w') as dst:
        for name in src.namelist():
            if name.startswith(('images_background/Greek/', 'images_background/Korean/')):
                dst.writestr(name, src.read(name))
    out = tmp_path / 'omniglot_resized'
    subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'data', 'omniglot_resized',
                                                 'resize_images.py'), str(small), '--out', str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    generator = _omniglot(str(out), num_classes=5, update_batch_size=1)
    assert len(generator.metatrain_character_folders) == 24 + 40
    images, _ = next(generator.batches(train=True, seed=[0]))
    values = np.unique(images)
    assert set(values.tolist()) == {0.0, 1.0}
    # Strokes are dark on white in the originals: after inversion most pixels are 0.
    assert images.mean() < 0.3


def test_an_error_in_the_background_thread_reaches_the_consumer_at_its_batch():
    def produce(index):
        if index == 3:
            raise DataError('image 3 is broken')
        return index
    batches = Prefetcher(produce, start=1, depth=2)
    assert [next(batches), next(batches)] == [1, 2]
    with pytest.raises(DataError, match='image 3 is broken'):
        next(batches)
