"""Checkpoint dicts as safetensors files: tensors by name, everything else as JSON metadata, read as untrusted data."""

import json
import math
import os
import struct

import safetensors.torch
import torch

from dnnlib.util import atomic_write, decode_json, open_regular

#----------------------------------------------------------------------------
# A checkpoint is a plain dict (what torch.save(weights_only) would hold: dicts, lists, strings, numbers, None and
# tensors). As a safetensors file, every tensor in it is a tensor of the file named by its place in the dict
# ('state_dict.conv.weight', 'training.optimizer.state.0.exp_avg'), and every top-level entry is one metadata string:
# its JSON, each tensor replaced by {"__tensor__": name} and each dict with keys other than strings by
# {"__items__": [[key, value], ...]}. The entry 'format' is stored as plain text under MARKER, and metadata 'format' is
# 'pt' (safetensors' convention: the tensors are PyTorch's). Reading checks the header (names, dtypes, shapes and
# offsets that tile the data exactly), every metadata entry's JSON, and that each tensor is named exactly once.

EXTENSION   = '.safetensors'
MARKER      = 'eg3d_rlhf.format'            # Metadata key of the checkpoint's format ('eg3d_rlhf.reward/2', ...).
TENSOR      = '__tensor__'                  # {"__tensor__": name}: the tensor of the file called name.
ITEMS       = '__items__'                   # {"__items__": [[key, value], ...]}: a dict with non-string keys.
MAX_HEADER  = 64 << 20                      # Longest header read (bytes); ours are a few kB.
MAX_DEPTH   = 64                            # Deepest nesting of the header or a metadata entry (ours: 7).
DTYPES      = {'BOOL': 1, 'U8': 1, 'I8': 1, 'I16': 2, 'F16': 2, 'BF16': 2, 'I32': 4, 'F32': 4, 'I64': 8, 'F64': 8}


def is_safetensors_path(path):
    """Does the path name a safetensors file (by its extension: how savers choose the format)?"""
    return str(path).lower().endswith(EXTENSION)


def is_safetensors(path):
    """Does the file start like a safetensors file (a header length that fits the file, then '{')? Reads 9 bytes;
    read_header and load check the rest."""
    with open_regular(path, 'rb') as f:
        head = f.read(9)
        size = f.seek(0, os.SEEK_END)
    return is_safetensors_blob(head, size)


def is_safetensors_blob(blob, size=None):
    """is_safetensors of a file's bytes (or its first 9 bytes and its size)."""
    size = len(blob) if size is None else size
    return len(blob) >= 9 and blob[8:9] == b'{' and struct.unpack('<Q', blob[:8])[0] <= size - 8

#----------------------------------------------------------------------------

def _encode(value, name, tensors):
    """The JSON-able form of `value` at place `name`, its tensors moved into `tensors`."""
    if torch.is_tensor(value):
        if name in tensors:
            raise ValueError(f'two places of the checkpoint are both named {name!r}')
        tensors[name] = value.detach().cpu().contiguous().clone()
        return {TENSOR: name}
    if isinstance(value, dict):
        if any(k in (TENSOR, ITEMS) for k in value):
            raise ValueError(f'{name}: the keys {TENSOR} and {ITEMS} are reserved')
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, f'{name}.{k}', tensors) for k, v in value.items()}
        if not all(k is None or isinstance(k, (str, int, float)) for k in value):
            raise ValueError(f'{name}: dict keys must be strings, numbers or None')
        return {ITEMS: [[k, _encode(v, f'{name}.{k}', tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f'{name}.{i}', tensors) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f'{name} is {value}; a checkpoint holds finite numbers only')
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise ValueError(f'{name}: a checkpoint holds no {type(value).__name__}')


def save(path, data):
    """Write the checkpoint dict `data` (with a 'format' entry) as a safetensors file, atomically."""
    tensors, metadata = {}, {'format': 'pt', MARKER: str(data['format'])}
    for key, value in data.items():
        if key != 'format':
            metadata[key] = json.dumps(_encode(value, key, tensors), allow_nan=False, separators=(',', ':'))
    blob = safetensors.torch.save(tensors, metadata=metadata)
    if blob[0] == 0x80:         # A header length starting like a pickle (0x80, protocol) would look like an EG3D network
        metadata['padding'] = ' ' * 8                                   # pickle to generators/registry.py: shift it.
        blob = safetensors.torch.save(tensors, metadata=metadata)
    with atomic_write(path, 'wb') as f:
        f.write(blob)

#----------------------------------------------------------------------------

def _unique_object(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f'key {next(k for k in keys if keys.count(k) > 1)!r} appears twice')
    return dict(pairs)


def _refuse_constant(name):
    raise ValueError(f'{name} is not a finite number')


def _json(text, where):
    """The JSON of a header or metadata entry: ValueError after `where` when it is none, names a key twice, holds NaN
    or Infinity, or nests deeper than MAX_DEPTH (_decode walks it recursively)."""
    return decode_json(text, where, ValueError, depth=MAX_DEPTH, object_pairs_hook=_unique_object,
        parse_constant=_refuse_constant)


def read_header(path, blob=None):
    """(header {tensor: {dtype, shape, data_offsets}}, metadata {str: str}, data offset) of a safetensors file, checked:
    ValueError of one line naming the file and what is wrong. Reads only the header unless `blob` (the file) is given."""
    if blob is None:
        with open_regular(path, 'rb') as f:
            head = f.read(8)
            size = f.seek(0, os.SEEK_END)
            f.seek(8)
            n = struct.unpack('<Q', head)[0] if len(head) == 8 else None
            text = f.read(n) if n is not None and n <= min(size - 8, MAX_HEADER) else None
    else:
        size, n = len(blob), struct.unpack('<Q', blob[:8])[0] if len(blob) >= 8 else None
        text = blob[8:8 + n] if n is not None and n <= min(size - 8, MAX_HEADER) else None
    if text is None:
        raise ValueError(f'{path}: not a safetensors file (its header length {n} does not fit its {size} bytes)')
    header = _json(text, f'{path}: not a safetensors file (header):')
    if not isinstance(header, dict):
        raise ValueError(f'{path}: not a safetensors file (its header is not a JSON object)')
    metadata = header.pop('__metadata__', {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f'{path}: its safetensors metadata is not a map of strings')
    spans = []
    for name, info in header.items():
        ok = isinstance(info, dict) and set(info) == {'dtype', 'shape', 'data_offsets'} and info['dtype'] in DTYPES
        ok = ok and isinstance(info['shape'], list) and all(type(s) is int and s >= 0 for s in info['shape'])
        ok = ok and isinstance(info['data_offsets'], list) and len(info['data_offsets']) == 2
        ok = ok and all(type(o) is int for o in info['data_offsets'])
        if not ok:
            raise ValueError(f'{path}: tensor {name!r}: its header entry is malformed (dtype one of {sorted(DTYPES)}, '
                'shape a list of sizes, data_offsets [begin, end])')
        begin, end = info['data_offsets']
        if end - begin != math.prod(info['shape']) * DTYPES[info['dtype']]:
            raise ValueError(f'{path}: tensor {name!r}: {end - begin} bytes at data_offsets [{begin}, {end}] do not hold '
                f'{info["dtype"]} {info["shape"]}; the header lies or the file is damaged')
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise ValueError(f'{path}: tensor {name!r} starts at byte {begin} of the data, expected {position} (offsets '
                'overlap or leave gaps); the header lies or the file is damaged')
        position = end
    if position != size - 8 - n:
        raise ValueError(f'{path}: its header covers {position} bytes of data, the file holds {size - 8 - n}; the file '
            'is truncated or the header lies')
    return header, metadata, 8 + n


def _decode(value, tensors, used):
    if isinstance(value, list):
        return [_decode(v, tensors, used) for v in value]
    if not isinstance(value, dict):
        return value
    if TENSOR in value:
        name = value[TENSOR]
        if len(value) != 1 or not isinstance(name, str):
            raise ValueError(f'a malformed tensor reference {value!r}')
        if name not in tensors:
            raise ValueError(f'the metadata names tensor {name!r}, which the file lacks (a missing tensor)')
        if name in used:
            raise ValueError(f'the metadata names tensor {name!r} twice')
        used.add(name)
        return tensors[name]
    if ITEMS in value:
        items = value[ITEMS]
        if len(value) != 1 or not all(isinstance(i, list) and len(i) == 2 for i in items):
            raise ValueError(f'a malformed {ITEMS} entry')
        try:
            return {k: _decode(v, tensors, used) for k, v in items}
        except TypeError:
            raise ValueError(f'a {ITEMS} key is not a number, string or null') from None
    return {k: _decode(v, tensors, used) for k, v in value.items()}


def load(path, formats, blob=None):
    """The checkpoint dict of a safetensors file whose format is one of `formats`, tensors on the CPU; ValueError of
    one line naming the file and what is wrong (header, metadata JSON, a tensor missing or named by nothing). `blob`:
    the file's bytes, read already."""
    if blob is None:
        with open_regular(path, 'rb', error=ValueError) as f:
            blob = f.read()
    _header, metadata, _ = read_header(path, blob)
    if metadata.get(MARKER) not in formats:
        raise ValueError(f'{path}: its metadata {MARKER} is {metadata.get(MARKER)!r}, expected {" or ".join(formats)}')
    try:
        tensors = safetensors.torch.load(blob)
    except Exception as err:                        # safetensors' own checks, behind ours.
        raise ValueError(f'{path}: not a readable safetensors file ({" ".join(str(err).split())[:200]})') from None
    data, used = {'format': metadata[MARKER]}, set()
    for key, text in metadata.items():
        if key in ('format', MARKER, 'padding'):
            continue
        value = _json(text, f'{path}: metadata entry {key!r}:')
        try:
            data[key] = _decode(value, tensors, used)
        except ValueError as err:
            raise ValueError(f'{path}: metadata entry {key!r}: {" ".join(str(err).split())[:200]}') from None
    extra = sorted(set(tensors) - used)
    if extra:
        more = f' and {len(extra) - 1} more' if len(extra) > 1 else ''
        raise ValueError(f'{path}: it holds tensor {extra[0]!r}{more}, which its metadata does not name (an extra tensor)')
    return data

#----------------------------------------------------------------------------
