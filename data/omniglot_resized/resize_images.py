"""Resize Omniglot to 28x28 for MAML.

Usage:
    python data/omniglot_resized/resize_images.py SRC... [--out DIR] [--smooth] [--jobs N]
    python resize_images.py                 (reference behaviour, see below)

Each SRC is one of the Omniglot archives (images_background.zip,
images_evaluation.zip), whose members are TOP/ALPHABET/CHARACTER/NNNN_MM.png,
or a folder of alphabets (ALPHABET/CHARACTER/*.png), or a folder holding such
top folders (images_background/ALPHABET/CHARACTER/*.png). The alphabets of all
SRCs are merged into DIR/ALPHABET/CHARACTER/*.png, every image resized to 28x28.
DIR defaults to the folder of this script (data/omniglot_resized), which is
where the training code looks for the data. Rerunning into the same DIR
overwrites the previous output.

The resize asks PIL for LANCZOS, as the original preparation did. The Omniglot
originals are one-bit (mode '1') images, for which PIL silently resamples with
nearest-neighbour, so the 28x28 results are binary: this is the default and is
pixel-identical to the original preparation. --smooth converts each image to
greyscale ('L') first, so LANCZOS really applies (a different data set; not
comparable with published numbers).

With no SRC it does exactly what the original script did: in the current
folder, every file matching */*/* (ALPHABET/CHARACTER/file) is resized in
place, with a counter printed every 200 images.

With SRC, the alphabet, character and file names of an archive must be plain
names, so every output stays under DIR, and a source image is never written
over (a DIR holding a SRC folder's images is refused): both are checked before
anything is written.
"""
import argparse
import glob
import io
import multiprocessing
import os
import sys
import zipfile

from PIL import Image

SIZE = (28, 28)
IMAGE_EXTENSIONS = ('.png',)
DEFAULT_OUT = os.path.dirname(os.path.abspath(__file__))


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


def _is_image_name(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _plain_name(name):
    """True for one file or folder name: nothing that could lead out of its folder."""
    return (name not in ('', '.', '..') and '/' not in name and '\\' not in name
            and '\0' not in name and os.path.basename(name) == name and not os.path.isabs(name))


def _inside(root, path):
    """True if path (once '..' and the like are resolved) lies under root."""
    root, path = os.path.abspath(root), os.path.abspath(path)
    return os.path.commonpath([root, path]) == root and path != root


def _hidden_or_junk(parts):
    return any(p.startswith('.') or p == '__MACOSX' for p in parts)


def _split_layout(entries, src):
    """entries: list of (path parts, locator). Returns [(alphabet, character, file, locator)].

    Accepts ALPHABET/CHARACTER/FILE (depth 3) or TOP/ALPHABET/CHARACTER/FILE
    (depth 4) for every image, the same depth throughout.
    """
    images = [(parts, loc) for parts, loc in entries
              if not _hidden_or_junk(parts) and _is_image_name(parts[-1])]
    if not images:
        raise UsageError(
            '%s: no .png images found; expected an Omniglot archive or folder '
            '(ALPHABET/CHARACTER/*.png, e.g. images_background.zip)' % src)
    # ALPHABET, CHARACTER and FILE become the output's path: each must be one plain name.
    for parts, _ in images:
        if not all(map(_plain_name, parts[-3:])):
            raise UsageError('%s: %s is not at ALPHABET/CHARACTER/FILE.png (an empty or odd path '
                             'part); give an Omniglot archive or folder' % (src, '/'.join(parts)))
    depths = set(len(parts) for parts, _ in images)
    if len(depths) != 1 or depths.pop() not in (3, 4):
        raise UsageError(
            '%s: is not Omniglot-shaped: images must all sit at ALPHABET/CHARACTER/FILE.png '
            '(optionally under one top folder like images_background/)' % src)
    return [tuple(parts[-3:]) + (loc,) for parts, loc in images]


def list_zip(src):
    try:
        with zipfile.ZipFile(src) as zf:
            names = [n for n in zf.namelist() if not n.endswith('/')]
    except (zipfile.BadZipFile, OSError) as exc:
        raise UsageError('%s: cannot be read as a zip archive (%s); give images_background.zip, '
                         'images_evaluation.zip or an extracted folder' % (src, exc))
    entries = [(n.split('/'), n) for n in names]
    return [(a, c, f, ('zip', src, member)) for a, c, f, member in _split_layout(entries, src)]


def list_folder(src):
    entries = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        rel = os.path.relpath(root, src)
        rel_parts = [] if rel == '.' else rel.split(os.sep)
        for name in sorted(files):
            entries.append((rel_parts + [name], os.path.join(root, name)))
    return [(a, c, f, ('file', path)) for a, c, f, path in _split_layout(entries, src)]


def list_sources(srcs):
    """All images of all SRCs as {(alphabet, character, file): locator}; later SRCs win."""
    items = {}
    for src in srcs:
        if not os.path.exists(src):
            raise UsageError('%s: does not exist; give the path of images_background.zip, '
                             'images_evaluation.zip or a folder of ALPHABET/CHARACTER/*.png' % src)
        if os.path.isdir(src):
            listed = list_folder(src)
        else:
            listed = list_zip(src)
        for alphabet, character, name, loc in listed:
            items[(alphabet, character, name)] = loc
    return items


_OPEN_ZIPS = {}


def _open_image(loc):
    if loc[0] == 'zip':
        _, archive, member = loc
        zf = _OPEN_ZIPS.get(archive)
        if zf is None:
            zf = _OPEN_ZIPS[archive] = zipfile.ZipFile(archive)
        return Image.open(io.BytesIO(zf.read(member))), '%s:%s' % (archive, member)
    return Image.open(loc[1]), loc[1]


def _save_atomically(im, dest, fallback_format=None):
    """Write next to dest, then rename over it, so dest is never half-written."""
    folder, name = os.path.split(dest)
    fmt = Image.registered_extensions().get(os.path.splitext(name)[1].lower(), fallback_format)
    tmp = os.path.join(folder, '.%s.%d.tmp' % (name, os.getpid()))
    try:
        im.save(tmp, format=fmt)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def resize_one(job):
    """job = (locator, dest, smooth). Returns None, or an error line."""
    loc, dest, smooth = job
    where = loc[-1]
    try:
        im, where = _open_image(loc)
        with im:
            original_format = im.format
            if smooth:
                im = im.convert('L')
            # The original recipe, unchanged: for mode '1' PIL uses nearest-neighbour.
            im = im.resize(SIZE, resample=Image.LANCZOS)
        _save_atomically(im, dest, original_format)
    except Exception as exc:  # reported to the user as one line, not a traceback
        return ('%s: cannot be read or written as an image (%s: %s); replace or remove this file '
                'and run again' % (where, type(exc).__name__, exc))
    return None


def run_jobs(jobs, workers, counter_every=0):
    """Run resize_one over jobs (in order), printing a counter like the original script."""
    if workers > 1 and len(jobs) > 400:
        pool = multiprocessing.Pool(workers)
        results = pool.imap(resize_one, jobs, chunksize=64)
    else:
        pool = None
        results = map(resize_one, jobs)
    try:
        for i, error in enumerate(results, 1):
            if error is not None:
                raise UsageError(error)
            if counter_every and i % counter_every == 0:
                print(i, flush=True)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def resize_in_place(smooth, workers):
    """The original script's behaviour: */*/* under the current folder, in place."""
    files = [f for f in sorted(glob.glob('*/*/*')) if os.path.isfile(f)]
    if not files:
        raise UsageError('no ALPHABET/CHARACTER/file images under the current folder %s; run '
                         'this from the folder holding the alphabets, or give SRC... --out DIR'
                         % os.getcwd())
    run_jobs([(('file', f), f, smooth) for f in files], workers, counter_every=200)
    characters = set(os.path.dirname(f) for f in files)
    print('Wrote %d images in %d character folders to %s' % (len(files), len(characters), os.getcwd()))


def resize_sources(srcs, out, smooth, workers):
    items = list_sources(srcs)
    characters = sorted(set((a, c) for a, c, _ in items))
    jobs = [(loc, os.path.join(out, a, c, name), smooth) for (a, c, name), loc in sorted(items.items())]
    # A source is never written over: --out must not hold a SRC folder's images
    # (resizing in place is what running with no SRC inside that folder does).
    source_files = set(os.path.realpath(loc[1]) for loc in items.values() if loc[0] == 'file')
    for loc, dest, _ in jobs:
        if not _inside(out, dest):  # a guard: the names were checked to be plain
            raise UsageError('%s would lead out of --out %s; give an Omniglot archive or folder'
                             % (loc[-1], out))
        if os.path.realpath(dest) in source_files:
            raise UsageError('%s: is a source image and would be written over (--out holds a SRC '
                             'folder); give --out another folder, or run with no SRC inside the '
                             'folder of alphabets to resize it in place' % dest)
    for alphabet, character in characters:
        folder = os.path.join(out, alphabet, character)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise UsageError('%s: cannot create output folder (%s); choose another --out' % (folder, exc))
    run_jobs(jobs, workers)
    alphabets = set(a for a, _ in characters)
    print('Wrote %d images in %d character folders (%d alphabets) to %s'
          % (len(jobs), len(characters), len(alphabets), out))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='Resize Omniglot images to 28x28 (binary by default, as the original '
                    'preparation). With no SRC: resize */*/* in the current folder in place.')
    parser.add_argument('src', nargs='*', metavar='SRC',
                        help='images_background.zip / images_evaluation.zip, or a folder of '
                             'ALPHABET/CHARACTER/*.png (or of such top folders)')
    parser.add_argument('--out', default=None,
                        help='output folder, gets ALPHABET/CHARACTER/*.png (default: the folder '
                             'of this script, %s)' % DEFAULT_OUT)
    parser.add_argument('--smooth', action='store_true',
                        help="convert to greyscale before resizing so LANCZOS really smooths "
                             "(not the original data; default off)")
    parser.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                        help='worker processes (default: number of CPUs)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.src:
            resize_sources(args.src, os.path.abspath(args.out or DEFAULT_OUT), args.smooth, args.jobs)
        elif args.out is not None:
            raise UsageError('--out needs at least one SRC (a zip or a folder of alphabets)')
        else:
            resize_in_place(args.smooth, args.jobs)
    except UsageError as exc:
        print('error: %s' % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
