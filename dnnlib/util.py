"""Helpers EG3D code expects from `dnnlib.util`: EasyDict, name lookup, local URL opening, cache dirs, safe file I/O."""

import contextlib
import errno
import functools
import importlib
import io
import json
import math
import os
import re
import stat
import sys
import tempfile
import urllib.parse
from typing import Any

import click

try:
    import fcntl
except ImportError:             # Not POSIX: open_regular checks with os.stat alone.
    fcntl = None

#----------------------------------------------------------------------------

class EasyDict(dict):
    """A dict whose items can also be read and written as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

#----------------------------------------------------------------------------
# Looking up objects by their dotted name.

def get_module_from_obj_name(obj_name: str):
    """Split 'pkg.mod.Obj.attr' into (imported module, 'Obj.attr'), importing the longest module prefix."""
    parts = obj_name.split('.')
    for i in range(len(parts), 0, -1):
        module_name = '.'.join(parts[:i])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # Only swallow "this prefix is not a module"; a module that fails on its own import is a real error.
            if err.name is not None and not module_name.startswith(err.name) and not err.name.startswith(module_name):
                raise
            continue
        local = '.'.join(parts[i:])
        try:
            get_obj_from_module(module, local)
        except AttributeError:
            continue
        return module, local
    raise ValueError(f'cannot find "{obj_name}": no importable module holds it')


def get_obj_from_module(module, obj_name: str) -> Any:
    """Follow a dotted attribute path inside a module ('' returns the module)."""
    obj = module
    for part in (obj_name.split('.') if obj_name else []):
        obj = getattr(obj, part)
    return obj


def get_obj_by_name(name: str) -> Any:
    """Return the object that a fully qualified dotted name refers to."""
    module, local = get_module_from_obj_name(name)
    return get_obj_from_module(module, local)


def call_func_by_name(*args, func_name: str = None, **kwargs) -> Any:
    """Look up a callable by name and call it."""
    assert func_name is not None
    func = get_obj_by_name(func_name)
    if not callable(func):
        raise TypeError(f'"{func_name}" is not callable')
    return func(*args, **kwargs)


def construct_class_by_name(*args, class_name: str = None, **kwargs) -> Any:
    """Look up a class by name and instantiate it: EG3D's way of building configurable modules."""
    return call_func_by_name(*args, func_name=class_name, **kwargs)


def get_top_level_function_name(obj: Any) -> str:
    """Fully qualified name of a top-level function."""
    return f'{obj.__module__}.{obj.__name__}'

#----------------------------------------------------------------------------
# Files and caches. There is no network here: URLs must name local files.

def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    """True for 'scheme://...' strings (file:// only when allowed)."""
    if not isinstance(obj, str) or '://' not in obj:
        return False
    if obj.startswith('file://'):
        return allow_file_urls
    return bool(urllib.parse.urlparse(obj).scheme)


def url_to_path(url: str) -> str:
    """Turn a local path or file:// URL into a filesystem path; refuse network URLs with a clear message."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == 'file':
        return urllib.parse.unquote(parsed.path)
    if parsed.scheme in ('', ) or (len(parsed.scheme) == 1 and os.name == 'nt'):
        return url
    raise IOError(f'cannot open "{url}": eg3d-rlhf does not use the network; download it and pass the local path')


def open_url(url: str, cache_dir: str = None, num_attempts: int = 1, verbose: bool = True, return_filename: bool = False, cache: bool = True) -> Any:
    """Open a local path or file:// URL for binary reading (EG3D's signature; network URLs are refused)."""
    _ = cache_dir, num_attempts, verbose, cache
    path = url_to_path(url)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'no such file: "{path}"')
    if return_filename:
        return path
    return open(path, 'rb')


def make_cache_dir_path(*paths: str) -> str:
    """Path inside the cache dir: $EG3D_RLHF_CACHE, else $XDG_CACHE_HOME/eg3d-rlhf, else ~/.cache/eg3d-rlhf."""
    if 'EG3D_RLHF_CACHE' in os.environ:
        root = os.environ['EG3D_RLHF_CACHE']
    elif 'XDG_CACHE_HOME' in os.environ:
        root = os.path.join(os.environ['XDG_CACHE_HOME'], 'eg3d-rlhf')
    else:
        root = os.path.join(os.path.expanduser('~'), '.cache', 'eg3d-rlhf')
    return os.path.join(root, *paths)


def format_time(seconds: float) -> str:
    """Human-readable duration, as in EG3D's status lines."""
    s = int(round(seconds))
    if s < 60:
        return f'{s}s'
    if s < 60 * 60:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 24 * 60 * 60:
        return f'{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s'
    return f'{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m'


TEMPORARY_PREFIX = '.tmp-'     # atomic_write's temporaries: .tmp-<pid of the writer>-<random><suffix>.


def remove_stale_temporaries(folder):
    """Delete atomic_write's temporaries in `folder` whose writer process is gone (a kill -9 mid-write leaves them);
    returns their names. Those of live processes, and files that merely look alike, stay."""
    pattern = re.compile(re.escape(TEMPORARY_PREFIX) + r'(\d+)-')
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        match = pattern.match(name)
        if match is None or _process_alive(int(match.group(1))) or not os.path.isfile(os.path.join(folder, name)):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))
            removed.append(name)
    return removed


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True                     # Someone else's process (or a pid we cannot ask about): leave its files.
    return True


# A write the file system refuses: the disk is full, mounted read-only, or the folder is not ours. The command stops in
# one line naming the path (WriteError is a click error: no traceback), and the writer removes what it had begun.
RESOURCE_ERRORS = {
    errno.ENOSPC: 'no space left on the device; free some space or write elsewhere',
    errno.EDQUOT: 'disk quota exceeded; free some space or write elsewhere',
    errno.EROFS: 'read-only file system; write elsewhere',
    errno.EACCES: 'permission denied; choose a folder you can write in',
    errno.EPERM: 'permission denied; choose a folder you can write in',
}


class WriteError(OSError, click.ClickException):
    """A write refused for want of space or permission; its message is one line naming the path and the fix, and a
    click command that lets it through stops with that line (exit code 1)."""

    def __init__(self, path, err):
        message = f'{path}: cannot write it ({RESOURCE_ERRORS[err.errno]}); nothing was written there'
        OSError.__init__(self, message)
        click.ClickException.__init__(self, message)
        self.errno = err.errno


def error_line(err):
    """The first line of an exception's message, or its type's name when it has none: for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def is_resource_error(err, *paths):
    """Whether `err` is a full disk, a read-only file system or a denied permission while writing one of `paths`, a
    file directly in one of them, or a file object (whose errors name no path)."""
    names = {os.path.abspath(p) for p in paths if p is not None}
    name = None if err.filename is None else os.path.abspath(os.fsdecode(err.filename))
    named = name is None or name in names or os.path.dirname(name) in names     # A temporary in a named folder too.
    return isinstance(err, OSError) and not isinstance(err, WriteError) and err.errno in RESOURCE_ERRORS and named


@contextlib.contextmanager
def writing(path, *others):
    """Resource errors (is_resource_error) raised while writing `path` (or `others`: its folder, its temporary) become
    WriteError naming `path`; the caller removes what it had begun."""
    try:
        yield
    except OSError as err:
        if not is_resource_error(err, path, *others):
            raise
        raise WriteError(path, err) from None


@contextlib.contextmanager
def atomic_write(path, mode='wb', encoding=None):
    """Write `path` through a temporary file beside it: it replaces `path` only when the block succeeds (a crash never
    leaves a half-written file) and gets the usual umask permissions (mkstemp's own are private). A full disk or a
    folder that cannot be written raises WriteError naming `path`, with no temporary left behind."""
    folder = os.path.dirname(os.path.abspath(path))
    made = _missing_folders(folder)
    tmp = None
    try:
        with writing(path, *made, folder):
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'{TEMPORARY_PREFIX}{os.getpid()}-',
                suffix=os.path.splitext(path)[1])
        umask = os.umask(0)
        os.umask(umask)
        with writing(path, tmp, folder):
            os.chmod(tmp, 0o666 & ~umask)
            with os.fdopen(fd, mode, encoding=encoding) as f:
                yield f
            os.replace(tmp, path)
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        for made_folder in made:                        # Folders made for this file alone, deepest first.
            with contextlib.suppress(OSError):
                os.rmdir(made_folder)
        raise


def _missing_folders(folder):
    """The folders of `folder`'s path that do not exist yet, deepest first."""
    missing = []
    while folder and not os.path.exists(folder) and os.path.dirname(folder) != folder:
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def writable_problem(path, kind):
    """Why `path`, a 'dir' to fill or a 'file' to write (atomically, so its folder must be writable), could not be
    written, checked before any work is done; None when it can."""
    path = os.path.abspath(path)
    if os.path.exists(path) and (kind == 'dir') != os.path.isdir(path):
        return f'{path} exists and is {"not " if kind == "dir" else ""}a folder'
    folder = path if kind == 'dir' else os.path.dirname(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return f'{folder} is a file, so nothing can be made under it'
    if not os.access(folder, os.W_OK | os.X_OK):
        return f'cannot write in {folder} (permission denied)'
    return None

#----------------------------------------------------------------------------
# Reading input files. Opening a FIFO blocks until something writes to it and a device may never end, so every reader
# of a file a user names (checkpoints, slabs, labels, CSVs, names) opens it with open_regular: a regular file or a
# one-line refusal, never a hang.

class NotRegularFile(OSError):
    """A path that names something other than a regular file (a folder, a FIFO, a device, a socket); its message is
    one line naming the path."""


def file_kind(mode):
    """'a folder', 'a FIFO', ... of an st_mode that is not a regular file's; None for a regular file."""
    kinds = [(stat.S_ISDIR, 'a folder'), (stat.S_ISFIFO, 'a FIFO'), (stat.S_ISCHR, 'a character device'),
        (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket')]
    return None if stat.S_ISREG(mode) else next((name for test, name in kinds if test(mode)), 'not a file')


def file_problem(path):
    """Why `path` is no regular file to read, in one line naming it ('PATH: no such file', 'PATH: not a regular file
    (a FIFO); give a file'), from os.stat alone (a symlink to a regular file is fine); None when it is one."""
    try:
        kind = file_kind(os.stat(path).st_mode)
    except FileNotFoundError:
        return f'{path}: no such file'
    except OSError as err:
        return f'{path}: cannot read it ({err.strerror or err})'
    return None if kind is None else _not_regular(path, kind)


def _not_regular(path, kind):
    return f'{path}: not a regular file ({kind}); give a file'


class FrozenFile(str):
    """A file's path that carries the bytes it held when frozen_file read it: open_regular serves those bytes and
    never opens the path again, so what a caller checked (a generator file's kind) is what it loads."""

    def __new__(cls, path, data):
        self = super().__new__(cls, path)
        self.data = data
        return self

    def __reduce__(self):
        return FrozenFile, (str(self), self.data)


def frozen_file(path):
    """The file at `path` read once, as a FrozenFile (a FrozenFile is returned as it is); NotRegularFile or OSError
    when it cannot be read."""
    if isinstance(path, FrozenFile):
        return path
    with open_regular(path, 'rb') as f:
        return FrozenFile(path, f.read())


def open_regular(path, mode='rb', error=NotRegularFile, **kwargs):
    """open(path, mode, **kwargs) for reading a regular file, refused with error(one line naming it) for anything else
    (checked by os.stat first; then opened without blocking and checked again with fstat, so a FIFO swapped in between
    is refused too). A FrozenFile opens its frozen bytes."""
    if isinstance(path, FrozenFile):
        f = io.BytesIO(path.data)
        f.name = str(path)
        return f if 'b' in mode else io.TextIOWrapper(f, **kwargs)
    kind = file_kind(os.stat(path).st_mode)                 # A missing file raises what open() would.
    if kind is None and fcntl is None:
        return open(path, mode, **kwargs) # pylint: disable=unspecified-encoding
    if kind is None:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0))
        kind = file_kind(os.fstat(fd).st_mode)
        if kind is None:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            return os.fdopen(fd, mode, **kwargs)
        os.close(fd)
    raise error(_not_regular(path, kind))


def read_bounded(path, limit, error, what, prefix=''):
    """The bytes of the regular file `path`, at most `limit` of them; `error` (an exception class) with one line,
    `prefix` then the path, when it cannot be read or is larger (then it is not `what`)."""
    try:
        with open_regular(path, 'rb', error=error) as f:
            blob = f.read(limit + 1)
    except OSError as err:
        raise error(f'{prefix}{path}: cannot read it ({err.strerror or err})') from None
    if len(blob) > limit:
        raise error(f'{prefix}{path}: larger than {size_text(limit)}; not {what}')
    return blob


def size_text(size):
    """A byte count for people: '34.4 KiB', '4 PiB'."""
    for unit, scale in (('PiB', 1 << 50), ('TiB', 1 << 40), ('GiB', 1 << 30), ('MiB', 1 << 20), ('KiB', 1 << 10)):
        if size >= scale:
            return f'{size / scale:.3g} {unit}'
    return f'{size} bytes'


class BadFile(ValueError):
    """A regular file that is not what its reader needs (read_json_object, read_npy); its message is one line naming
    the file and what is wrong."""


def decode_json(blob, where, error=BadFile, hint='', not_json=None, depth=None, **hooks):
    """The JSON value in `blob` (bytes, or text already decoded); error('{where} not UTF-8 text (...)', 'not JSON
    (...)', 'JSON nested too deeply' (or deeper than `depth` levels, when given: for readers that walk it recursively)
    or 'a number of more than N digits', each followed by `hint`) when it is none. `where` names the file, e.g.
    'labels.json:'; not_json (default: error) is raised for text that is no JSON at all (a reader may skip a line a
    crash cut short); hooks are json.loads' (object_pairs_hook, parse_constant), a ValueError of theirs reported after
    `where`."""
    try:
        value = json.loads(blob if isinstance(blob, str) else blob.decode('utf-8'), **hooks)
    except UnicodeDecodeError as err:
        raise error(f'{where} not UTF-8 text ({err.reason} at byte {err.start}){hint}') from None
    except json.JSONDecodeError as err:
        raise (not_json or error)(f'{where} not JSON ({err.msg} at line {err.lineno} column {err.colno}){hint}') from None
    except RecursionError:
        raise error(f'{where} JSON nested too deeply{hint}') from None
    except ValueError as err:       # Python's limit on the digits int() reads (json.loads parses integers with int()).
        if 'integer string conversion' not in str(err):
            raise error(f'{where} {err}{hint}') from None
        raise error(f'{where} JSON holds a number of more than {_int_digits()} digits{hint}') from None
    problem = None if depth is None else _nesting_problem(value, depth, most=math.inf)
    if problem is not None:
        raise error(f'{where} JSON {problem}{hint}')
    return value


def _int_digits():
    return sys.get_int_max_str_digits() if hasattr(sys, 'get_int_max_str_digits') else 4300


YAML_DEPTH = 64                 # Nesting a YAML file this project reads may have (its readers walk it recursively).


def decode_yaml(blob, where, error=BadFile, hint='', depth=YAML_DEPTH, as_text=False):
    """The value of the YAML text in the bytes `blob`, read with PyYAML's SafeLoader (tags that would build objects
    are refused; nothing is imported); error('{where} not UTF-8 text (...)', 'not YAML (...)', 'key K is given twice',
    'YAML nested too deeply' (deeper than `depth`, or an alias that holds itself) or 'a number of more than N digits',
    each followed by `hint`) when it is none. as_text: every scalar but a null is the text written (YAML 1.1 reads
    1:30 as 90, 017 as 15 and no as false; the reader converts the text as it converts its flags)."""
    import yaml # pylint: disable=import-outside-toplevel
    try:
        text = blob.decode('utf-8')
    except UnicodeDecodeError as err:
        raise error(f'{where} not UTF-8 text ({err.reason} at byte {err.start}){hint}') from None
    try:
        value = yaml.load(text, Loader=_yaml_loader(as_text))          # A SafeLoader: it builds no objects.
    except RecursionError:
        raise error(f'{where} YAML nested too deeply{hint}') from None
    except DuplicateKey as err:
        raise error(f'{where} {err}{hint}') from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as err:
        if 'integer string conversion' in str(err):
            raise error(f'{where} YAML holds a number of more than {_int_digits()} digits{hint}') from None
        raise error(f'{where} not YAML ({" ".join(str(err).split())[:200]}){hint}') from None
    problem = _nesting_problem(value, depth)
    if problem is not None:
        raise error(f'{where} YAML {problem}{hint}')
    return value


class DuplicateKey(ValueError):
    """A YAML mapping names one key twice (PyYAML would keep the last silently)."""


@functools.lru_cache(maxsize=None)
def _yaml_loader(as_text):
    """PyYAML's SafeLoader refusing a key given twice in one mapping (DuplicateKey); as_text: one that resolves no
    plain scalar but null (and the merge key <<), and reads explicit !!bool, !!int, !!float and !!timestamp as text."""
    import yaml # pylint: disable=import-outside-toplevel

    class Loader(yaml.SafeLoader): # pylint: disable=too-many-ancestors
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != 'tag:yaml.org,2002:merge':
                    key = self.construct_object(key_node)
                    first = seen.setdefault(key, key_node)
                    if first is not key_node:
                        lines = sorted({first.start_mark.line + 1, key_node.start_mark.line + 1})
                        raise DuplicateKey(f'key {key!r} is given twice (line{"s" * (len(lines) - 1)} '
                            f'{" and ".join(map(str, lines))})')
            return super().construct_mapping(node, deep)

    if as_text:
        kept = ('tag:yaml.org,2002:null', 'tag:yaml.org,2002:merge')
        Loader.yaml_implicit_resolvers = {first: [(tag, regexp) for tag, regexp in resolvers if tag in kept]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
        for kind in ('bool', 'int', 'float', 'timestamp'):
            Loader.add_constructor(f'tag:yaml.org,2002:{kind}', yaml.SafeLoader.construct_scalar)
    return Loader


def _nesting_problem(value, depth, most=1 << 20):
    """'nested too deeply (...)' when a loaded YAML or JSON value nests deeper than `depth` (a YAML alias that holds
    itself nests without end), 'too large (...)' when its aliases expand to more than `most` values; None when
    neither."""
    stack, seen = [(value, 0)], 0
    while stack:
        node, level = stack.pop()
        seen += 1
        if seen > most:
            return f'too large (its aliases expand to more than {most} values)'
        if isinstance(node, (dict, list, tuple, set)):
            if level >= depth:
                return f'nested too deeply (more than {depth} levels)'
            items = list(node.items()) if isinstance(node, dict) else list(node)
            stack.extend((child, level + 1) for item in items for child in (item if isinstance(node, dict) else (item,)))
    return None


def read_json_object(path, error=BadFile, limit=1 << 20):
    """The JSON object (a dict) in the regular file at `path`, read once; error(one line naming the file and what is
    wrong) when it is larger than `limit` bytes, not UTF-8, not JSON, nested too deeply or no object. OSError when it
    cannot be opened (a missing file raises what open() would)."""
    with open_regular(path, 'rb', error=error) as f:
        blob = f.read(limit + 1)
    if len(blob) > limit:
        raise error(f'{path}: larger than {size_text(limit)}; not a file this program wrote')
    data = decode_json(blob, f'{path}:', error)
    if not isinstance(data, dict):
        kind = {list: 'array', str: 'string', bool: 'boolean', type(None): 'null'}.get(type(data), 'number')
        raise error(f'{path}: holds a JSON {kind}; expected an object')
    return data


def read_npy(path, error=BadFile, mmap_mode=None):
    """The array of a .npy file, never unpickled, checked against the file's size before anything is allocated: error(one
    line naming the file) for an .npz archive or other file, an object array, or a header whose shape and dtype need
    more or fewer bytes than the file holds (a damaged header may claim petabytes). mmap_mode as np.load's (only for a
    path on disk). OSError when it cannot be opened."""
    import numpy as np # pylint: disable=import-outside-toplevel
    fmt = np.lib.format
    with open_regular(path, 'rb', error=error) as f:
        head = f.read(6)
        f.seek(0)
        if head[:4] == b'PK\x03\x04':
            raise error(f'{path}: a .npz archive, not a .npy array; give the .npy file')
        try:
            version = fmt.read_magic(f)
            header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = header(f)
        except (ValueError, EOFError, SyntaxError) as err:
            raise error(f'{path}: cannot be read as a .npy array ({" ".join(str(err).split())[:200]})') from None
        offset, size = f.tell(), f.seek(0, os.SEEK_END)
        if dtype.hasobject:
            raise error(f'{path}: an array of Python objects, which are never loaded (they are pickles)')
        need = math.prod(shape) * dtype.itemsize
        if need != size - offset:
            raise error(f'{path}: its header says {list(shape)} {dtype.name} ({size_text(need)}), but the file holds '
                f'{size - offset} bytes of data; the file is damaged or was cut short')
        if mmap_mode is None:
            f.seek(offset)
            data = np.empty(math.prod(shape), dtype=dtype)
            if f.readinto(data.view(np.uint8)) != need:
                raise error(f'{path}: cut short while it was read; the file is being written, or is damaged')
            return data.reshape(shape, order='F' if fortran else 'C')
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


def json_safe(obj):
    """obj with every nan/inf float replaced by None (JSON has no such numbers; `json.dump` would write `NaN`, which
    strict readers refuse)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
