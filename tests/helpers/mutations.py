"""Seeded mutations of input files (truncate, flip, retype, nest, enlarge headers, nan/inf/huge) and the run's checks."""

import hashlib
import io
import json
import os
import random
import signal
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

JSON = BYTES + [retype, retype, nest, non_finite, non_finite, huge_text]

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

JSONL = BYTES + [jsonl(m) for m in (retype, retype, nest, non_finite, non_finite, huge_text)]

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
        path = rng.choice(plain)
        new = rng.choice(ALIENS[:-1] + [float('nan'), float('inf'), 1e38, 'x' * 1000])
        if rng.random() < 0.2 and isinstance(_get(state, path[:-1]), dict):
            parent = dict(_get(state, path[:-1]))
            del parent[path[-1]]
            return save(_replace(state, path[:-1], parent), data, rng)
        return save(_replace(state, path, new), data, rng)
    return [weights, weights, value, value, value]

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


def problem(result, outputs, before, after, seconds, good=None):
    """What is wrong with a tool's run on a mutated input (None: a one-line refusal, or a result `good` accepts)."""
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
            bad = problem(result, outputs, before, tree_digest(root, skip=set(outputs)), timeout, good)
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
