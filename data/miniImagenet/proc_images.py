"""Prepare mini-ImageNet for MAML: 84x84 JPEGs in {train,val,test}/CLASS/.

Usage:
    python proc_images.py
        The original behaviour, run from data/miniImagenet/: the images of
        images/ named in train.csv, val.csv and test.csv (Ravi & Larochelle
        split, header "filename,label") are resized to 84x84 with LANCZOS and
        moved into {split}/{label}/, with a counter printed every 500 images.

    python data/miniImagenet/proc_images.py [--images DIR] [--csv_dir DIR] [--out DIR] [--keep_images]
        The same with other folders (defaults: images, ., . in the current
        folder). --keep_images leaves the originals in place (copies instead
        of moving).

    python data/miniImagenet/proc_images.py --from SRC... [--out DIR]
        SRC is an already split copy: a zip or folder whose images sit at
        {train,val,test}/CLASS/FILE.jpg (like test.zip or train_subset100.zip),
        or a folder holding such split folders. The images are checked (they
        must decode as images; anything not 84x84 RGB is converted to RGB and
        resized with LANCZOS) and written to DIR/{train,val,test}/CLASS/.
        DIR defaults to the folder of this script (data/miniImagenet), where
        the training code looks for the data.

Reruns are safe: outputs are written to a temporary name and renamed, and in
the csv mode an image already moved to its split folder counts as done.

Names from a csv (file names, labels) and from an archive (class and file
names) must be plain names, so every output stays under the output folder and
every original is read from its own; a source image is never written over
(an output folder holding the sources is refused). A bad row or member stops
the run, naming it, before anything is written or moved.
"""
import argparse
import csv
import io
import multiprocessing
import os
import sys
import zipfile

from PIL import Image

SIZE = (84, 84)
SPLITS = ('train', 'val', 'test')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
DEFAULT_FROM_OUT = os.path.dirname(os.path.abspath(__file__))


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


def _plain_name(name):
    """True for one file or folder name: nothing that could lead out of its folder."""
    return (name not in ('', '.', '..') and '/' not in name and '\\' not in name
            and '\0' not in name and os.path.basename(name) == name and not os.path.isabs(name))


def _inside(root, path):
    """True if path (once '..' and the like are resolved) lies under root."""
    root, path = os.path.abspath(root), os.path.abspath(path)
    return os.path.commonpath([root, path]) == root and path != root


def _save_atomically(im, dest, **params):
    """Write next to dest, then rename over it, so dest is never half-written."""
    folder, name = os.path.split(dest)
    fmt = Image.registered_extensions().get(os.path.splitext(name)[1].lower(), 'JPEG')
    tmp = os.path.join(folder, '.%s.%d.tmp' % (name, os.getpid()))
    try:
        im.save(tmp, format=fmt, **params)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_bytes_atomically(data, dest):
    folder, name = os.path.split(dest)
    tmp = os.path.join(folder, '.%s.%d.tmp' % (name, os.getpid()))
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _image_error(where, exc):
    return ('%s: cannot be read or written as an image (%s: %s); replace or remove this file '
            'and run again' % (where, type(exc).__name__, exc))


# ---------------------------------------------------------------- csv mode

def resize_and_place(job):
    """job = (src, dest, keep). The original recipe: open, resize 84x84 LANCZOS, save."""
    src, dest, keep = job
    try:
        with Image.open(src) as im:
            if im.mode not in ('RGB', 'L'):
                # CMYK / palette / alpha originals: the loader wants RGB.
                im = im.convert('RGB')
            im = im.resize(SIZE, resample=Image.LANCZOS)
        _save_atomically(im, dest)
        if not keep:
            os.remove(src)
    except Exception as exc:  # reported to the user as one line
        return _image_error(src, exc)
    return None


def read_split_csv(path):
    """Rows (line number, filename, label) of a Ravi & Larochelle split file."""
    if not os.path.isfile(path):
        raise UsageError('%s: split file missing; put train.csv, val.csv and test.csv (Ravi & '
                         'Larochelle split, "filename,label") there or pass --csv_dir' % path)
    rows = []
    with open(path, newline='') as f:
        for line_number, row in enumerate(csv.reader(f), 1):
            if line_number == 1 and row and row[0].strip().lower() == 'filename':
                continue  # header
            if not row:
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise UsageError('%s line %d: expected "filename,label", got %r; fix the csv'
                                 % (path, line_number, ','.join(row)))
            filename, label = row[0].strip(), row[1].strip()
            # Both become path parts: a name like ../x or /x would lead out of
            # the images or output folder.
            for what, value in (('file name', filename), ('label', label)):
                if not _plain_name(value):
                    raise UsageError('%s line %d: the %s %r is not a plain name (no folders, "..", '
                                     'or absolute paths); fix the csv (each row is '
                                     '"FILE.jpg,LABEL" of images in --images)'
                                     % (path, line_number, what, value))
            rows.append((line_number, filename, label))
    return rows


def process_csv_splits(images, csv_dir, out, keep, workers):
    jobs, already, counts = [], 0, {}
    seen, sources = set(), {}
    for split in SPLITS:
        csv_path = os.path.join(csv_dir, split + '.csv')
        for line_number, filename, label in read_split_csv(csv_path):
            src = os.path.join(images, filename)
            dest = os.path.join(out, split, label, filename)
            where = '%s line %d' % (csv_path, line_number)
            if not (_inside(images, src) and _inside(out, dest)):  # a guard: names are plain
                raise UsageError('%s: %s would lead out of --images or --out; fix the csv'
                                 % (where, filename))
            if os.path.exists(src) and os.path.realpath(src) == os.path.realpath(dest):
                raise UsageError('%s: %s would be resized over itself (--images is the output '
                                 'class folder); give --out another folder' % (where, src))
            if dest in seen:
                continue
            seen.add(dest)
            if src in sources and not keep:
                raise UsageError('%s: %s is also named at %s; an image is moved to one class '
                                 'folder: fix the csv, or pass --keep_images'
                                 % (where, filename, sources[src]))
            sources[src] = where
            counts.setdefault(split, set()).add(label)
            if os.path.isfile(src):
                jobs.append((src, dest, keep))
            elif os.path.isfile(dest):
                already += 1  # moved there by an earlier run
            else:
                raise UsageError('%s: missing, but %s line %d names it; put the original '
                                 'mini-ImageNet images in %s or pass --images DIR'
                                 % (src, csv_path, line_number, images))
    for split, labels in counts.items():
        for label in labels:
            os.makedirs(os.path.join(out, split, label), exist_ok=True)
    run_jobs(resize_and_place, jobs, workers, counter_every=500)
    n_classes = sum(len(labels) for labels in counts.values())
    print('Wrote %d images in %d class folders to %s (%s)%s'
          % (len(jobs), n_classes, os.path.abspath(out),
             ', '.join('%s: %d classes' % (s, len(counts.get(s, ()))) for s in SPLITS),
             '; %d were already in place' % already if already else ''))


# ---------------------------------------------------------------- --from mode

def _entries_of(src):
    """(path parts, locator) of every file of a zip or folder; folder parts include its own name."""
    if os.path.isdir(src):
        src = os.path.abspath(src)
        base = os.path.dirname(src)
        entries = []
        for root, dirs, files in os.walk(src):
            dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
            rel_parts = os.path.relpath(root, base).split(os.sep)
            for name in sorted(files):
                entries.append((rel_parts + [name], ('file', os.path.join(root, name))))
        return entries
    try:
        with zipfile.ZipFile(src) as zf:
            names = [n for n in zf.namelist() if not n.endswith('/')]
    except (zipfile.BadZipFile, OSError) as exc:
        raise UsageError('%s: cannot be read as a zip archive (%s); give a zip or folder of '
                         '{train,val,test}/CLASS/*.jpg' % (src, exc))
    return [(n.split('/'), ('zip', src, n)) for n in names]


def list_split_sources(srcs):
    """{(split, class, file name): locator} over all SRCs; later SRCs win."""
    items = {}
    for src in srcs:
        if not os.path.exists(src):
            raise UsageError('%s: does not exist; give a zip or folder of {train,val,test}/CLASS/*.jpg '
                             '(like test.zip)' % src)
        found = 0
        for parts, loc in _entries_of(src):
            if any(p.startswith('.') or p == '__MACOSX' for p in parts):
                continue
            if os.path.splitext(parts[-1])[1].lower() not in IMAGE_EXTENSIONS:
                continue  # csv files, READMEs, ...
            if len(parts) < 3 or parts[-3] not in SPLITS or not all(map(_plain_name, parts[-2:])):
                raise UsageError('%s: %s is not at {train,val,test}/CLASS/FILE.jpg; give an already '
                                 'split copy (like test.zip), or use --images/--csv_dir for raw images'
                                 % (src, '/'.join(parts)))
            items[(parts[-3], parts[-2], parts[-1])] = loc
            found += 1
        if not found:
            raise UsageError('%s: no images found; expected {train,val,test}/CLASS/*.jpg (like test.zip)'
                             % src)
    return items


_OPEN_ZIPS = {}


def _read_bytes(loc):
    if loc[0] == 'zip':
        _, archive, member = loc
        zf = _OPEN_ZIPS.get(archive)
        if zf is None:
            zf = _OPEN_ZIPS[archive] = zipfile.ZipFile(archive)
        return zf.read(member), '%s:%s' % (archive, member)
    with open(loc[1], 'rb') as f:
        return f.read(), loc[1]


def check_and_place(job):
    """job = (locator, dest). Copies 84x84 RGB JPEGs as they are, converts anything else."""
    loc, dest = job
    where = loc[-1]
    try:
        data, where = _read_bytes(loc)
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decode fully: a truncated or corrupt file fails here
            if im.format == 'JPEG' and im.mode == 'RGB' and im.size == SIZE:
                _write_bytes_atomically(data, dest)
                return None
            im = im.convert('RGB')
            if im.size != SIZE:
                im = im.resize(SIZE, resample=Image.LANCZOS)
        _save_atomically(im, dest)
    except Exception as exc:  # reported to the user as one line
        return _image_error(where, exc)
    return 'converted'


def process_from(srcs, out, workers):
    items = list_split_sources(srcs)
    classes = sorted(set((split, cls) for split, cls, _ in items))
    # A source is never written over: --out must not hold a --from folder's images.
    source_files = set(os.path.realpath(loc[1]) for loc in items.values() if loc[0] == 'file')
    jobs = []
    for (split, cls, name), loc in sorted(items.items()):
        name = os.path.splitext(name)[0] + '.jpg'
        dest = os.path.join(out, split, cls, name)
        if not _inside(out, dest):  # a guard: the names were checked to be plain
            raise UsageError('%s would lead out of --out %s; give a zip or folder of '
                             '{train,val,test}/CLASS/*.jpg' % (loc[-1], out))
        if os.path.realpath(dest) in source_files:
            raise UsageError('%s: is a source image and would be written over (--out holds a '
                             '--from folder); give --out another folder' % dest)
        jobs.append((loc, dest))
    for split, cls in classes:
        try:
            os.makedirs(os.path.join(out, split, cls), exist_ok=True)
        except OSError as exc:
            raise UsageError('%s: cannot create output folder (%s); choose another --out'
                             % (os.path.join(out, split, cls), exc))
    converted = run_jobs(check_and_place, jobs, workers)
    print('Wrote %d images in %d class folders to %s (%s)%s'
          % (len(jobs), len(classes), out,
             ', '.join('%s: %d classes' % (s, sum(1 for c in classes if c[0] == s)) for s in SPLITS),
             '; %d converted to 84x84 RGB' % converted if converted else ''))


# ---------------------------------------------------------------- common

def run_jobs(function, jobs, workers, counter_every=0):
    """Run function over jobs in order; returns how many returned 'converted'."""
    if workers > 1 and len(jobs) > 200:
        pool = multiprocessing.Pool(workers)
        results = pool.imap(function, jobs, chunksize=32)
    else:
        pool = None
        results = map(function, jobs)
    converted = 0
    try:
        for i, result in enumerate(results, 1):
            if result == 'converted':
                converted += 1
            elif result is not None:
                raise UsageError(result)
            if counter_every and i % counter_every == 0:
                print(i, flush=True)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return converted


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='Prepare mini-ImageNet: 84x84 JPEGs in {train,val,test}/CLASS/. With no '
                    'arguments: resize images/ and move them by train/val/test.csv, in the '
                    'current folder (the original behaviour).')
    parser.add_argument('--images', default='images',
                        help='folder of the original images (default: images)')
    parser.add_argument('--csv_dir', default='.',
                        help='folder holding train.csv, val.csv, test.csv (default: .)')
    parser.add_argument('--out', default=None,
                        help='output folder for train/ val/ test/ (default: . ; with --from: the '
                             'folder of this script, %s)' % DEFAULT_FROM_OUT)
    parser.add_argument('--keep_images', action='store_true',
                        help='copy instead of moving: leave the originals in --images untouched')
    parser.add_argument('--from', dest='from_srcs', nargs='+', metavar='SRC',
                        help='already split zips or folders ({train,val,test}/CLASS/*.jpg) to '
                             'check and copy instead of raw images')
    parser.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                        help='worker processes (default: number of CPUs)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.from_srcs:
            process_from(args.from_srcs, os.path.abspath(args.out or DEFAULT_FROM_OUT), args.jobs)
        else:
            if not os.path.isdir(args.images):
                raise UsageError('%s: images folder missing; put the original mini-ImageNet images '
                                 'there, pass --images DIR, or use --from for an already split copy'
                                 % args.images)
            process_csv_splits(args.images, args.csv_dir, args.out or '.', args.keep_images,
                               args.jobs)
    except UsageError as exc:
        print('error: %s' % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
