"""Iso-surfaces of sampled sigma volumes (PyMCubes marching cubes) in world coordinates, written as PLY or OBJ."""

import hashlib
import os

import numpy as np

import dnnlib

#----------------------------------------------------------------------------

_marching_cubes = None


def marching_cubes():
    """PyMCubes' compiled marching_cubes(volume, level), loaded on first use from its extension module alone: the
    package's __init__ also imports its smoothing helpers and with them scipy.ndimage and scipy.sparse (0.3 s of every
    process that meshes, e.g. a third of `extract_sigma`'s own time). Where that cannot be done, `import mcubes`."""
    global _marching_cubes # pylint: disable=global-statement
    if _marching_cubes is None:
        import importlib.machinery # pylint: disable=import-outside-toplevel
        import importlib.util # pylint: disable=import-outside-toplevel
        try:
            folder = importlib.util.find_spec('mcubes').submodule_search_locations[0]
            path = next(p for p in (os.path.join(folder, '_mcubes' + suffix) for suffix in
                importlib.machinery.EXTENSION_SUFFIXES) if os.path.isfile(p))
            loader = importlib.machinery.ExtensionFileLoader('mcubes._mcubes', path)
            module = importlib.util.module_from_spec(importlib.util.spec_from_loader('mcubes._mcubes', loader))
            loader.exec_module(module)
            _marching_cubes = module.marching_cubes
        except (AttributeError, ImportError, OSError, StopIteration, TypeError):
            import mcubes # pylint: disable=import-outside-toplevel
            _marching_cubes = mcubes.marching_cubes
    return _marching_cubes


# The last mesh and the last edge list are kept, keyed by a digest of their input's bytes: the collateral measures
# read one slab's closed mesh three times in a row (the smooth and closed tastes and the mesh statistics), about a
# quarter of their time. Callers get copies, so none can change what the next one reads. Big inputs (a 512^3 cube)
# are neither hashed nor kept.
MEMO_ELEMENTS = 2**22           # Volumes (voxels) and face lists (indices) up to this size are remembered.
_last_mesh = _last_edges = (None, None)


def content_key(array, *extra):
    """A key of an array's dtype, shape and bytes (blake2b) and of `extra`."""
    array = np.ascontiguousarray(array)
    return (array.dtype.str, array.shape, hashlib.blake2b(array.data, digest_size=16).digest(), *extra)


def index_mesh(volume, level=10.0):
    """Triangle mesh of {volume = level} in index units of the array's own axes: (vertices [V, 3] float64, faces
    [F, 3] int64)."""
    global _last_mesh # pylint: disable=global-statement
    # Keyed by the caller's bytes (float32 slabs: half of their float64 copy to hash); a float64 volume whose values
    # are all float32 ones (mesh_statistics' double copy of a float32 slab) by those, so it finds their mesh.
    volume = np.asarray(volume)
    if volume.dtype == np.float64 and volume.size <= MEMO_ELEMENTS:
        narrow = volume.astype(np.float32)
        volume = narrow if np.array_equal(narrow, volume) else volume
    key = content_key(volume, float(level)) if volume.size <= MEMO_ELEMENTS else None
    volume = np.ascontiguousarray(volume, dtype=np.float64)
    if key is None or _last_mesh[0] != key:
        verts, faces = marching_cubes()(volume, float(level))
        made = verts.reshape(-1, 3), np.asarray(faces, dtype=np.int64).reshape(-1, 3)
        if key is None:
            return made
        _last_mesh = key, made
    return tuple(a.copy() for a in _last_mesh[1])

def extract_mesh(volume, grid, level=10.0):
    """Triangle mesh of {sigma = level} for a volume sampled on `grid` (eg3d_rlhf.geometry.sigma.CubeGrid).

    volume: [X, Y, Z] raw sigma in (x, y, z) order, exactly grid.shape (not flipped).
    Returns (vertices [V, 3] float32 in world units, faces [F, 3] int64).
    """
    assert np.shape(volume) == tuple(grid.shape), (np.shape(volume), grid.shape)
    verts, faces = index_mesh(volume, level)
    return grid.index_to_world(verts).astype(np.float32), faces

def unique_edges(faces):
    """Every edge [E, 2] of a triangle mesh once, as (smaller, larger) vertex index."""
    global _last_edges # pylint: disable=global-statement
    key = content_key(faces) if np.size(faces) <= MEMO_ELEMENTS else None
    if key is None:
        return edges_of(faces)
    if _last_edges[0] != key:
        _last_edges = key, edges_of(faces)
    return _last_edges[1].copy()

def edges_of(faces):
    """unique_edges() without the memo."""
    keys, base = edge_keys(faces)
    keys = sorted_unique(keys)
    return np.stack([keys // base, keys % base], axis=1)

def edge_keys(faces):
    """(one int64 per edge of every triangle [3F], smaller * base + larger vertex index; base)."""
    pairs = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1).astype(np.int64)
    base = int(pairs.max()) + 1 if len(pairs) else 1
    return pairs[:, 0] * base + pairs[:, 1], base

def sorted_unique(keys, return_counts=False):
    """np.unique of a 1-D integer array by one sort (numpy 2.4's hashing np.unique took 27 ms for 180k edge keys
    where this takes 2 ms); with return_counts also how often each occurs."""
    keys = np.sort(keys)
    first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.zeros([0], dtype=np.int64)
    if not return_counts:
        return keys[first]
    return keys[first], np.diff(np.append(first, len(keys)))

def face_areas(verts, faces):
    """Area [F] of every triangle."""
    a, b, c = (verts[faces[:, i]].astype(np.float64) for i in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)

def vertex_components(n, edges):
    """(count, labels [n]) of the connected components of n vertices joined by edges [E, 2] (a vertex on no edge is
    a component of its own)."""
    import scipy.sparse.csgraph # pylint: disable=import-outside-toplevel  # 0.26 s to import; extracting a mesh needs none.
    adjacency = scipy.sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return scipy.sparse.csgraph.connected_components(adjacency, directed=False)

def component_fractions(verts, faces):
    """Share of the total surface area held by each connected component (triangles sharing a vertex), largest first."""
    if len(faces) == 0:
        return np.zeros([0])
    _count, labels = vertex_components(len(verts), np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]]))
    area = np.bincount(labels[faces[:, 0]], weights=face_areas(verts, faces))
    area = area[area > 0]
    return np.sort(area)[::-1] / area.sum()

def handle_count(faces, edges, pieces):
    """Handles (tunnels) of a closed triangle mesh of `pieces` pieces, from its Euler characteristic V - E + F over the
    vertices on some face: 2 per sphere-like piece, 2 less per handle (0 when the count would be negative)."""
    used = int(np.count_nonzero(np.bincount(np.ravel(faces))))
    euler = used - len(edges) + len(faces)
    return max(0.0, (2 * pieces - euler) / 2)

def is_closed(faces):
    """Is every edge shared by exactly two triangles (a watertight surface without boundary)?"""
    if len(faces) == 0:
        return False
    _unique, counts = sorted_unique(edge_keys(faces)[0], return_counts=True)
    return bool(np.all(counts == 2))

#----------------------------------------------------------------------------

def write_ply(path, verts, faces, binary=True, colors=None):
    """PLY with float32 x/y/z vertices (and uint8 red/green/blue ones when colors [V, 3] is given) and uint8-count
    int32-index triangle faces, written atomically."""
    verts = np.asarray(verts, dtype=np.float32).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    fmt = 'binary_little_endian' if binary else 'ascii'
    colour_props = '' if colors is None else 'property uchar red\nproperty uchar green\nproperty uchar blue\n'
    header = (f'ply\nformat {fmt} 1.0\ncomment written by eg3d_rlhf.geometry.mesh\n'
        f'element vertex {len(verts)}\nproperty float x\nproperty float y\nproperty float z\n{colour_props}'
        f'element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n')
    vertex = np.zeros(len(verts), dtype=[('xyz', '<f4', (3,))] + ([] if colors is None else [('rgb', 'u1', (3,))]))
    vertex['xyz'] = verts
    if colors is not None:
        vertex['rgb'] = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    with dnnlib.util.atomic_write(path, 'wb') as f:
        f.write(header.encode('ascii'))
        if binary:
            f.write(vertex.tobytes())
            rows = np.zeros(len(faces), dtype=[('n', 'u1'), ('idx', '<i4', (3,))])
            rows['n'] = 3
            rows['idx'] = faces
            f.write(rows.tobytes())
        else:
            if colors is None:
                np.savetxt(f, verts, fmt='%.7g')
            else:
                np.savetxt(f, np.concatenate([verts, vertex['rgb']], axis=1), fmt=['%.7g'] * 3 + ['%d'] * 3)
            np.savetxt(f, np.concatenate([np.full([len(faces), 1], 3), faces], axis=1), fmt='%d')

def write_obj(path, verts, faces):
    """Wavefront OBJ (1-based face indices), written atomically."""
    verts = np.asarray(verts, dtype=np.float32).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    with dnnlib.util.atomic_write(path, 'w') as f:
        f.write('# written by eg3d_rlhf.geometry.mesh\n')
        np.savetxt(f, verts, fmt='v %.7g %.7g %.7g')
        np.savetxt(f, faces + 1, fmt='f %d %d %d')

def write_mesh(path, verts, faces, binary=True):
    """Write by file extension: .ply (binary or ascii) or .obj."""
    ext = os.path.splitext(path)[1].lower()
    if ext == '.ply':
        write_ply(path, verts, faces, binary=binary)
    elif ext == '.obj':
        write_obj(path, verts, faces)
    else:
        raise ValueError(f'unknown mesh format: {path} (use .ply or .obj)')

#----------------------------------------------------------------------------
