"""Data preparation scripts: data/omniglot_resized/resize_images.py and data/miniImagenet/proc_images.py.

The scripts run as a user runs them (a subprocess), on small inputs cut out of
the real archives, so the whole file stays fast.
"""
import csv
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, require_data

RESIZE = os.path.join(REPO_ROOT, 'data', 'omniglot_resized', 'resize_images.py')
PROC = os.path.join(REPO_ROOT, 'data', 'miniImagenet', 'proc_images.py')

ALPHABETS_PER_ZIP = 2
CHARACTERS_PER_ALPHABET = 5  # 2 x 5 x 20 = 200 images per small zip


def run(script, *args, cwd=None):
    return subprocess.run([sys.executable, script] + [str(a) for a in args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result, *words):
    assert result.returncode == 2, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def small_omniglot_members(zip_path):
    """Members of the first alphabets / characters of an Omniglot archive."""
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith('.png'))
    alphabets = sorted(set(n.split('/')[1] for n in names))[:ALPHABETS_PER_ZIP]
    keep = []
    for alphabet in alphabets:
        characters = sorted(set(n.split('/')[2] for n in names if n.split('/')[1] == alphabet))
        chosen = set(characters[:CHARACTERS_PER_ALPHABET])
        keep += [n for n in names if n.split('/')[1] == alphabet and n.split('/')[2] in chosen]
    return keep


def copy_members(zip_path, members, dest_zip=None, dest_dir=None):
    with zipfile.ZipFile(zip_path) as zf:
        if dest_zip is not None:
            with zipfile.ZipFile(dest_zip, 'w') as out:
                for m in members:
                    out.writestr(m, zf.read(m))
        if dest_dir is not None:
            for m in members:
                zf.extract(m, dest_dir)


@pytest.fixture(scope='module')
def small_background(tmp_path_factory):
    """(small zip, its members): 2 alphabets x 5 characters x 20 drawings of images_background."""
    zip_bg, = require_data('omniglot/images_background.zip')
    folder = tmp_path_factory.mktemp('omniglot_small')
    members = small_omniglot_members(zip_bg)
    small = folder / 'images_background.zip'
    copy_members(zip_bg, members, dest_zip=small)
    return small, members


def read_tree(root):
    """{relative path: pixel array} of every png under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with Image.open(path) as im:
                out[os.path.relpath(path, root)] = np.asarray(im.convert('L'))
    return out


# ---------------------------------------------------------------- omniglot

@pytest.mark.slow
def test_resizing_a_zip_gives_binary_28x28_images_in_alphabet_character_folders(small_background, tmp_path):
    small, members = small_background
    out = tmp_path / 'out'
    result = run(RESIZE, small, '--out', out)
    assert result.returncode == 0, result.stderr
    characters = sorted(set(tuple(m.split('/')[1:3]) for m in members))
    assert sorted(os.listdir(out)) == sorted(set(a for a, _ in characters))
    assert len(characters) == ALPHABETS_PER_ZIP * CHARACTERS_PER_ALPHABET
    for alphabet, character in characters:
        files = sorted(os.listdir(out / alphabet / character))
        assert files == sorted(m.split('/')[3] for m in members if m.split('/')[1:3] == [alphabet, character])
        assert len(files) == 20
        for name in files:
            with Image.open(out / alphabet / character / name) as im:
                assert im.size == (28, 28)
                assert im.mode == '1' or set(np.unique(np.asarray(im))) <= {0, 255}
    assert 'Wrote %d images in %d character folders' % (len(members), len(characters)) in result.stdout


@pytest.mark.slow
def test_zip_output_is_pixel_identical_to_the_reference_recipe(small_background, tmp_path):
    small, members = small_background
    out = tmp_path / 'out'
    assert run(RESIZE, small, '--out', out).returncode == 0
    reference = tmp_path / 'reference'
    copy_members(small, members, dest_dir=reference)
    for m in members:
        f = str(reference / m)
        im = Image.open(f)
        im = im.resize((28, 28), resample=Image.LANCZOS)
        im.save(f)
    expected = read_tree(reference / 'images_background')
    got = read_tree(out)
    assert sorted(got) == sorted(expected)
    for path in expected:
        np.testing.assert_array_equal(got[path], expected[path], err_msg=path)
        assert (out / path).read_bytes() == (reference / 'images_background' / path).read_bytes()


@pytest.mark.slow
def test_a_folder_of_alphabets_with_or_without_top_folder_gives_the_same_images_as_the_zip(
        small_background, tmp_path):
    small, members = small_background
    assert run(RESIZE, small, '--out', tmp_path / 'from_zip').returncode == 0
    extracted = tmp_path / 'extracted'
    copy_members(small, members, dest_dir=extracted)
    # extracted/images_background/ALPHABET/... : a folder holding the top folder
    result = run(RESIZE, extracted, '--out', tmp_path / 'from_parent')
    assert result.returncode == 0, result.stderr
    # extracted/images_background itself: a folder of alphabets
    result = run(RESIZE, extracted / 'images_background', '--out', tmp_path / 'from_alphabets')
    assert result.returncode == 0, result.stderr
    expected = read_tree(tmp_path / 'from_zip')
    for variant in ('from_parent', 'from_alphabets'):
        got = read_tree(tmp_path / variant)
        assert sorted(got) == sorted(expected)
        for path in expected:
            np.testing.assert_array_equal(got[path], expected[path])


@pytest.mark.slow
def test_alphabets_of_background_and_evaluation_archives_are_merged(small_background, tmp_path):
    small, members = small_background
    zip_ev, = require_data('omniglot/images_evaluation.zip')
    ev_members = small_omniglot_members(zip_ev)
    small_ev = tmp_path / 'images_evaluation.zip'
    copy_members(zip_ev, ev_members, dest_zip=small_ev)
    out = tmp_path / 'out'
    result = run(RESIZE, small, small_ev, '--out', out)
    assert result.returncode == 0, result.stderr
    alphabets = set(m.split('/')[1] for m in members + ev_members)
    assert len(alphabets) == 2 * ALPHABETS_PER_ZIP
    assert set(os.listdir(out)) == alphabets
    assert len(read_tree(out)) == len(members) + len(ev_members)


@pytest.mark.slow
def test_rerunning_into_the_same_output_overwrites_it_and_leaves_no_temporary_files(small_background, tmp_path):
    small, members = small_background
    out = tmp_path / 'out'
    assert run(RESIZE, small, '--out', out).returncode == 0
    first = read_tree(out)
    result = run(RESIZE, small, '--out', out)
    assert result.returncode == 0, result.stderr
    second = read_tree(out)
    assert sorted(first) == sorted(second)
    for path in first:
        np.testing.assert_array_equal(first[path], second[path])
    leftovers = [n for _, _, files in os.walk(out) for n in files if not n.endswith('.png')]
    assert leftovers == []


@pytest.mark.slow
def test_smooth_option_gives_greyscale_rather_than_binary_images(small_background, tmp_path):
    small, _ = small_background
    out = tmp_path / 'out'
    assert run(RESIZE, small, '--out', out, '--smooth').returncode == 0
    values = set()
    for pixels in read_tree(out).values():
        assert pixels.shape == (28, 28)
        values |= set(np.unique(pixels).tolist())
    assert len(values) > 2


@pytest.mark.slow
def test_without_arguments_the_images_of_the_current_folder_are_resized_in_place(small_background, tmp_path):
    small, members = small_background
    copy_members(small, members, dest_dir=tmp_path)
    cwd = tmp_path / 'images_background'  # holds ALPHABET/CHARACTER/*.png, like data/omniglot_resized
    originals = {m: np.asarray(Image.open(tmp_path / m)) for m in members}
    result = run(RESIZE, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert '200' in result.stdout.split()  # the reference's counter, every 200 images
    for m in members:
        with Image.open(tmp_path / m) as im:
            assert im.size == (28, 28)
            expected = Image.fromarray(originals[m]).resize((28, 28), resample=Image.LANCZOS)
            np.testing.assert_array_equal(np.asarray(im), np.asarray(expected))
    assert sorted(os.listdir(cwd)) == sorted(set(m.split('/')[1] for m in members))


@pytest.mark.slow
def test_a_missing_source_exits_with_code_2_and_a_one_line_message(tmp_path):
    missing = tmp_path / 'images_background.zip'
    result = run(RESIZE, missing, '--out', tmp_path / 'out')
    assert_one_line_error(result, str(missing), 'does not exist')


@pytest.mark.slow
def test_a_zip_that_is_not_omniglot_shaped_is_refused_with_code_2(tmp_path):
    odd = tmp_path / 'odd.zip'
    with zipfile.ZipFile(odd, 'w') as zf:
        zf.writestr('a/b/c/d/e.png', b'x')
        zf.writestr('a/b.png', b'x')
    assert_one_line_error(run(RESIZE, odd, '--out', tmp_path / 'out'), str(odd))
    not_a_zip = tmp_path / 'notes.zip'
    not_a_zip.write_text('hello')
    assert_one_line_error(run(RESIZE, not_a_zip, '--out', tmp_path / 'out'), str(not_a_zip))


@pytest.mark.slow
def test_an_unreadable_image_is_named_and_exits_with_code_2(tmp_path):
    folder = tmp_path / 'alphabets' / 'Latin' / 'character01'
    folder.mkdir(parents=True)
    Image.new('1', (105, 105), 1).save(folder / '0001_01.png')
    (folder / '0001_02.png').write_bytes(b'not a png')
    result = run(RESIZE, tmp_path / 'alphabets', '--out', tmp_path / 'out')
    assert_one_line_error(result, '0001_02.png')


# ---------------------------------------------------------------- miniImagenet

FAKE_SPLITS = {
    'train': {'n01000001': 3, 'n01000002': 2},
    'val': {'n02000001': 2},
    'test': {'n03000001': 2},
}


def make_fake_imagenet(root):
    """images/*.jpg of various sizes and modes, and the three split csvs."""
    images = root / 'images'
    images.mkdir(parents=True)
    rng = np.random.RandomState(0)
    sizes = [(120, 90), (500, 375), (84, 84), (64, 100), (200, 200)]
    k = 0
    for split, classes in FAKE_SPLITS.items():
        with open(root / (split + '.csv'), 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['filename', 'label'])
            for label, count in classes.items():
                for i in range(count):
                    name = '%s%08d.jpg' % (label, i + 1)
                    w, h = sizes[k % len(sizes)]
                    pixels = rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
                    im = Image.fromarray(pixels)
                    if k == 3:
                        im = im.convert('L')  # ImageNet has a few greyscale JPEGs
                    im.save(images / name)
                    k += 1
                    writer.writerow([name, label])
    return images


@pytest.mark.slow
def test_proc_images_without_arguments_resizes_and_moves_images_into_split_class_folders(tmp_path):
    images = make_fake_imagenet(tmp_path)
    reference = tmp_path / 'reference'
    shutil.copytree(images, reference)
    for name in os.listdir(reference):  # the reference recipe, in place
        im = Image.open(reference / name)
        im = im.resize((84, 84), resample=Image.LANCZOS)
        im.save(reference / name)
    result = run(PROC, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for split, classes in FAKE_SPLITS.items():
        assert sorted(os.listdir(tmp_path / split)) == sorted(classes)
        for label, count in classes.items():
            files = sorted(os.listdir(tmp_path / split / label))
            assert len(files) == count
            for name in files:
                with Image.open(tmp_path / split / label / name) as im:
                    assert im.size == (84, 84)
                    assert im.convert('RGB').size == (84, 84)
                assert (tmp_path / split / label / name).read_bytes() == (reference / name).read_bytes()
    assert os.listdir(images) == []  # moved, as the reference did
    assert 'Wrote 9 images in 4 class folders' in result.stdout
    rerun = run(PROC, cwd=tmp_path)  # everything already in place: nothing to do, no error
    assert rerun.returncode == 0, rerun.stderr


@pytest.mark.slow
def test_proc_images_with_folder_options_can_keep_the_originals(tmp_path):
    make_fake_imagenet(tmp_path / 'download')
    out = tmp_path / 'prepared'
    result = run(PROC, '--images', tmp_path / 'download' / 'images', '--csv_dir', tmp_path / 'download',
                 '--out', out, '--keep_images', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ['test', 'train', 'val']
    assert len(os.listdir(tmp_path / 'download' / 'images')) == 9
    assert len(os.listdir(out / 'train' / 'n01000001')) == 3


@pytest.mark.slow
def test_proc_images_refuses_a_missing_csv_or_a_missing_or_unreadable_image_with_code_2(tmp_path):
    make_fake_imagenet(tmp_path)
    os.remove(tmp_path / 'val.csv')
    assert_one_line_error(run(PROC, cwd=tmp_path), 'val.csv')
    make_fake_imagenet(tmp_path / 'b')
    os.remove(tmp_path / 'b' / 'images' / 'n0200000100000002.jpg')
    assert_one_line_error(run(PROC, cwd=tmp_path / 'b'), 'n0200000100000002.jpg', 'val.csv')
    assert not (tmp_path / 'b' / 'train').exists()  # checked before anything is moved
    make_fake_imagenet(tmp_path / 'c')
    (tmp_path / 'c' / 'images' / 'n0300000100000001.jpg').write_bytes(b'truncated')
    assert_one_line_error(run(PROC, cwd=tmp_path / 'c'), 'n0300000100000001.jpg')


@pytest.mark.slow
def test_proc_images_from_a_split_zip_copies_checked_84x84_images(tmp_path):
    test_zip, = require_data('miniImagenet/test.zip')
    with zipfile.ZipFile(test_zip) as zf:
        names = sorted(zf.namelist())
        classes = sorted(set(n.split('/')[1] for n in names))[:2]
        members = [n for c in classes for n in [m for m in names if m.split('/')[1] == c][:5]]
        small = tmp_path / 'test_small.zip'
        with zipfile.ZipFile(small, 'w') as out:
            for m in members:
                out.writestr(m, zf.read(m))
    # a second source, a folder: val/CLASS/ with one image that is not 84x84
    odd = tmp_path / 'extra' / 'val' / 'n09999999'
    odd.mkdir(parents=True)
    Image.new('RGB', (100, 60), (10, 200, 30)).save(odd / 'n0999999900000001.jpg')
    out = tmp_path / 'prepared'
    result = run(PROC, '--from', small, tmp_path / 'extra', '--out', out)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out / 'test')) == classes
    with zipfile.ZipFile(small) as zf:
        for m in members:
            assert (out / m).read_bytes() == zf.read(m)
            with Image.open(out / m) as im:
                assert im.size == (84, 84) and im.mode == 'RGB'
    with Image.open(out / 'val' / 'n09999999' / 'n0999999900000001.jpg') as im:
        assert im.size == (84, 84)
    assert 'Wrote 11 images in 3 class folders' in result.stdout


@pytest.mark.slow
def test_proc_images_from_refuses_a_missing_or_wrongly_shaped_source_with_code_2(tmp_path):
    missing = tmp_path / 'test.zip'
    assert_one_line_error(run(PROC, '--from', missing, '--out', tmp_path / 'out'), str(missing))
    flat = tmp_path / 'flat.zip'
    with zipfile.ZipFile(flat, 'w') as zf:
        zf.writestr('n01/a.jpg', b'x')
    assert_one_line_error(run(PROC, '--from', flat, '--out', tmp_path / 'out'), str(flat))
    broken = tmp_path / 'broken.zip'
    with zipfile.ZipFile(broken, 'w') as zf:
        zf.writestr('test/n01/a.jpg', b'not a jpeg')
    assert_one_line_error(run(PROC, '--from', broken, '--out', tmp_path / 'out'), 'a.jpg')


# ------------------------------------------------ paths from csvs and archives

def _add_csv_row(csv_path, filename, label):
    """Append a row; returns its line number."""
    with open(csv_path, newline='') as f:
        lines = sum(1 for _ in f)
    with open(csv_path, 'a', newline='') as f:
        csv.writer(f).writerow([filename, label])
    return lines + 1


def _snapshot(root):
    """{relative path: bytes} of every file under root."""
    return {os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n), 'rb').read()
            for d, _, files in os.walk(root) for n in files}


@pytest.mark.slow
def test_proc_images_refuses_a_csv_label_leading_out_of_the_output_folder(tmp_path):
    download = tmp_path / 'download'
    make_fake_imagenet(download)
    line = _add_csv_row(download / 'train.csv', 'n0100000100000001.jpg', '../../../escaped')
    before = _snapshot(tmp_path)
    out = tmp_path / 'a' / 'b' / 'out'
    result = run(PROC, '--images', download / 'images', '--csv_dir', download, '--out', out)
    assert_one_line_error(result, 'train.csv line %d' % line, '../../../escaped', 'fix the csv')
    assert _snapshot(tmp_path) == before  # nothing written anywhere, nothing moved


@pytest.mark.slow
def test_proc_images_refuses_an_absolute_file_name_and_leaves_that_file_alone(tmp_path):
    download = tmp_path / 'download'
    make_fake_imagenet(download)
    precious = tmp_path / 'precious.jpg'
    Image.new('RGB', (200, 100), (1, 2, 3)).save(precious)
    line = _add_csv_row(download / 'val.csv', str(precious), 'n02000001')
    before = _snapshot(tmp_path)
    result = run(PROC, '--images', download / 'images', '--csv_dir', download,
                 '--out', tmp_path / 'out')
    assert_one_line_error(result, 'val.csv line %d' % line, str(precious))
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_proc_images_never_resizes_an_image_over_itself(tmp_path):
    make_fake_imagenet(tmp_path)
    out = tmp_path / 'out'
    # the originals already sit in what would be one class's output folder
    images = out / 'train' / 'n01000001'
    shutil.copytree(tmp_path / 'images', images)
    before = _snapshot(tmp_path)
    result = run(PROC, '--images', images, '--csv_dir', tmp_path, '--out', out)
    assert_one_line_error(result, 'train.csv line 2', 'another folder')
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_proc_images_refuses_a_csv_naming_one_image_in_two_classes_before_moving_any(tmp_path):
    make_fake_imagenet(tmp_path)
    line = _add_csv_row(tmp_path / 'test.csv', 'n0100000100000001.jpg', 'n03000001')
    before = _snapshot(tmp_path)
    result = run(PROC, cwd=tmp_path)
    assert_one_line_error(result, 'test.csv line %d' % line, 'train.csv line 2', '--keep_images')
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_proc_images_from_refuses_an_output_folder_holding_its_sources(tmp_path):
    odd = tmp_path / 'copy' / 'val' / 'n09999999'
    odd.mkdir(parents=True)
    Image.new('RGB', (100, 60), (10, 200, 30)).save(odd / 'n0999999900000001.jpg')
    before = _snapshot(tmp_path)
    result = run(PROC, '--from', tmp_path / 'copy', '--out', tmp_path / 'copy')
    assert_one_line_error(result, 'n0999999900000001.jpg', 'another folder')
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_proc_images_from_refuses_a_zip_member_with_an_empty_class_folder(tmp_path):
    odd = tmp_path / 'odd.zip'
    Image.new('RGB', (84, 84)).save(tmp_path / 'image.jpg')
    with zipfile.ZipFile(odd, 'w') as zf:
        zf.writestr('test//n0300000100000001.jpg', (tmp_path / 'image.jpg').read_bytes())
    result = run(PROC, '--from', odd, '--out', tmp_path / 'out')
    assert_one_line_error(result, str(odd), 'test//n0300000100000001.jpg')
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_resizing_refuses_an_output_folder_holding_its_sources(tmp_path):
    folder = tmp_path / 'alphabets' / 'Latin' / 'character01'
    folder.mkdir(parents=True)
    Image.new('1', (105, 105), 1).save(folder / '0001_01.png')
    before = _snapshot(tmp_path)
    result = run(RESIZE, tmp_path / 'alphabets', '--out', tmp_path / 'alphabets')
    assert_one_line_error(result, '0001_01.png', 'another folder', 'in place')
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_resizing_refuses_a_zip_member_with_an_empty_character_folder(tmp_path):
    odd = tmp_path / 'images_background.zip'
    Image.new('1', (105, 105), 1).save(tmp_path / 'image.png')
    with zipfile.ZipFile(odd, 'w') as zf:
        zf.writestr('images_background/Latin//0001_01.png', (tmp_path / 'image.png').read_bytes())
    result = run(RESIZE, odd, '--out', tmp_path / 'out')
    assert_one_line_error(result, str(odd), 'Latin//0001_01.png')
    assert not (tmp_path / 'out').exists()
