"""Seeded mutations of input files (truncate, flip, retype, nest, enlarge headers, nan/inf/huge) and the run's checks."""

import hashlib
import io
import json
import os
import random
import re
import signal
import sys
import time

import numpy as np

#----------------------------------------------------------------------------
# How many mutations per (file kind, tool): a few by default (CI), EG3D_RLHF_MUTATIONS=50 for the full property run.

def count(default=6):
    return int(os.environ.get('EG3D_RLHF_MUTATIONS', default))

#----------------------------------------------------------------------------
# Byte-level mutations: every file kind gets these.

def truncate(data, rng):
    return data[:rng.randrange(len(data))] if data else data

def flip(data, rng):
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    return bytes(out)

def empty(data, rng):
    return b''

def wrong_encoding(data, rng):
    text = data.decode('latin-1')
    return rng.choice([text.encode('utf-16'), text.encode('utf-32'), b'\xff\xfe' + data, data + b'\xc3\x28'])

BYTES = [truncate, flip, empty, wrong_encoding]

#----------------------------------------------------------------------------
# JSON values: retype one, nest deeply, huge or non-finite numbers.

ALIENS = [None, True, 'x', '', [], {}, [1, 2], {'a': 1}, -1, 0, 1, 2 ** 70, 1e308, -1e308, 1.5, 'nan', 'inf', '\udcff']

def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))

def _replace(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy

def _dumps(value):
    return json.dumps(value, ensure_ascii=False).encode('utf-8', 'surrogateescape')

def json_edit(data, rng, alien):
    """`data` (JSON text) with one value, chosen at random, replaced by alien(rng); bytes mutations when not JSON."""
    try:
        value = json.loads(data)
    except ValueError:
        return flip(data, rng)
    paths = list(_paths(value))
    return _dumps(_replace(value, rng.choice(paths[1:] or paths), alien(rng)))

def retype(data, rng):
    return json_edit(data, rng, lambda r: r.choice(ALIENS))

def nest(data, rng):
    depth = rng.choice([50, 1000, 100000])
    return json_edit(data, rng, lambda r: json.loads('[' * min(depth, 900) + ']' * min(depth, 900))) if depth < 1000 \
        else b'[' * depth + b']' * rng.choice([0, depth])

def non_finite(data, rng):
    token = rng.choice(['NaN', 'Infinity', '-Infinity', '1e999', '-1e999', '3e38', '1e308'])
    edited = json_edit(data, rng, lambda r: '\0TOKEN\0')
    return edited.replace(b'"\\u0000TOKEN\\u0000"', token.encode())

def huge_text(data, rng):
    return json_edit(data, rng, lambda r: 'x' * r.choice([10 ** 5, 2 * 10 ** 6]))

def long_number(data, rng):
    """A number of more digits than Python's int() reads (4300 by default: json.loads raises ValueError)."""
    token = rng.choice(['9' * 5000, '-' + '1' * 4301, '1' * 5000 + '.5', '0.' + '1' * 5000, '1e' + '9' * 5000])
    edited = json_edit(data, rng, lambda r: '\0TOKEN\0')
    return edited.replace(b'"\\u0000TOKEN\\u0000"', token.encode())

JSON = BYTES + [retype, retype, nest, non_finite, non_finite, huge_text, long_number]

def jsonl(mutation):
    """A JSON mutation applied to one line of a JSON Lines file."""
    def edit(data, rng):
        lines = data.split(b'\n')
        full = [i for i, line in enumerate(lines) if line.strip()]
        if not full:
            return mutation(data, rng)
        i = rng.choice(full)
        lines[i] = mutation(lines[i], rng).replace(b'\n', b' ')
        return b'\n'.join(lines)
    edit.__name__ = mutation.__name__
    return edit

JSONL = BYTES + [jsonl(m) for m in (retype, retype, nest, non_finite, non_finite, huge_text, long_number)]

#----------------------------------------------------------------------------
# CSV: one field replaced, a row repeated or cut, a column dropped.

def csv_field(data, rng):
    rows = [row.split(b',') for row in data.split(b'\n')]
    full = [i for i, row in enumerate(rows) if len(row) > 1]
    if not full:
        return flip(data, rng)
    i = rng.choice(full)
    j = rng.randrange(len(rows[i]))
    rows[i][j] = rng.choice([b'nan', b'inf', b'-inf', b'1e400', b'3e38', b'', b'x' * 200000, b'\xff\xfe', b'"', b'1,2',
        b'ball99', rows[rng.choice(full)][0]])
    return b'\n'.join(b','.join(row) for row in rows)

def csv_rows(data, rng):
    lines = data.split(b'\n')
    i = rng.randrange(len(lines))
    return b'\n'.join(rng.choice([lines[:i] + lines[i + 1:], lines + [lines[i]], [line.split(b',')[0] for line in lines]]))

CSV = BYTES + [csv_field, csv_field, csv_field, csv_rows]

#----------------------------------------------------------------------------
# Plain lists and tables with bare numbers (id lists, ranked seeds): a number spelt in other digits must be refused,
# never read as that seed (str.isdigit, re's \\d and int() all accept '\u0663' as 3).

OTHER_DIGITS = ['\u0660', '\u06f0', '\u0966', '\uff10', '\U0001d7ce']      # Arabic-Indic, Persian, Devanagari, fullwidth, math bold.

def spelt_digits(first_field=True):
    """A mutation spelling one bare number (a run of ASCII digits not inside a word) in another script's digits; with
    first_field False, never one in a line's first comma-separated field (a CSV's index or condition: free text)."""
    def other_digits(data, rng):
        text = data.decode('utf-8', 'surrogateescape')
        found = [m for m in re.finditer(r'(?<![A-Za-z0-9_])[0-9]+(?![A-Za-z0-9_])', text) if first_field or
            ',' in text[text.rfind('\n', 0, m.start()) + 1:m.start()]]
        if not found:
            return flip(data, rng)
        m, zero = rng.choice(found), ord(rng.choice(OTHER_DIGITS))
        spelt = ''.join(chr(zero + int(c)) for c in m.group())
        return (text[:m.start()] + spelt + text[m.end():]).encode('utf-8', 'surrogateescape')
    other_digits.must_refuse = True             # rc 0 on such a file is a silent wrong result.
    return other_digits

other_digits = spelt_digits()

def text_line(data, rng):
    """One line replaced by something no list holds: huge, NUL, a path, a number past any seed, a bare sign."""
    lines = data.split(b'\n')
    i = rng.randrange(len(lines))
    lines[i] = rng.choice([b'x' * 2000000, b'seed\x00001', b'../../etc/passwd', b'9' * 30, b'-3', b'3.0', b'+', b'\xff\xfe',
        b'seed000001 seed000002', b'\r', b'\x1b[2J', b'1' * 5000])
    return b'\n'.join(lines)

def text_lines(data, rng):
    lines = data.split(b'\n')
    return rng.choice([b'\r\n'.join(lines), b'\r'.join(lines), b'\n'.join(lines * 3), b'\xef\xbb\xbf' + data,
        b'\n'.join(lines[::-1]), b'\n' * 100000])

TEXT = BYTES + [other_digits, other_digits, text_line, text_line, text_lines]
TABLE_DIGITS = [spelt_digits(first_field=False)] * 2          # For CSV and JSONL rows.

#----------------------------------------------------------------------------
# YAML: retyped values, deep nesting, tags that would build objects, aliases, numbers past int()'s limit.

YAML_ALIENS = ALIENS[:-1] + [float('nan'), float('inf'), 10 ** 4400, 2 ** 63, 200000, [200000] * 3, [10 ** 12], -7]

def yaml_retype(data, rng):
    import yaml # pylint: disable=import-outside-toplevel
    try:
        value = yaml.safe_load(data)
    except (yaml.YAMLError, ValueError, RecursionError):
        return flip(data, rng)
    paths = list(_paths(value))
    new = _replace(value, rng.choice(paths[1:] or paths), rng.choice(YAML_ALIENS))
    sys.set_int_max_str_digits(0)                               # (Writing the 4400-digit number.)
    try:
        return yaml.safe_dump(new, allow_unicode=True).encode('utf-8', 'surrogateescape')
    finally:
        sys.set_int_max_str_digits(4300)

def _yaml_top_value(data, rng, value):
    """data with the value of one top-level key (or a new one) replaced by the YAML text `value`."""
    lines = data.split(b'\n')
    keys = [i for i, line in enumerate(lines) if re.match(rb'[A-Za-z_][\w-]*:', line)]
    if not keys:
        return b'key: ' + value
    i = rng.choice(keys)
    end = next((j for j in range(i + 1, len(lines)) if lines[j][:1] not in (b' ', b'#', b'') or
        re.match(rb'[A-Za-z_]', lines[j])), len(lines))
    return b'\n'.join(lines[:i] + [lines[i].split(b':')[0] + b': ' + value] + lines[end:])

def yaml_nest(data, rng):
    depth = rng.choice([50, 1000, 5000, 100000])
    how = rng.randrange(3)
    if how == 0:
        value = b'[' * depth + b']' * depth
    elif how == 1:
        value = b'{a: ' * depth + b'1' + b'}' * depth
    else:
        depth = min(depth, 3000)
        value = b'\n' + b''.join(b' ' * (2 * k + 2) + b'a:\n' for k in range(depth)) + b' ' * (2 * depth + 2) + b'1'
    return _yaml_top_value(data, rng, value)

def yaml_tag(data, rng):
    return _yaml_top_value(data, rng, rng.choice([b'!!python/object/apply:os.system ["touch /tmp/eg3d-rlhf-yaml-ran"]',
        b'!!python/name:os.system', b'!!binary aGVsbG8=', b'&a [*a]', b'&x {k: *x}', b'2001-12-14t21:59:43.10-05:00',
        b'!!set {a, b}', b'*undefined', b'1' * 5000, b'0x' + b'f' * 5000, b'.nan', b'-.inf', b'~', b'"\\ud800"']))

def _top_keys(data):
    """(line index, key) of every top-level `key: value` line."""
    found = [(i, re.match(rb'([A-Za-z_][\w-]*):', line)) for i, line in enumerate(data.split(b'\n'))]
    return [(i, m.group(1)) for i, m in found if m]

def yaml_duplicate(data, rng):
    """One top-level key given again, later, with another value: PyYAML would keep the last silently."""
    keys = _top_keys(data)
    if not keys:
        return flip(data, rng)
    _, key = rng.choice(keys)
    return data.rstrip(b'\n') + b'\n' + key + b': ' + rng.choice([b'1', b'x', b'null', b'true']) + b'\n'

yaml_duplicate.must_refuse = True

YAML = BYTES + [yaml_retype, yaml_retype, yaml_retype, yaml_nest, yaml_nest, yaml_tag, yaml_tag, yaml_duplicate]

#----------------------------------------------------------------------------
# train.py's run configs (a file of options, as --save-config writes it): keys only a flag may set, one option in two
# spellings, YAML 1.1's readings of numbers and words where a number is expected. Each must be refused.

def yaml_grant(data, rng):
    """A key granting what only the person typing may: trust, --force, a file written (the --data file: the run's
    own input), an existing run folder written into, code imported, another file read."""
    found = re.search(rb'^data: *(.+)$', data, re.M)
    target = found.group(1).strip() if found else b'run.yaml'
    grant = rng.choice([b'trust_pickle: true', b'trust-pickle: yes', b'force: true',
        b'save_config: ' + target + b'\nforce: true', b'resume_run: ' + target, b'sr_module: os.system',
        b'config: ' + target])
    return data.rstrip(b'\n') + b'\n' + grant + b'\n'

def yaml_respelled(data, rng):
    """A key with dashes given again with underscores (or the other way): the same option, twice."""
    keys = [key for _, key in _top_keys(data) if b'_' in key or b'-' in key]
    if not keys:
        return yaml_duplicate(data, rng)
    key = rng.choice(keys)
    other = key.replace(b'_', b'-') if b'_' in key else key.replace(b'-', b'_')
    return data.rstrip(b'\n') + b'\n' + other + b': 1\n'

def yaml_1_1(data, rng):
    """A number replaced by what YAML 1.1 reads as another number or a bool (sexagesimal, octal, binary, a hex number
    past float range, yes/off): no flag of a number takes such text."""
    lines = data.split(b'\n')
    numbers = [i for i, line in enumerate(lines) if re.match(rb'[A-Za-z_][\w-]*: *-?[0-9][0-9.]*( *#.*)?$', line)]
    if not numbers:
        return flip(data, rng)
    i = rng.choice(numbers)
    value = rng.choice([b'1:30', b'-1:30', b'190:20:30', b'0x' + b'f' * 400, b'0b101', b'0o17', b'yes', b'off'])
    lines[i] = lines[i].split(b':')[0] + b': ' + value
    return b'\n'.join(lines)

for _mutation in (yaml_grant, yaml_respelled, yaml_1_1):
    _mutation.must_refuse = True

RUN_YAML = [yaml_grant, yaml_1_1, yaml_duplicate, yaml_respelled, yaml_grant, yaml_1_1, yaml_nest, yaml_retype,
    yaml_tag]

#----------------------------------------------------------------------------
# Zip archives: one member's contents mutated (by its kind), its stored bytes garbled (a CRC or inflate error), its
# size claimed huge, a member dropped or doubled.

def zip_members(inner=None):
    """Mutations of a zip; inner {'.ext': family} mutates a member of that extension with its own family (others
    get BYTES)."""
    inner = inner or {}

    def member(data, rng):
        z = _zip_or_none(data)
        if z is None:
            return flip(data, rng)
        info = rng.choice([i for i in z.infolist() if not i.is_dir()])
        family = next((f for ext, f in inner.items() if info.filename.endswith(ext)), BYTES)
        return _rezip(z, {info.filename: rng.choice(family)(z.read(info), rng)})

    def stored(data, rng):
        z = _zip_or_none(data)
        if z is None:
            return flip(data, rng)
        info = rng.choice([i for i in z.infolist() if not i.is_dir() and i.compress_size])
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            out[start + rng.randrange(info.compress_size)] ^= 1 << rng.randrange(8)
        return bytes(out)

    def claimed(data, rng):
        z = _zip_or_none(data)
        if z is None:
            return flip(data, rng)
        info = rng.choice([i for i in z.infolist() if not i.is_dir()])
        name = info.filename.encode()
        entry = data.find(b'PK\x01\x02')                       # Its central directory record.
        while entry >= 0 and data[entry + 46:entry + 46 + len(name)] != name:
            entry = data.find(b'PK\x01\x02', entry + 4)
        if entry < 0:
            return flip(data, rng)
        size = rng.choice([0xFFFFFFFE, 1 << 31, info.file_size + 1, 0])
        field = rng.choice([20, 24])                            # Compressed or uncompressed size.
        return data[:entry + field] + size.to_bytes(4, 'little') + data[entry + field + 4:]

    def members(data, rng):
        z = _zip_or_none(data)
        if z is None:
            return flip(data, rng)
        names = [i.filename for i in z.infolist() if not i.is_dir()]
        name = rng.choice(names)
        if rng.random() < 0.5:
            return _rezip(z, {name: None})
        return _rezip(z, {}, extra={name: z.read(name), name.replace('/', '/../', 1) if '/' in name else '../' + name:
            z.read(name)})
    return [member, member, member, stored, claimed, members]

def _zip_or_none(data):
    import zipfile # pylint: disable=import-outside-toplevel
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        return z if any(not i.is_dir() for i in z.infolist()) else None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return None

def _rezip(z, replace, extra=None):
    """The archive `z` again, member NAME's bytes replaced by replace[NAME] (None drops it), `extra` members added."""
    import warnings # pylint: disable=import-outside-toplevel
    import zipfile # pylint: disable=import-outside-toplevel
    f = io.BytesIO()
    with zipfile.ZipFile(f, 'w') as out, warnings.catch_warnings():
        warnings.simplefilter('ignore')                         # "Duplicate name".
        for info in z.infolist():
            data = replace.get(info.filename, z.read(info)) if not info.is_dir() else b''
            if data is not None:
                out.writestr(info, data, compress_type=info.compress_type)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return f.getvalue()

#----------------------------------------------------------------------------
# Pickles (trusted network snapshots): a length field claiming exabytes, entries retyped, weights nan/inf.

LENGTHS = {'BINUNICODE': 4, 'BINBYTES': 4, 'BINSTRING': 4, 'LONG4': 4, 'BINUNICODE8': 8, 'BINBYTES8': 8,
    'BYTEARRAY8': 8, 'FRAME': 8, 'SHORT_BINBYTES': 1, 'SHORT_BINUNICODE': 1, 'SHORT_BINSTRING': 1}

def pickle_length(data, rng):
    import pickletools # pylint: disable=import-outside-toplevel
    try:
        ops = [(op.name, pos) for op, _, pos in pickletools.genops(data) if op.name in LENGTHS]
    except Exception: # pylint: disable=broad-except
        ops = []
    if not ops:
        return flip(data, rng)
    name = rng.choice(sorted({n for n, _ in ops}))                # Each kind of length alike, however common.
    pos = rng.choice([p for n, p in ops if n == name])
    width = LENGTHS[name]
    size = rng.choice({1: [255], 4: [0xFFFFFFFF, 0x7FFFFFFF, 1 << 30], 8: [(1 << 63) - 1, 1 << 60, 1 << 40]}[width])
    return data[:pos + 1] + size.to_bytes(width, 'little') + data[pos + 1 + width:]

def snapshot_edit(data, rng):
    """A network snapshot (a dict of G, D, G_ema, ...) with an entry retyped or a weight made nan/inf: each must be
    refused."""
    import pickle # pylint: disable=import-outside-toplevel
    import torch # pylint: disable=import-outside-toplevel
    snapshot = pickle.loads(data)                           # The test's own file: trusted.
    nets = [k for k in ('G', 'D', 'G_ema') if isinstance(snapshot.get(k), torch.nn.Module)]
    if rng.random() < 0.4 or not nets:
        key = rng.choice(['G', 'D', 'G_ema', 'progress', 'resume_state'])
        snapshot[key] = rng.choice([3, 'G', [1], torch.nn.Linear(2, 2), torch.zeros(3), float('nan'),
            dict(kimg='x', tick=-1)] + ([{}] if key != 'progress' else []))
    else:
        net = snapshot[rng.choice(nets)]
        params = [p for p in list(net.parameters()) + list(net.buffers()) if p.is_floating_point() and p.numel()]
        with torch.no_grad():
            p = rng.choice(params)
            p.view(-1)[rng.randrange(p.numel())] = rng.choice([float('nan'), float('inf'), -float('inf')])
    return pickle.dumps(snapshot)

snapshot_edit.must_refuse = True

PICKLE = BYTES + [pickle_length, pickle_length, snapshot_edit, snapshot_edit]

#----------------------------------------------------------------------------
# MRC maps: header fields (sizes, mode, extended header length, axes, byte order) set to what no map holds.

MRC_FIELDS = {'nx': 0, 'ny': 4, 'nz': 8, 'mode': 12, 'mapc': 64, 'mapr': 68, 'maps': 72, 'nsymbt': 92}

def mrc_header(data, rng):
    if len(data) < 1024:
        return flip(data, rng)
    field = rng.choice(list(MRC_FIELDS))
    value = rng.choice({'mode': [0, 1, 3, 4, 6, 12, 101, 99, -1]}.get(field, [0, -1, 1, 1 << 30, 0x7FFFFFFF, 3000]))
    offset = MRC_FIELDS[field]
    out = data[:offset] + value.to_bytes(4, 'little', signed=True) + data[offset + 4:]
    if rng.random() < 0.2:
        out = out[:212] + rng.choice([b'\x11\x11\x00\x00', b'\x00\x00\x00\x00', b'\xff\xff\xff\xff']) + out[216:]
    return out

def mrc_values(data, rng):
    if len(data) <= 1024:
        return flip(data, rng)
    body = np.frombuffer(data[1024:len(data) - (len(data) - 1024) % 4], dtype='<f4').copy()
    picks = rng.sample(range(body.size), min(body.size, rng.choice([1, 10, body.size])))
    body[picks] = rng.choice([np.nan, np.inf, -np.inf, 3e38])
    return data[:1024] + body.tobytes() + data[1024 + body.nbytes:]

MRC = BYTES + [mrc_header, mrc_header, mrc_header, mrc_values]

#----------------------------------------------------------------------------
# .npy: a header claiming another shape or dtype, values nan/inf/huge.

def _npy_parts(data):
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = header(f)
    return shape, fortran, dtype, data[f.tell():]

def _npy(shape, fortran, descr, body):
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, dict(descr=descr, fortran_order=fortran, shape=tuple(shape)))
    return f.getvalue() + body

def npy_header(data, rng):
    shape, fortran, dtype, body = _npy_parts(data)
    choice = rng.randrange(4)
    if choice == 0:                                     # Enlarged: up to petabytes claimed.
        shape = [n * rng.choice([2, 1000, 1 << 20]) for n in shape]
    elif choice == 1:
        shape = list(shape)[:rng.randint(0, len(shape))] + [rng.randint(0, 3)] * rng.randint(0, 2)
    elif choice == 2:
        return _npy(shape, fortran, rng.choice(['<f8', '<f2', '<i4', '|u1', '<c8', '|b1', '>f4', '<U4']), body)
    else:
        fortran = not fortran
    return _npy(shape, fortran, dtype.str, body)

def npy_values(data, rng):
    shape, fortran, dtype, body = _npy_parts(data)
    array = np.frombuffer(body, dtype=dtype).copy()
    if array.size == 0 or array.dtype.kind not in 'fiu':
        return flip(data, rng)
    picks = rng.sample(range(array.size), min(array.size, rng.choice([1, 10, array.size])))
    if array.dtype.kind == 'f':
        array[picks] = rng.choice([np.nan, np.inf, -np.inf, 3e38, -3e38, np.finfo(array.dtype).max])
    else:
        array[picks] = rng.choice([np.iinfo(array.dtype).max, np.iinfo(array.dtype).min, -1, 10 ** 6 % 127])
    return _npy(shape, fortran, dtype.str, array.tobytes())

NPY = BYTES + [npy_header, npy_header, npy_values, npy_values]

#----------------------------------------------------------------------------
# Checkpoints (a torch zip or safetensors): tensors made non-finite or huge, config values retyped, keys dropped.

def state_edit(load, save_state):
    """Mutations of a checkpoint's contents: `load(bytes) -> nested dict`, `save_state(dict) -> bytes` (a format that
    cannot hold the edit, e.g. safetensors a nan in its JSON metadata, gets byte flips instead)."""
    def save(state, data, rng):
        try:
            return save_state(state)
        except (ValueError, TypeError):
            return flip(data, rng)

    def tensors(value, prefix=()):
        import torch # pylint: disable=import-outside-toplevel
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            yield prefix
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from tensors(v, prefix + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                yield from tensors(v, prefix + (i,))

    def weights(data, rng):
        state = load(data)
        found = list(tensors(state))
        if not found:
            return flip(data, rng)
        path = rng.choice(found)
        tensor = _get(state, path).clone()
        how = rng.randrange(3)
        if how == 0:
            tensor.view(-1)[rng.randrange(tensor.numel())] = rng.choice([float('nan'), float('inf'), -float('inf')])
        elif how == 1:
            tensor.mul_(rng.choice([1e30, 1e38, -1e36]))
        else:
            tensor = tensor.flatten()[:max(1, tensor.numel() // 2)]
        return save(_replace(state, path, tensor), data, rng)

    def value(data, rng):
        state = load(data)
        plain = [p for p in _paths(state) if p and not hasattr(_get(state, p), 'dtype')]
        if not plain:                                   # A bare state_dict: tensors only.
            return weights(data, rng)
        path = rng.choice(plain)
        new = rng.choice(ALIENS[:-1] + [float('nan'), float('inf'), 1e38, 'x' * 1000])
        if rng.random() < 0.2 and isinstance(_get(state, path[:-1]), dict):
            parent = dict(_get(state, path[:-1]))
            del parent[path[-1]]
            return save(_replace(state, path[:-1], parent), data, rng)
        return save(_replace(state, path, new), data, rng)
    return [weights, weights, value, value, value]

def safetensors_nest(data, rng):
    """A safetensors file with a metadata entry, or a header entry, nested past what a recursive reader walks."""
    import struct # pylint: disable=import-outside-toplevel
    n = struct.unpack('<Q', data[:8])[0] if len(data) >= 8 else 0
    try:
        header = json.loads(data[8:8 + n])
    except ValueError:
        return flip(data, rng)
    depth = rng.choice([900, 5000, 100000])
    nested = rng.choice(['[' * depth + ']' * depth, '{"a":' * depth + '1' + '}' * depth])
    entries = [k for k in header.get('__metadata__', {}) if k not in ('format', 'eg3d_rlhf.format')]
    if entries and rng.random() < 0.7:
        header['__metadata__'][rng.choice(entries)] = nested
        text = json.dumps(header)
    else:
        text = '{"deep": ' + nested + ', ' + json.dumps(header)[1:]
    return struct.pack('<Q', len(text)) + text.encode() + data[8 + n:]

def _get(value, path):
    for key in path:
        value = value[key]
    return value

#----------------------------------------------------------------------------
# Running a tool on a mutated file, and what must hold after.

class Hang(BaseException):
    """A tool ran past its time limit (BaseException: no tool's `except Exception` swallows it)."""


def run_within(seconds, func):
    """func() or Hang after `seconds` (SIGALRM: the main thread, POSIX)."""
    def alarm(signum, frame):
        raise Hang(f'over {seconds} s')
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return func()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def tree_digest(root, skip=()):
    """{path: sha256} of every file under `root`, except under the paths of `skip`."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
        for name in files:
            path = os.path.join(folder, name)
            if path not in skip:
                with open(path, 'rb') as f:
                    found[path] = hashlib.sha256(f.read()).hexdigest()
    return found


def problem(result, outputs, before, after, seconds, good=None, must_refuse=False):
    """What is wrong with a tool's run on a mutated input (None: a one-line refusal, or a result `good` accepts;
    must_refuse: only a refusal)."""
    if isinstance(result, Hang):
        return f'hang ({result})'
    if before != after:
        changed = sorted(set(before.items()) ^ set(after.items()))
        return f'pre-existing files changed: {sorted({p for p, _ in changed})[:3]}'
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f'traceback: {type(result.exception).__name__}: {str(result.exception)[:200]}'
    if 'Traceback' in result.output:
        return 'a traceback in the output'
    if result.exit_code != 0:
        errors = [line for line in result.output.splitlines() if line.startswith('Error')]
        if len(errors) != 1:
            return f'{len(errors)} Error lines: {result.output[-300:]!r}'
        left = [p for p in outputs if os.path.lexists(p)]
        return f'left behind: {left}' if left else None
    if must_refuse:
        return f'rc 0 on a file it must refuse: {result.output[-300:]!r}'
    if good is not None and not good(result):
        return f'rc 0 with a bad result: {result.output[-300:]!r}'
    return None


def mutate_and_run(path, mutations, run, seed, n, outputs=(), root=None, good=None, timeout=30):
    """n seeded mutations of the file at `path` (restored after each), each followed by run() -> click Result; returns
    ([problem lines], {mutation name: runs}, seconds). Files under `root` (default: path's folder) other than
    `outputs` must be byte-identical after each run."""
    rng = random.Random(seed)
    with open(path, 'rb') as f:
        pristine = f.read()
    root = root or os.path.dirname(path)
    found, counts, start = [], {}, time.time()
    try:
        for i in range(n):
            mutation = mutations[i % len(mutations)] if i < len(mutations) else rng.choice(mutations)
            data = mutation(pristine, random.Random(rng.getrandbits(32)))
            with open(path, 'wb') as f:
                f.write(data)
            before = tree_digest(root, skip=set(outputs))
            try:
                result = run_within(timeout, run)
            except Hang as hang:
                result = hang
            bad = problem(result, outputs, before, tree_digest(root, skip=set(outputs)), timeout, good,
                getattr(mutation, 'must_refuse', False) and data != pristine)
            counts[mutation.__name__] = counts.get(mutation.__name__, 0) + 1
            if bad is not None:
                found.append(f'#{i} {mutation.__name__} ({len(data)} bytes): {bad}')
            for out in outputs:
                _remove(out)
    finally:
        with open(path, 'wb') as f:
            f.write(pristine)
    return found, counts, time.time() - start


def _remove(path):
    import shutil # pylint: disable=import-outside-toplevel
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)

#----------------------------------------------------------------------------
