"""Compact mesh files for the labeling page's 3D view: a bank sample's preview surface, quantised and delta-coded."""

import collections
import concurrent.futures
import gzip
import math
import os
import struct
import threading

import numpy as np

from eg3d_rlhf.data.bank import REDRAW, SLAB_FILE, BankError, load_npy
from eg3d_rlhf.geometry import convention as conventions
from eg3d_rlhf.geometry import mesh
from eg3d_rlhf.geometry.sigma import closed_slab, grid_from_meta

#----------------------------------------------------------------------------
# The file (little endian; mesh_viewer.js reads the same layout):
#   header  40 bytes  magic b'E3DM', uint32 version 1, uint32 vertices V, uint32 triangles F,
#                     float32 lo[3], float32 hi[3]: the world box the positions are quantised over (the slab's box)
#   planes  6V bytes  uint16 x[V], y[V], z[V]: q = round((p - lo) / (hi - lo) * 65535), each plane delta-coded
#                     (stored d[i] = q[i] - q[i-1] mod 2^16, q[-1] = 0): marching cubes' vertices come in grid order,
#                     so deltas are small and gzip halves them
#   padding 0-2 bytes to a multiple of 4
#   indices 3F x uint16 when V <= 65536, else uint32: vertex indices of the triangles, flat, delta-coded the same way
# The server sends it gzip-compressed (Content-Encoding: gzip): 64x71x65 slabs of the bundled generator give
# about 310 KB raw, 113 KB on the wire.

MAGIC = b'E3DM'
VERSION = 1
HEADER = struct.Struct('<4sIII3f3f')
QUANT = 65535
SMALL_INDEX = 65536             # Up to this many vertices the indices are uint16.
LEVEL = 10.0                    # Level of banks whose meta.json predates "preview_level".


class MeshFileError(ValueError):
    """Bytes that are not a mesh file of this format."""


def _delta(values, dtype):
    """Rows of values (non-negative ints), each delta-coded on its own modulo the dtype's range."""
    v = np.asarray(values, dtype=np.int64)
    return np.diff(v, axis=-1, prepend=0).astype(dtype)


def _undelta(deltas):
    """The inverse of _delta: running sums along the rows modulo the dtype's range."""
    return np.cumsum(deltas, axis=-1, dtype=deltas.dtype)


def _padding(vertices):
    return -6 * vertices % 4


def encode(verts, faces, lo, hi):
    """The file's bytes (uncompressed) of a mesh (verts [V, 3] inside the box lo..hi, faces [F, 3] indices < V)."""
    verts = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    lo, hi = np.asarray(lo, dtype=np.float32).ravel(), np.asarray(hi, dtype=np.float32).ravel()
    if lo.shape != (3,) or hi.shape != (3,) or not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi >= lo).all()):
        raise ValueError(f'the box must be finite with lo <= hi, got {lo} .. {hi}')
    if not np.isfinite(verts).all():
        raise ValueError('vertices hold nan or inf')
    if len(faces) and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError('a triangle names a vertex that does not exist')
    span = np.where(hi > lo, hi - lo, 1).astype(np.float64)
    q = np.rint((verts - lo) / span * QUANT).clip(0, QUANT).astype(np.int64)
    index = '<u2' if len(verts) <= SMALL_INDEX else '<u4'
    return b''.join([HEADER.pack(MAGIC, VERSION, len(verts), len(faces), *lo, *hi),
        _delta(q.T, '<u2').tobytes(), bytes(_padding(len(verts))), _delta(faces.ravel(), index).tobytes()])


def decode(data, name='mesh file'):
    """(verts [V, 3] float32, faces [F, 3] int64, lo, hi) of a file's bytes (uncompressed); MeshFileError naming
    `name` for anything else (wrong magic or version, a size that does not add up, an index past the vertices)."""
    if len(data) < HEADER.size:
        raise MeshFileError(f'{name}: {len(data)} bytes, shorter than the {HEADER.size}-byte header')
    magic, version, nv, nf, *box = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise MeshFileError(f'{name}: not a version-{VERSION} mesh file (magic {magic!r}, version {version})')
    lo, hi = np.asarray(box[:3], dtype=np.float32), np.asarray(box[3:], dtype=np.float32)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi >= lo).all()):
        raise MeshFileError(f'{name}: its box is not finite with lo <= hi')
    index = np.dtype('<u2' if nv <= SMALL_INDEX else '<u4')
    start = HEADER.size + 6 * nv + _padding(nv)
    if len(data) != start + 3 * nf * index.itemsize:
        raise MeshFileError(f'{name}: {len(data)} bytes, but its header says {nv} vertices and {nf} triangles '
            f'({start + 3 * nf * index.itemsize} bytes)')
    q = _undelta(np.frombuffer(data, dtype='<u2', count=3 * nv, offset=HEADER.size).reshape(3, nv)).T
    faces = _undelta(np.frombuffer(data, dtype=index, count=3 * nf, offset=start)).astype(np.int64).reshape(-1, 3)
    if len(faces) and faces.max() >= nv:
        raise MeshFileError(f'{name}: a triangle names vertex {faces.max()}, but there are {nv}')
    verts = lo + q.astype(np.float32) / QUANT * np.where(hi > lo, hi - lo, 1).astype(np.float32)
    return verts.astype(np.float32), faces, lo, hi


def max_error(lo, hi):
    """The largest distance, per axis, between a vertex and its quantised position in a file of box lo..hi."""
    return (np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)) / QUANT / 2

#----------------------------------------------------------------------------
# A bank sample's file: the level-`preview_level` surface of its slab as the bank's previews draw it (its
# mesh_convention's border, then closed_slab so a head the slab cuts closes), in world coordinates.

def _level(meta, path):
    level = meta.get('preview_level', LEVEL)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not math.isfinite(level):
        raise BankError(f'{path}: preview_level must be a finite number, got {level!r}; redraw the sample')
    return float(level)


def sample_mesh(bank, sample_id):
    """(verts, faces, lo, hi) of a bank sample's preview surface; lo..hi is its slab's world box. BankError naming
    the file that is missing or does not fit."""
    path = bank.path(sample_id, 'meta.json')
    try:
        meta = bank.meta(sample_id)
    except (OSError, ValueError) as err:
        raise BankError(f'{path}: cannot be read ({err}); redraw the sample') from None
    try:
        grid = grid_from_meta(meta['slab'])
        convention = conventions.check(meta.get('mesh_convention', 'ours'))
    except (KeyError, TypeError, ValueError, AttributeError, AssertionError) as err:
        raise BankError(f'{path}: no usable slab description ({err!r}); redraw the sample') from None
    check_slab(bank.path(sample_id, SLAB_FILE), grid.shape)
    slab = bank.slab(sample_id)
    if slab.shape != tuple(grid.shape):                 # Replaced since it was checked.
        raise BankError(f'{bank.path(sample_id, SLAB_FILE)}: shape {list(slab.shape)}, but meta.json says '
            f'{list(grid.shape)}; redraw the sample')
    level = _level(meta, path)
    verts, faces = mesh.extract_mesh(closed_slab(conventions.bordered(slab, grid, convention), level), grid, level)
    lo, hi = grid.index_to_world(np.zeros(3)), grid.index_to_world(np.asarray(grid.shape) - 1)
    return verts, faces, lo, hi


def check_slab(path, shape):
    """Before a slab is read: its header (load_npy: its size checked against the header) says floats of `shape`, the
    shape meta.json gives, so no more bytes than that are ever read; BankError naming it otherwise."""
    head = load_npy(path, mmap_mode='r')                # The header and the file's size only: no data is read.
    if head.shape != tuple(shape) or head.dtype.kind != 'f':
        raise BankError(f'{path}: {list(head.shape)} {head.dtype.name}, but meta.json says {list(shape)} floats; {REDRAW}')


class MeshCache:
    """Gzip-compressed files of bank samples, made on demand and kept for the `size` samples used last (memory
    only: the banks' folders are never written). Safe to use from several threads: a sample is made once however
    many ask for it at a time (the others wait for that build's file, or its error)."""

    def __init__(self, size=32):
        self.size = int(size)
        self.files = collections.OrderedDict()          # (bank folder, id) -> bytes, the last used at the end.
        self.building = {}                              # (bank folder, id) -> Future of the build in flight.
        self.lock = threading.Lock()

    def get(self, bank, sample_id):
        """The gzip bytes of a sample's file; BankError when the sample is not in the bank or cannot be meshed."""
        key = (os.path.realpath(bank.root), sample_id)
        with self.lock:
            if key in self.files:
                self.files.move_to_end(key)
                return self.files[key]
            future = self.building.get(key)
            mine = future is None
            if mine:
                future = self.building[key] = concurrent.futures.Future()
        if not mine:
            return future.result()
        try:
            data = gzip.compress(encode(*sample_mesh(bank, sample_id)), compresslevel=6, mtime=0)
        except BaseException as err:
            with self.lock:
                del self.building[key]
            future.set_exception(err)
            raise
        with self.lock:
            del self.building[key]
            self.files[key] = data
            while len(self.files) > self.size:
                self.files.popitem(last=False)
        future.set_result(data)
        return data

#----------------------------------------------------------------------------
