"""Tasks for meta-learning: sinusoid regression, Omniglot and MiniImagenet.

`DataGenerator(num_samples_per_class, batch_size, config)` mirrors the
reference. Every source serves meta-batches the same way:
`meta_batches(train, seed, start)` yields numpy float32
`(inputa, inputb, labela, labelb)`, each `[tasks, examples, features]`, split
into the K examples per class to adapt on (a) and the rest to evaluate on (b).

For sinusoid, `generate()` draws a batch from numpy's global generator, bit
for bit as the reference did (so its position is numpy's state, not `start`),
and the oracle's amplitude and phase inputs are appended here. For the image
data sets the images are decoded once into memory as uint8, tasks are file
lists drawn in the reference's order of `random` calls (seed 5 for training, 6
for evaluation; produced lazily instead of all before training), and
`batches(train)` yields ready batches, prepared in a background thread ahead
of use.
"""
import os
import queue
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

NUM_TRAIN_TASKS = 200000  # the reference's pre-generated training task list, cycled
NUM_EVAL_TASKS = 600
TRAIN_TASK_SEED, EVAL_TASK_SEED = 5, 6
OMNIGLOT_SPLIT_SEED, OMNIGLOT_NUM_TRAIN, OMNIGLOT_NUM_VAL = 1, 1100, 100
DEFAULT_FOLDERS = {'omniglot': './data/omniglot_resized', 'miniimagenet': './data/miniImagenet'}
# What the preparation scripts write (Omniglot .png, mini-ImageNet .jpg); other
# files and hidden ones (.DS_Store, README.txt, a zip's __MACOSX/) are not
# images of a class and are skipped, as the preparation scripts skip them.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
PREPARE_SCRIPTS = {'omniglot': 'data/omniglot_resized/resize_images.py',
                   'miniimagenet': 'data/miniImagenet/proc_images.py'}


class DataError(ValueError):
    """The data on disk cannot serve these flags; the message says what to do."""


def _skipped(name):
    """Hidden files and folders, and the folder macOS adds to zips."""
    return name.startswith('.') or name == '__MACOSX'


def numpy_global_state():
    """numpy's global generator state as JSON-ready values (the sinusoid data's position)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def set_numpy_global_state(saved):
    name, keys, pos, has_gauss, cached = saved
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


class DataGenerator:
    def __init__(self, num_samples_per_class, batch_size, config):
        self.batch_size = batch_size
        self.num_samples_per_class = num_samples_per_class
        self.num_classes = 1  # only relevant for classification
        self.config = config
        # Sinusoid has infinite data: no validation set, as in the reference.
        self.has_validation_set = config.classification
        if config.datasource == 'sinusoid':
            self.generate = self.generate_sinusoid_batch
            self.amp_range = [0.1, 5.0]
            self.phase_range = [0, np.pi]
            self.input_range = [-5.0, 5.0]
        elif config.datasource in ('omniglot', 'miniimagenet'):
            self.num_classes = config.num_classes
            self.data_folder = config.data_folder or DEFAULT_FOLDERS[config.datasource]
            self.img_size, self.channels = (config.img_size,) * 2, config.channels
            if config.datasource == 'omniglot':
                self._list_omniglot()
            else:
                self._list_miniimagenet()
            self._images = {}  # class folder -> uint8 [files, h, w, c], decoded once
            # class folder -> uint8 [files, rotations, dim_input]: each image as the
            # row a batch holds, for every rotation a batch may draw (Omniglot's
            # 0/90/180/270 degrees; MiniImagenet: only the image itself).
            self._rows = {}
            self._file_lists = {}  # class folder -> its sorted file names
        else:
            raise DataError('unknown datasource %r' % config.datasource)

    # ------------------------------------------------------ every source
    def meta_batches(self, train=True, seed=(0,), start=0, tasks=None):
        """Iterator over numpy (inputa, inputb, labela, labelb) meta-batches.

        Image batches are fixed by (seed, position) and start at batch `start`;
        sinusoid batches are numpy's next draws, whatever train, seed and start.
        tasks: a range of task positions; only those tasks of each batch are
        assembled (one worker's share), equal to the same tasks of the whole batch.
        """
        tasks = range(self.batch_size) if tasks is None else tasks
        if self.config.datasource == 'sinusoid':
            return self._sinusoid_meta_batches(tasks)
        num_a = self.num_classes * self.config.update_batch_size
        return ((images[:, :num_a], images[:, num_a:], labels[:, :num_a], labels[:, num_a:])
                for images, labels in self.batches(train, seed=seed, start=start, tasks=tasks))

    def _sinusoid_meta_batches(self, tasks):
        num_a = self.config.update_batch_size
        share = slice(tasks.start, tasks.stop)
        while True:
            # Every worker draws the whole batch (numpy's stream is one) and keeps its share.
            batch_x, batch_y, amp, phase = (x[share] for x in self.generate())
            if self.config.baseline == 'oracle':
                batch_x = np.concatenate([batch_x, np.zeros(batch_x.shape[:2] + (2,))], 2)
                batch_x[:, :, 1] = amp[:, None]
                batch_x[:, :, 2] = phase[:, None]
            batch_x, batch_y = batch_x.astype(np.float32), batch_y.astype(np.float32)
            yield batch_x[:, :num_a], batch_x[:, num_a:], batch_y[:, :num_a], batch_y[:, num_a:]

    # ------------------------------------------------------------ sinusoid
    def generate_sinusoid_batch(self, input_idx=None):
        """inputs, outputs [batch, samples, 1], amplitudes, phases.

        Training and evaluation draw alike (the reference's `train` argument
        changed nothing), so there is no split to choose.

        input_idx: replace points from that index on by an even grid over the
        input range (for plots), exactly as the reference did.
        """
        amp = np.random.uniform(self.amp_range[0], self.amp_range[1], [self.batch_size])
        phase = np.random.uniform(self.phase_range[0], self.phase_range[1], [self.batch_size])
        # One draw for all tasks: numpy fills it in the order of the reference's
        # one draw per task, so the values are the same, bit for bit.
        init_inputs = np.random.uniform(self.input_range[0], self.input_range[1],
                                        [self.batch_size, self.num_samples_per_class, 1])
        if input_idx is not None:
            init_inputs[:, input_idx:, 0] = np.linspace(
                self.input_range[0], self.input_range[1],
                num=self.num_samples_per_class - input_idx, retstep=False)
        outputs = amp[:, None, None] * np.sin(init_inputs - phase[:, None, None])
        return init_inputs, outputs, amp, phase

    # ------------------------------------------------------ class folders
    def _missing(self, what):
        script = PREPARE_SCRIPTS[self.config.datasource]
        return DataError('%s data not found: %s (prepare it with %s, or point --data_folder at '
                         'the prepared folder)' % (self.config.datasource, what, script))

    def _subfolders(self, folder):
        return sorted(d for d in os.listdir(folder) if not _skipped(d)
                      and os.path.isdir(os.path.join(folder, d)))

    def _list_omniglot(self):
        root = self.data_folder
        if not os.path.isdir(root):
            raise self._missing('no folder %s' % os.path.abspath(root))
        # Sorted listings (the reference took the file system's order, which
        # differs between machines), then the reference's seeded shuffle.
        folders = [os.path.join(family, character)
                   for family in self._subfolders(root)
                   for character in self._subfolders(os.path.join(root, family))]
        if not folders:
            raise self._missing('no ALPHABET/CHARACTER folders in %s' % os.path.abspath(root))
        random.Random(OMNIGLOT_SPLIT_SEED).shuffle(folders)  # = random.seed(1); shuffle
        num_train = OMNIGLOT_NUM_TRAIN
        self.metatrain_character_folders = folders[:num_train]
        if self.config.test_set:
            self.metaval_character_folders = folders[num_train + OMNIGLOT_NUM_VAL:]
        else:
            self.metaval_character_folders = folders[num_train:num_train + OMNIGLOT_NUM_VAL]

    def _list_miniimagenet(self):
        root = self.data_folder
        splits = {}
        for split in ('train', 'test' if self.config.test_set else 'val'):
            folder = os.path.join(root, split)
            if not os.path.isdir(folder):
                if split == 'train' and not self.config.train:
                    splits[split] = []  # testing needs only the split it tests on
                    continue
                raise self._missing('no folder %s' % os.path.abspath(folder))
            splits[split] = [os.path.join(split, c) for c in self._subfolders(folder)]
        self.metatrain_character_folders = splits['train']
        self.metaval_character_folders = splits['test' if self.config.test_set else 'val']

    def folders(self, train):
        return self.metatrain_character_folders if train else self.metaval_character_folders

    def _files(self, folder):
        if folder not in self._file_lists:
            names = sorted(n for n in os.listdir(os.path.join(self.data_folder, folder))
                           if not _skipped(n) and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
            self._file_lists[folder] = names
        return self._file_lists[folder]

    # -------------------------------------------------------------- tasks
    def task_list(self, train=True):
        """The reference's task sequence: each task a list of files, class-major."""
        folders = self.folders(train)
        self._check_enough(folders, train)
        return TaskList(folders, self._files, self.num_classes, self.num_samples_per_class,
                        TRAIN_TASK_SEED if train else EVAL_TASK_SEED,
                        NUM_TRAIN_TASKS if train else NUM_EVAL_TASKS)

    def _check_enough(self, folders, train):
        split = 'training' if train else ('test' if self.config.test_set else 'validation')
        if len(folders) < self.num_classes:
            raise DataError('%s split of %s has %d classes, fewer than --num_classes=%d'
                            % (split, self.data_folder, len(folders), self.num_classes))
        for folder in folders:
            count = len(self._files(folder))
            if count < self.num_samples_per_class:
                raise DataError('class folder %s has %d images, fewer than the %d per class a '
                                'task needs' % (os.path.join(self.data_folder, folder), count,
                                                self.num_samples_per_class))

    # ------------------------------------------------------------- images
    def load_images(self, folders):
        """Decode every image of these class folders once (kept as uint8)."""
        todo = [f for f in folders if f not in self._images]
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            for folder, images in zip(todo, pool.map(self._decode_folder, todo)):
                self._images[folder] = images
                if self.config.datasource == 'omniglot':
                    self._rows[folder] = np.stack(
                        [np.rot90(images, r, axes=(1, 2)).reshape(len(images), -1)
                         for r in range(4)], 1)
                else:  # a view: no second copy of the images
                    self._rows[folder] = images.reshape(len(images), 1, -1)

    def _decode_folder(self, folder):
        return np.stack([self._decode(os.path.join(self.data_folder, folder, name))
                         for name in self._files(folder)])

    def _decode(self, path):
        from PIL import Image
        try:
            with Image.open(path) as im:
                im = im.convert('RGB' if self.channels == 3 else 'L')
                pixels = np.asarray(im, dtype=np.uint8)
        except Exception as e:  # PIL raises many types for a bad file
            raise DataError('cannot read image %s (%s); re-run %s'
                            % (path, e, PREPARE_SCRIPTS[self.config.datasource]))
        if pixels.shape[:2] != self.img_size:
            raise DataError('image %s is %dx%d, expected %dx%d; re-run %s'
                            % (path, pixels.shape[1], pixels.shape[0], self.img_size[1],
                               self.img_size[0], PREPARE_SCRIPTS[self.config.datasource]))
        return pixels.reshape(self.img_size + (self.channels,))

    def make_batch(self, tasks, rng, share=None):
        """Images [batch, N*S, dim] float32 and one-hot labels [batch, N*S, N].

        Within a task, examples go shot by shot (shot k of every class, in a
        fresh random class order per shot); Omniglot classes get a random
        rotation of 0/90/180/270 degrees and pixels are inverted, as in the
        reference. share: a range of the tasks; only those are assembled (the
        others' random draws are still made, so the share's tasks are the same
        as in the whole batch).
        """
        n, s = self.num_classes, self.num_samples_per_class
        share = range(len(tasks)) if share is None else share
        images = np.empty((len(share), n * s, self.config.dim_input), np.float32)
        labels = np.zeros((len(share), n * s, n), np.float32)
        for position, task in enumerate(tasks):
            rotations = (rng.integers(0, 4, n) if self.config.datasource == 'omniglot'
                         else np.zeros(n, int))
            orders = [rng.permutation(n) for _ in range(s)]
            if position not in share:
                continue
            t = position - share.start
            classes = np.concatenate(orders)  # row k * n + j: shot k of class orders[k][j]
            shots = np.repeat(np.arange(s), n)
            rows = []
            for k, c in zip(shots, classes):
                folder, index = task[c * s + k]
                rows.append(self._rows[folder][index, rotations[c]])
            images[t] = rows
            labels[t, np.arange(n * s), classes] = 1.0
        images /= 255.0
        if self.config.datasource == 'omniglot':
            images = 1.0 - images
        return images, labels

    def batch(self, tasks, index, seed, share=None):
        """Batch `index` of the cycled task list; its randomness is fixed by (seed, index)."""
        chunk = [tasks.task_indices(index * self.batch_size + i) for i in range(self.batch_size)]
        return self.make_batch(chunk, np.random.default_rng(list(seed) + [index]), share)

    def batches(self, train=True, seed=(0,), start=0, prefetch=2, tasks=None):
        """Iterator over (images, labels) batches from batch `start` on, made ahead of use.

        Each batch depends only on its position and the seed, so a run resumed
        at a checkpoint sees the batches an uninterrupted run would have seen.
        A background thread keeps `prefetch` batches ready. (Not tf.data's
        from_generator: on TensorFlow 2.21 on the CPU, merely creating one made
        every later training step slower; results/benchmarks.md.)
        """
        task_list = self.task_list(train)
        self.load_images(self.folders(train))
        seed = [int(s) for s in np.atleast_1d(seed)]

        def produce(index):
            return self.batch(task_list, index, seed, tasks)
        return Prefetcher(produce, start, prefetch)


class Prefetcher:
    """Calls produce(start), produce(start + 1), ... in a background thread.

    An exception in the thread (a bad image, say) is raised again in the
    consumer at the batch where it happened.
    """

    def __init__(self, produce, start, depth):
        self._queue = queue.Queue(maxsize=depth)
        # A daemon thread: it blocks on the full queue and ends with the process.
        threading.Thread(target=self._run, args=(produce, start), daemon=True).start()

    def _run(self, produce, index):
        while True:
            try:
                self._queue.put((produce(index), None))
            except Exception as e:  # handed to the consumer, never lost
                self._queue.put((None, e))
                return
            index += 1

    def __iter__(self):
        return self

    def __next__(self):
        batch, error = self._queue.get()
        if error is not None:
            raise error
        return batch


class TaskList:
    """The reference's pre-generated task list, produced lazily in the same order.

    For each task the reference drew, with `random` seeded once: N class folders
    (random.sample), their order (random.shuffle), then S files per class
    (random.sample of the folder listing). Drawing those calls on demand from a
    private generator seeded the same way gives the same sequence without the
    minutes the reference spent building 200,000 file lists up front. Tasks are
    kept (as indices) once drawn, so the list cycles like the reference's.
    """

    def __init__(self, folders, files_of, num_classes, num_samples, seed, num_tasks):
        self.folders, self.files_of = list(folders), files_of
        self.num_classes, self.num_samples = num_classes, num_samples
        self.num_tasks = num_tasks
        self._random = random.Random(seed)
        self._drawn = []

    def __len__(self):
        return self.num_tasks

    def task_indices(self, i):
        """Task i (cycled) as [(folder, file index)] class-major."""
        i %= self.num_tasks
        while len(self._drawn) <= i:
            self._drawn.append(self._draw())
        return self._drawn[i]

    def task_files(self, i):
        """Task i as file paths relative to the data folder."""
        return [os.path.join(folder, self.files_of(folder)[j]) for folder, j in self.task_indices(i)]

    def _draw(self):
        sampled = self._random.sample(self.folders, self.num_classes)
        self._random.shuffle(sampled)
        task = []
        for folder in sampled:
            count = len(self.files_of(folder))
            task.extend((folder, j) for j in self._random.sample(range(count), self.num_samples))
        return task
