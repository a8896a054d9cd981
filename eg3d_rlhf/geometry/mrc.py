"""Sigma volumes as MRC maps (mrcfile) for ChimeraX, with voxel size and origin; MRC files of others read, checked."""

import dataclasses
import os

import numpy as np
from mrcfile.mrcinterpreter import MrcInterpreter

import dnnlib
from eg3d_rlhf.geometry import convention as conventions

#----------------------------------------------------------------------------
# The map holds what the convention meshes (its -1000 border included), so ChimeraX's surface at level 10 is the
# .ply beside it; the raw field stays in the .npy. MRC axes are X = columns (the array's last axis), Y = rows,
# Z = sections (its first).
#
#   published  the x-flipped cube [X', Y, Z] as the paper's gen_samples writes it, standard axis order: ChimeraX then
#              shows it in the published mesh's frame (columns = z); voxel 1/N, origin -0.5 (plus a box's offset).
#   ours       the (x, y, z) array as sampled, its header mapping sections to X and columns to Z (maps 1, mapr 2,
#              mapc 3) so it stands in world orientation; voxel L/(N-1), origin the world point of voxel (0, 0, 0).

@dataclasses.dataclass
class MrcMap:
    data:       np.ndarray      # float32 [sections, rows, columns].
    voxel_size: tuple           # Along X, Y, Z (world units).
    origin:     tuple           # X, Y, Z of the first voxel.
    axes:       tuple           # (mapc, mapr, maps): the axis (1 = X, 2 = Y, 3 = Z) of columns, rows and sections.


def mrc_map(volume, grid, convention='ours'):
    """The MrcMap of raw sigma `volume` [X, Y, Z] on `grid` ((x, y, z) order, not flipped) in a convention."""
    if conventions.check(convention) == 'published':
        data, offset = conventions.published_array(volume, grid)
        n = grid.resolution
        origin = tuple(-0.5 + o / n for o in offset[::-1])         # Columns (z) are X.
        return MrcMap(data, (1.0 / n,) * 3, origin, (1, 2, 3))
    data = conventions.bordered(volume, grid, convention)
    origin = tuple(float(v) for v in grid.index_to_world(np.zeros(3)))
    return MrcMap(data, (float(grid.voxel_size),) * 3, origin, (3, 2, 1))


def write_mrc(path, volume, grid, convention='ours'):
    """Write the MrcMap of a volume to `path` (mode 2, float32) atomically: a crash leaves any old file whole."""
    m = mrc_map(volume, grid, convention)
    with dnnlib.util.atomic_write(path, 'wb') as f:
        out = MrcInterpreter()                                  # mrcfile's documented way to write to a stream.
        out._create_default_attributes()                        # pylint: disable=protected-access
        out._iostream = f                                       # pylint: disable=protected-access
        out.set_data(np.ascontiguousarray(m.data, dtype=np.float32))
        h = out.header
        h.mapc, h.mapr, h.maps = m.axes
        size = {c: s for c, s in zip(m.axes, m.data.shape[::-1])}   # Voxels along X, Y and Z.
        h.mx, h.my, h.mz = size[1], size[2], size[3]
        out.voxel_size = m.voxel_size
        h.origin.x, h.origin.y, h.origin.z = m.origin
        out.flush()
    return m

#----------------------------------------------------------------------------
# Reading an MRC file someone gives (another generator's cube): a regular file only, opened once; its header's sizes
# checked against the file's size before anything is allocated (a damaged header may claim terabytes).

HEADER_BYTES = 1024


def read_mrc(path, error=ValueError):
    """The data array of the MRC file at `path` as stored (mode 2 float32, or another mode's dtype); error(one line
    naming the file) when it is no regular file, its header is damaged, or its data block is not the size the header
    says."""
    try:
        with dnnlib.util.open_regular(path, 'rb', error=error) as f:
            size = os.fstat(f.fileno()).st_size
            m = MrcInterpreter()
            m._read_only = True                                 # pylint: disable=protected-access
            m._iostream = f                                     # pylint: disable=protected-access
            m._read_header()                                    # pylint: disable=protected-access
            extended = int(m.header.nsymbt)
            if size < HEADER_BYTES or not 0 <= extended <= size - HEADER_BYTES:
                raise error(f'{path}: its header says {extended} bytes of extended header, but the file holds '
                    f'{size} bytes; the file is damaged or was cut short')
            m._read_extended_header()                           # pylint: disable=protected-access
            left = size - HEADER_BYTES - extended
            m._read_data(max_bytes=max(left, 1))                # pylint: disable=protected-access
            data = np.asarray(m.data)
            if data.nbytes != left:
                raise error(f'{path}: its header says {list(data.shape)} {data.dtype.name} ({data.nbytes} bytes), but '
                    f'the file holds {left} bytes of data; the file is damaged')
            return data
    except (OSError, ValueError, TypeError, EOFError, OverflowError) as err:
        if isinstance(err, error):
            raise
        raise error(f'{path}: cannot be read as an MRC map ({" ".join(str(err).split())[:200]})') from None

#----------------------------------------------------------------------------
