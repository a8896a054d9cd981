"""Sample banks: one folder per sample id holding its raw sigma slab, an RGB render, geometry previews and meta.json."""

import json
import os
import re

import numpy as np

import dnnlib
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_grid

#----------------------------------------------------------------------------
# Layout (README.md, "Sample banks", documents it for other people's scripts):
#   BANK/bank.json                      what made the bank (network, hash, grid, truncation, camera)
#   BANK/<id>/sigma_slab.npy            raw sigma, (x, y, z) order, float16 or float32, not normalised, not flipped
#   BANK/<id>/image.png                 RGB render from the conditioning camera
#   BANK/<id>/preview_<view>.png        shaded level surface of the slab for people (front, three_quarter, profile)
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


def grid_from_meta(slab):
    """The CubeGrid of a slab described in meta.json's "slab" entry."""
    return slab_grid(slab['resolution'], cube_length=slab['cube_length'], crop=SlabCrop(**slab['crop']))


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
        """bank.json: what made the bank."""
        with open(os.path.join(root, BANK_FILE), encoding='utf-8') as f:
            return json.load(f)

    def __len__(self):
        return len(self.ids)

    def __contains__(self, sample_id):
        return sample_id in self._index

    def path(self, sample_id, name=''):
        if sample_id not in self._index:
            raise BankError(f'{self.root}: no finished sample {sample_id!r}')
        return os.path.join(self.root, sample_id, name)

    def meta(self, sample_id):
        with open(self.path(sample_id, META_FILE), encoding='utf-8') as f:
            return json.load(f)

    def grid(self, sample_id):
        return grid_from_meta(self.meta(sample_id)['slab'])

    def slab(self, sample_id):
        """Raw sigma [X, Y, Z] as float32."""
        return np.load(self.path(sample_id, SLAB_FILE)).astype(np.float32)

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
