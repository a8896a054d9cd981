"""The panel's evidence about a run's starting generator, kept in the cache dir: a run that starts where another did reads it."""

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------
# Every reward run scores its starting generator first: the panel's rewards at kimg 0, the preview slabs and the
# collateral seeds' slabs and measures (about 20 s of the demo on 2 cores). Runs that start from the same
# generator with the same reward and panel settings compute the same numbers, so the first run keeps them here, as
# EG3D's metrics keep a dataset's Inception statistics, and later runs read them back.
#
# An entry's key is a sha256 of everything the numbers depend on: every tensor of the generator (names, shapes,
# dtypes, bytes), the reward checkpoint's sha256, the panel's settings, the versions of torch, numpy and scipy, the
# number of torch threads (sums are ordered by it) and every source file of eg3d_rlhf, training and torch_utils (any
# change of code makes new keys). An entry is a folder, written whole under a temporary name and then renamed into
# place. An entry that cannot be read, or does not hold what its key says, is ignored and written again; a cache
# that cannot be written costs only the time. The entries live in $EG3D_RLHF_PANEL_CACHE when it is set (the test
# suite gives them a folder of their own), else in the cache dir's panel-start/ (dnnlib.util.make_cache_dir_path).

FOLDER = 'panel-start'       # In the cache dir, unless $EG3D_RLHF_PANEL_CACHE names a folder.
SOURCE_ROOTS = ('eg3d_rlhf', 'training', 'torch_utils')
SOURCE_SUFFIXES = ('.py', '.h', '.cpp', '.cu', '.html', '.js')
_code_digest = None


def code_digest():
    """sha256 of every source file under SOURCE_ROOTS (relative path and bytes), computed once per process."""
    global _code_digest # pylint: disable=global-statement
    if _code_digest is None:
        import importlib # pylint: disable=import-outside-toplevel
        h = hashlib.sha256()
        for root in SOURCE_ROOTS:
            top = os.path.dirname(importlib.import_module(root).__file__)
            for folder, dirs, files in sorted(os.walk(top)):
                dirs[:] = sorted(d for d in dirs if d != '__pycache__')
                for name in sorted(f for f in files if f.endswith(SOURCE_SUFFIXES)):
                    path = os.path.join(folder, name)
                    h.update(os.path.relpath(path, os.path.dirname(top)).encode() + b'\0')
                    with open(path, 'rb') as f:
                        h.update(hashlib.sha256(f.read()).digest())
        _code_digest = h.hexdigest()
    return _code_digest


def state_digest(module):
    """sha256 of a module's every parameter and buffer: names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f'{name}|{tuple(tensor.shape)}|{tensor.dtype}|'.encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b'')
    return h.hexdigest()


def entry_key(G, **settings):
    """The cache key (64 hex digits) of a starting generator G under the panel's settings (JSON-able values)."""
    import scipy # pylint: disable=import-outside-toplevel
    described = dict(settings, generator=state_digest(G), code=code_digest(), threads=torch.get_num_threads(),
        versions=[torch.__version__, np.__version__, scipy.__version__])
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()

#----------------------------------------------------------------------------

def entry_folder(key):
    """Where the entry `key` is (it may not exist)."""
    root = os.environ.get('EG3D_RLHF_PANEL_CACHE') or dnnlib.util.make_cache_dir_path(FOLDER)
    return os.path.join(root, key)


def load(key, shapes):
    """The entry `key` as {name: array} and its measures (a dict or None), or None when there is none or it does not
    hold arrays of the given shapes {name: shape} (a name whose shape is None must be absent)."""
    folder = entry_folder(key)
    try:
        arrays = {}
        for name, shape in shapes.items():
            path = os.path.join(folder, f'{name}.npy')
            if shape is None:
                if os.path.exists(path):
                    return None
                continue
            with dnnlib.util.open_regular(path, 'rb') as f:
                arrays[name] = np.load(f, allow_pickle=False)
            if arrays[name].shape != tuple(shape) or not np.isfinite(arrays[name]).all():
                return None
        with dnnlib.util.open_regular(os.path.join(folder, 'measures.json'), 'rb') as f:
            measures = dnnlib.util.decode_json(f.read(), 'measures.json:', error=ValueError)
    except (OSError, ValueError):
        return None
    return arrays, measures


def save(key, arrays, measures):
    """Write the entry `key` (arrays {name: array}, measures: a JSON-able dict or None); False when it cannot be."""
    folder = entry_folder(key)
    try:
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=f'.{key[:8]}-')
        try:
            for name, array in arrays.items():
                np.save(os.path.join(tmp, f'{name}.npy'), np.ascontiguousarray(array), allow_pickle=False)
            with open(os.path.join(tmp, 'measures.json'), 'w', encoding='utf-8') as f:
                json.dump(measures, f)
            shutil.rmtree(folder, ignore_errors=True)                   # An entry that could not be read.
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        return False
    return True

#----------------------------------------------------------------------------
