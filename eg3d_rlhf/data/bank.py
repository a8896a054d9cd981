"""Sample banks: one folder per sample id holding its raw sigma slab, an RGB render, geometry previews and meta.json."""

import itertools
import json
import os
import re
import shutil
import zipfile

import numpy as np

import dnnlib
from eg3d_rlhf.geometry import convention as conventions
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.generators import registry
from eg3d_rlhf.geometry.sigma import SlabCrop, grid_from_meta, slab_description, slab_grid, slab_problem

#----------------------------------------------------------------------------
# Layout (README.md, "Sample banks", documents it for other people's scripts):
#   BANK/bank.json                      what made the bank (network, hash, grid, truncation, camera)
#   BANK/<id>/sigma_slab.npy            raw sigma, (x, y, z) order, float16 or float32, not normalised, not flipped
#   BANK/<id>/image.png                 RGB render from the conditioning camera
#   BANK/<id>/preview_<view>.png        shaded level surface of the slab for people (front, three_quarter, profile)
#   BANK/<id>/<name>.npz                arrays the generator keeps beside the slab (a flow's whole asset), key 'array'
#   BANK/<id>/meta.json                 id, seed, truncation, camera, network hash, slab grid; written last, so a
#                                       folder without it is unfinished and is redone on resume.

SLAB_FILE = 'sigma_slab.npy'
IMAGE_FILE = 'image.png'
META_FILE = 'meta.json'
BANK_FILE = 'bank.json'
ID_PATTERN = re.compile(r'[A-Za-z0-9_.-]+')


class BankError(ValueError):
    """A folder that is not a usable bank, or a sample it does not hold."""


def preview_file(view):
    return f'preview_{view}.png'


def is_finished(root, sample_id):
    """Does the bank folder hold a finished sample of this id (its meta.json, written last)?"""
    return os.path.isfile(os.path.join(root, sample_id, META_FILE))


def bank_holding(path):
    """The bank folder that `path` is or lies in (made or not): the nearest folder at or above it holding bank.json,
    or a sample folder (meta.json beside sigma_slab.npy) at or above it; None when it is in no bank."""
    folder = os.path.realpath(path)
    while True:
        if os.path.isfile(os.path.join(folder, BANK_FILE)):
            return folder
        if os.path.isfile(os.path.join(folder, META_FILE)) and os.path.exists(os.path.join(folder, SLAB_FILE)):
            return os.path.dirname(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


REDRAW = 'redraw the sample (delete its meta.json and resume)'


def load_npy(path, mmap_mode=None):
    """A sample's .npy file read without pickles (dnnlib.util.read_npy: a regular file, its header checked against
    its size before anything is allocated); BankError naming it and the fix otherwise."""
    try:
        return dnnlib.util.read_npy(path, error=BankError, mmap_mode=mmap_mode)
    except BankError as err:
        problem = str(err)
    except (OSError, ValueError) as err:
        problem = dnnlib.util.file_problem(path) or f'{path}: cannot be read ({err})'
    raise BankError(f'{problem}; {REDRAW}')


def read_json(path, fix):
    """The JSON object of a bank's meta.json or bank.json (dnnlib.util.read_json_object: UTF-8, JSON, an object, not
    deep nor huge); BankError of one line naming the file, what is wrong and `fix` otherwise."""
    try:
        return dnnlib.util.read_json_object(path, error=BankError)
    except BankError as err:
        problem = str(err)
    except OSError as err:
        problem = dnnlib.util.file_problem(path) or f'{path}: cannot be read ({err.strerror or err})'
    raise BankError(f'{problem}; {fix}')


def write_json(path, data):
    with dnnlib.util.atomic_write(path, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=2)
        f.write('\n')


class Bank:
    """Read access to a bank folder: finished sample ids (sorted), slabs, metadata and file paths."""

    def __init__(self, root):
        if not os.path.isdir(root):
            raise BankError(f'{root}: no such bank folder')
        self.root = root
        self.ids = sorted(name for name in os.listdir(root)
            if ID_PATTERN.fullmatch(name) and os.path.isfile(os.path.join(root, name, META_FILE)))
        if not self.ids:
            raise BankError(f'{root}: no finished samples (folders with {META_FILE})')
        self._index = {x: i for i, x in enumerate(self.ids)}

    @staticmethod
    def read_settings(root):
        """bank.json: what made the bank; BankError naming it and the key when it is not a JSON object of settings."""
        return read_json(os.path.join(root, BANK_FILE), 'restore it, or make the bank again in a new folder')

    def __len__(self):
        return len(self.ids)

    def __contains__(self, sample_id):
        return sample_id in self._index

    def path(self, sample_id, name=''):
        if sample_id not in self._index:
            raise BankError(f'{self.root}: no finished sample {sample_id!r}')
        return os.path.join(self.root, sample_id, name)

    def meta(self, sample_id):
        """A sample's meta.json, a JSON object (read_json); BankError naming the file otherwise."""
        return read_json(self.path(sample_id, META_FILE), REDRAW)

    def grid(self, sample_id):
        """The CubeGrid of a sample's slab, as its meta.json's "slab" describes it; BankError naming the file and the
        key when that is missing or no slab description (geometry.sigma.slab_problem)."""
        meta = self.meta(sample_id)
        problem = slab_problem(meta['slab']) if 'slab' in meta else 'has no "slab"'
        if problem is not None:
            raise BankError(f'{self.path(sample_id, META_FILE)}: {problem}; {REDRAW}')
        return grid_from_meta(meta['slab'])

    def slab(self, sample_id):
        """Raw sigma [X, Y, Z] as float32; BankError naming the file when it cannot be read or is not finite."""
        path = self.path(sample_id, SLAB_FILE)
        slab = load_npy(path).astype(np.float32)
        if not np.isfinite(slab).all():
            raise BankError(f'{path}: holds nan or inf; {REDRAW}')
        return slab

    def check_slabs(self, ids=None):
        """Before any work: every slab of `ids` (all by default) is a numpy file of the bank's grid shape, whole
        (its header read, its size checked, nothing loaded); BankError naming the first file that is not."""
        for sample_id in self.ids if ids is None else ids:
            path, shape = self.path(sample_id, SLAB_FILE), self.grid(sample_id).shape
            slab = load_npy(path, mmap_mode='r')
            if slab.shape != shape:
                raise BankError(f'{path}: shape {list(slab.shape)}, but meta.json says {list(shape)}; {REDRAW}')

    def array(self, sample_id, name):
        """An array the generator kept beside the slab (<name>.npz, e.g. 'asset'), read without pickles."""
        path = self.path(sample_id, f'{name}.npz')
        problem = dnnlib.util.file_problem(path)
        if problem is None:
            try:
                with np.load(path, allow_pickle=False) as data:
                    return data['array']
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
                problem = f'{path}: cannot be read ({err})'
        raise BankError(f'{problem}; {REDRAW}')

    def slabs(self, ids=None):
        """{id: raw float32 slab} for `ids` (all by default); every slab must have the same shape."""
        ids = self.ids if ids is None else list(ids)
        result, shape = {}, None
        for sample_id in ids:
            x = self.slab(sample_id)
            if shape is not None and x.shape != shape:
                raise BankError(f'{self.path(sample_id, SLAB_FILE)}: shape {x.shape} differs from {shape}')
            shape = x.shape
            result[sample_id] = x
        return result

#----------------------------------------------------------------------------
# The writer. Every sample is drawn through the generator interface (generators/), so a bank's slab and picture of
# an id are the ones the panel, evaluate and shape_report see for it.

SETTINGS_THAT_MUST_MATCH = ('network_sha256', 'generator', 'truncation_psi', 'truncation_cutoff', 'slab', 'preview_level',
    'preview_res', 'mesh_convention')
SETTINGS_DEFAULTS = dict(mesh_convention='ours')   # What a bank.json written before the setting existed meant.


def passes(keys, batch):
    """[(condition, seeds)] of keys [(seed, condition)] in order: runs of one condition, at most `batch` seeds each."""
    runs = [(condition, [seed for seed, _ in run]) for condition, run in itertools.groupby(keys, lambda k: k[1])]
    return [(condition, seeds[s : s + batch]) for condition, seeds in runs for s in range(0, len(seeds), batch)]


class BankWriter:
    """Writes samples of one generator into a bank folder; refuses a folder made by another generator or settings."""

    def __init__(self,
        root,                       # Bank folder (created).
        generator,                  # generators.base.Generator3D.
        resolution,                 # Cube resolution N whose face slab is stored (256: the published 128x141x129).
        dtype       = 'float16',    # Slab storage type: 'float16' or 'float32'.
        level       = 10.0,         # Raw sigma level drawn in the previews.
        preview_res = 192,          # Preview size in pixels.
        crop        = SlabCrop(),   # The slab inside the cube.
        convention  = 'ours',       # Mesh convention of the previews (geometry.convention): whose border they show.
    ):
        self.root, self.generator = root, generator
        self.grid = slab_grid(resolution, cube_length=generator.cube_length, crop=crop)
        self.dtype, self.level, self.preview_res = np.dtype(dtype), float(level), int(preview_res)
        slab = dict(slab_description(resolution, generator.cube_length, crop), dtype=self.dtype.name, order='xyz', flipped=False)
        self.convention = conventions.check(convention)
        self.settings = dict(**generator.identity(), **generator.settings(), slab=slab, preview_level=self.level,
            preview_res=self.preview_res, mesh_convention=self.convention)

    def open(self):
        """Create the folder and bank.json, or check that an existing bank.json matches these settings."""
        path = os.path.join(self.root, BANK_FILE)
        if os.path.isfile(path):                    # Kept as it is: it says what made the bank.
            old = Bank.read_settings(self.root)
            changed = [k for k in SETTINGS_THAT_MUST_MATCH if old.get(k, SETTINGS_DEFAULTS.get(k)) != self.settings.get(k)]
            if changed:
                raise BankError(f'{self.root} was made with other {", ".join(changed)}; use a new --outdir')
            return
        with dnnlib.util.writing(self.root):
            os.makedirs(self.root, exist_ok=True)
        write_json(path, self.settings)

    def done(self, seed, condition=None):
        return is_finished(self.root, self.generator.sample_id(seed, condition))

    def write_pass(self, seeds, condition=None):
        """Write the samples of seeds (one condition, at most a flow generator's draw_batch), a flow drawing them first
        in one pass (kept for the writes); yields each seed once its files are written."""
        if registry.has(self.generator, 'stages'):
            self.generator.samples(seeds, condition)
        for seed in seeds:
            self.write(seed, condition)
            yield seed

    def write(self, seed, condition=None):
        """Every file of one sample; meta.json last, atomically, so an interrupted sample is redone on resume."""
        g = self.generator
        meta = g.sample_meta(seed, condition)
        clash = sorted(set(meta) & set(self.settings))
        if clash:
            raise BankError(f'{type(g).__name__}: sample_meta and the bank settings both name {", ".join(clash)}')
        picture = g.picture(seed, condition)
        sigma = g.field([seed], condition).sample_grid(self.grid)[0].cpu().numpy()
        stored = sigma.astype(self.dtype)
        if not np.isfinite(stored).all():
            hint = ' (finite before float16 storage: use --dtype float32)' if np.isfinite(sigma).all() else ''
            raise BankError(f'{g.sample_id(seed, condition)}: the generator\'s slab holds nan or inf{hint}; nothing written')
        folder = os.path.join(self.root, g.sample_id(seed, condition))
        try:
            self._write_files(folder, g, seed, condition, meta, picture, sigma, stored)
        except BaseException:                   # A full disk, say: the unfinished sample goes (a rerun redoes it).
            if not os.path.isfile(os.path.join(folder, META_FILE)):
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def _write_files(self, folder, g, seed, condition, meta, picture, sigma, stored):
        with dnnlib.util.writing(folder):
            os.makedirs(folder, exist_ok=True)
        dnnlib.util.remove_stale_temporaries(folder)                    # Left by a sample killed mid-write.
        with dnnlib.util.atomic_write(os.path.join(folder, SLAB_FILE), 'wb') as f:
            np.save(f, stored)
        preview.save_picture(picture, os.path.join(folder, IMAGE_FILE))
        for name, array in g.sample_arrays(seed, condition).items():
            with dnnlib.util.atomic_write(os.path.join(folder, f'{name}.npz'), 'wb') as f:
                np.savez_compressed(f, array=array)
        shown = conventions.bordered(sigma, self.grid, self.convention)
        for view, shaded in preview.render_views(shown, self.grid, level=self.level, resolution=self.preview_res).items():
            preview.save_picture(shaded, os.path.join(folder, preview_file(view)))
        write_json(os.path.join(folder, META_FILE), {**meta, **self.settings})

#----------------------------------------------------------------------------
