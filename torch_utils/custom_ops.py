"""Build-and-load machinery for optional C++/CUDA plugins; any failure falls back to the reference ops."""

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import sys
import uuid
import warnings

import torch

import dnnlib

#----------------------------------------------------------------------------
# Global options.

verbosity = 'brief'     # How much to print while setting up a plugin: 'none', 'brief' or 'full'.

#----------------------------------------------------------------------------
# Cache key: contents of every source/header file plus the GPU that will run the code.

def _cpu_tag():
    """'cpu-' and a short digest of this CPU's model and instruction-set flags: a build made with -march=native must
    not be loaded by another CPU that shares the cache folder."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as fp:
            info = [line for line in fp.read().splitlines() if line.split(':')[0].strip() in ('model name', 'flags')]
    except OSError:
        info = []
    import platform # pylint: disable=import-outside-toplevel
    text = '\n'.join(sorted(set(info))) or platform.processor() or platform.machine()
    return 'cpu-' + hashlib.md5(text.encode('utf-8')).hexdigest()[:8]


def _device_tag():
    """The CPU's tag, and the mangled name of the current CUDA device where there is one."""
    if not torch.cuda.is_available():
        return _cpu_tag()
    return _cpu_tag() + '-' + re.sub('[^a-z0-9_-]', '-', torch.cuda.get_device_name().lower())


def _source_digest(files):
    """MD5 over the base names and bytes of `files` (order-independent)."""
    md5 = hashlib.md5()
    for path in sorted(files, key=os.path.basename):
        md5.update(os.path.basename(path).encode('utf-8') + b'\0')
        with open(path, 'rb') as fp:
            md5.update(fp.read())
        md5.update(b'\0')
    return md5.hexdigest()


def build_dir(module_name, files, build_kwargs=None):
    """Cache folder that holds (or will hold) the build of `module_name` from exactly these files on this device;
    non-empty `build_kwargs` (compiler flags) are part of the key too."""
    digest = _source_digest(files)
    if build_kwargs:
        digest = hashlib.md5((digest + repr(sorted(build_kwargs.items()))).encode('utf-8')).hexdigest()
    return dnnlib.make_cache_dir_path('torch_extensions', module_name, f'{digest}-{_device_tag()}')


def _stage_sources(files, target_dir):
    """Copy `files` into `target_dir` once, atomically, so concurrent processes never see a half-written folder."""
    if os.path.isdir(target_dir):
        return
    parent = os.path.dirname(target_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = os.path.join(parent, f'srctmp-{uuid.uuid4().hex}')
    os.makedirs(tmp_dir)
    for path in files:
        shutil.copyfile(path, os.path.join(tmp_dir, os.path.basename(path)))
    try:
        os.replace(tmp_dir, target_dir)
    except OSError:             # Another process got there first.
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if not os.path.isdir(target_dir):
            raise

#----------------------------------------------------------------------------
# Compiled CPU kernels: flags and when an op should use them.

cpu_build_kwargs = dict(                # at::parallel_for needs OpenMP; no FP traps or errno lets loops with selects vectorise.
    extra_cflags=['-O3', '-fopenmp', '-fno-trapping-math', '-fno-math-errno'], extra_ldflags=['-fopenmp'],
    is_python_module=False)             # Operator libraries (TORCH_LIBRARY): no pybind11 or Python headers to compile.

def wants_cpu_plugin(x, impl, cpu_default):
    """Should an op run its compiled CPU kernel on `x`? impl='cpp' asks for it, impl='cuda' follows the op's
    measured `cpu_default`, impl='ref' never; CUDA tensors (ops/triton_kernels serves them) and other dtypes than
    float32/float64 never."""
    assert impl in ['ref', 'cuda', 'cpp']
    if impl == 'ref' or x.device.type != 'cpu' or x.dtype not in (torch.float32, torch.float64):
        return False
    return impl == 'cpp' or cpu_default

#----------------------------------------------------------------------------
# A build that loaded once is loaded again without torch.utils.cpp_extension (0.1 s to import, and a ninja run to
# learn that nothing changed: a tenth of a small tool's whole process). After a successful build and load, the folder
# gets LOADED_MARKER: the library's file name, size and mtime, and torch's and Python's versions (the key of the folder
# holds neither: a build against another torch's headers goes the long way, where ninja sees them changed). A marker
# that does not match in every field, or a library that does not import, sends the call the long way as before.

LOADED_MARKER = 'loaded.json'

def _marker_of(path, module_name):
    st = os.stat(path)
    return dict(module=module_name, file=os.path.basename(path), size=st.st_size, mtime_ns=st.st_mtime_ns,
        torch=torch.__version__, python=sys.version)


def _load_library(path, name, python_module):
    """The plugin in the library `path`: its Python module, or (an operator library, is_python_module=False) the
    namespace torch.ops.<name> its TORCH_LIBRARY block registers."""
    if not python_module:
        torch.ops.load_library(path)
        return getattr(torch.ops, name)
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    return module


def _load_marked(target_dir, python_module=True):
    """The plugin an earlier process built and loaded in target_dir, or None."""
    try:
        with open(os.path.join(target_dir, LOADED_MARKER), encoding='utf-8') as f:
            marker = json.load(f)
        path = os.path.join(target_dir, os.path.basename(marker['file']))
        if _marker_of(path, marker['module']) != marker:
            return None
        return _load_library(path, marker['module'], python_module)
    except (OSError, ValueError, KeyError, TypeError, ImportError, RuntimeError):
        return None


def _mark_loaded(target_dir, path, name):
    """Write LOADED_MARKER for the library `path` that cpp_extension built and loaded from target_dir as `name`
    (atomically; best effort)."""
    if not path or os.path.dirname(os.path.abspath(path)) != os.path.abspath(target_dir) or not os.path.isfile(path):
        return
    with contextlib.suppress(OSError):
        with dnnlib.util.atomic_write(os.path.join(target_dir, LOADED_MARKER), 'w', encoding='utf-8') as f:
            json.dump(_marker_of(path, name), f)


def _library_suffix():
    """The file ending cpp_extension gives a library that is not a Python module."""
    return '.pyd' if sys.platform == 'win32' else '.so'


def _files(sources, headers, source_dir):
    """Paths of the sources, then the headers."""
    files = list(sources) + list(headers or [])
    return files if source_dir is None else [os.path.join(source_dir, name) for name in files]


def is_built(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """True when get_plugin with these arguments would load an earlier build at once (its marker matches)."""
    try:
        target_dir = build_dir(module_name, _files(sources, headers, source_dir), build_kwargs)
        with open(os.path.join(target_dir, LOADED_MARKER), encoding='utf-8') as f:
            marker = json.load(f)
        return _marker_of(os.path.join(target_dir, os.path.basename(marker['file'])), marker['module']) == marker
    except (OSError, ValueError, KeyError, TypeError):
        return False

#----------------------------------------------------------------------------
# First builds side by side. Each plugin compiles one source file on one core (14-21 s on the 2-core EPYC: the sources
# include ATen and torch/library.h, not torch/extension.h, whose C++ frontend took 25 s of parsing alone), one
# after another as the ops are first called. A command that knows which ops it will call starts their first builds
# together in child processes, one get_plugin each, and does its own first-use work (rendering a dataset, say)
# meanwhile; its ops then load the finished builds.

BUILD_CHILD = ('import json, sys; from torch_utils import custom_ops; '
    'sys.exit(0 if custom_ops.get_plugin(**json.loads(sys.argv[1])) else 1)')

@contextlib.contextmanager
def building_in_background(plugins):
    """Build the plugins (get_plugin's arguments, as the ops' PLUGIN) that this process has not asked for and that are
    not built yet, each in a child process, while the body runs; wait for them on leaving. A child that fails leaves
    the op to its own get_plugin, which warns and falls back as before. Nothing starts when plugins are off or all are
    built."""
    import subprocess # pylint: disable=import-outside-toplevel
    todo = [] if os.environ.get('EG3D_RLHF_CUSTOM_OPS', '1') == '0' else \
        [p for p in plugins if p['module_name'] not in _cached_plugins and not is_built(**p)]
    if todo and verbosity != 'none':
        names = ', '.join(p['module_name'] for p in todo)
        print(f'Compiling {names} side by side, once (later runs reuse the builds)...', flush=True)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))              # The folder holding torch_utils.
    path = os.pathsep.join([root] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    children = [subprocess.Popen([sys.executable, '-c', BUILD_CHILD, json.dumps(p)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=path)) for p in todo]
    try:
        yield
    finally:
        for child in children:
            child.wait()

#----------------------------------------------------------------------------
# Main entry point.

_cached_plugins = dict()        # module_name => loaded module, or None after a failure (so we warn only once).

def _one_line(err):
    """Short, single-line reason for a warning: the first compiler 'error' line if there is one, else the first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    errors = [line for line in lines[1:] if 'error' in line.lower()]
    text = f'{type(err).__name__}: {(errors or lines or [""])[0]}'
    return text if len(text) <= 200 else text[:197] + '...'


@contextlib.contextmanager
def _build_lock(target_dir):
    """Hold an OS lock on a staged build folder while its plugin is built and loaded. torch's own `lock` file stays
    behind when a build is killed, and every later process would wait on it forever; the OS lock dies with its
    process, so whoever holds it knows such a file is stale and removes it."""
    try:
        import fcntl # pylint: disable=import-outside-toplevel
    except ImportError:         # Not on POSIX: torch's lock file alone, as before.
        yield
        return
    with open(os.path.join(target_dir, 'build.flock'), 'a', encoding='utf-8') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            stale = os.path.join(target_dir, 'lock')
            if os.path.exists(stale):
                os.remove(stale)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Compile (once per source digest and device) and load a torch extension; return None if that is impossible.

    `sources` and `headers` are file names, relative to `source_dir` when given. They are copied into
    `<cache>/torch_extensions/<module_name>/<digest>-<device>/` and built there with ninja via
    `torch.utils.cpp_extension.load(**build_kwargs)`; later calls (and later processes) reuse that build.
    Any failure issues one warning per module name and returns None, so callers use their reference path.
    Setting the environment variable EG3D_RLHF_CUSTOM_OPS=0 turns plugins off silently.
    """
    assert verbosity in ['none', 'brief', 'full']
    if module_name in _cached_plugins:
        return _cached_plugins[module_name]
    if os.environ.get('EG3D_RLHF_CUSTOM_OPS', '1') == '0':
        return None

    files = _files(sources, headers, source_dir)
    source_paths = files[:len(sources)]
    if verbosity == 'full':
        print(f'Setting up PyTorch plugin "{module_name}"...')
    elif verbosity == 'brief':
        print(f'Setting up PyTorch plugin "{module_name}"... ', end='', flush=True)

    try:
        assert len(set(os.path.basename(path) for path in files)) == len(files), 'source file names must be unique'
        target_dir = build_dir(module_name, files, build_kwargs)
        python_module = build_kwargs.get('is_python_module', True)
        module = _load_marked(target_dir, python_module)
        if module is None:
            if verbosity != 'none':                     # The first build.
                print(f'compiling it once (about 20 s on a CPU core; later runs reuse {target_dir})... ', end='',
                    flush=True)
            import torch.utils.cpp_extension # pylint: disable=import-outside-toplevel
            _stage_sources(files, target_dir)
            with _build_lock(target_dir):
                staged = [os.path.join(target_dir, os.path.basename(path)) for path in source_paths]
                # One extension name per build folder: torch counts a known name built in another folder (a test's
                # own cache, say) as a changed extension and rebuilds it under a new version in the folder it is given.
                unique_name = f'{module_name}_{hashlib.md5(target_dir.encode("utf-8")).hexdigest()[:8]}'
                module = torch.utils.cpp_extension.load(name=unique_name, sources=staged, build_directory=target_dir,
                    verbose=(verbosity == 'full'), **build_kwargs)
                if not python_module:                   # load() put the library's operators in torch.ops.
                    module = getattr(torch.ops, unique_name)
                    path = os.path.join(target_dir, unique_name + _library_suffix())
                else:
                    path = getattr(module, '__file__', None)
                _mark_loaded(target_dir, path, unique_name)
    except Exception as err: # pylint: disable=broad-except
        if verbosity == 'brief':
            print('Failed!')
        warnings.warn(f'Custom op "{module_name}" unavailable ({_one_line(err)}); using the reference implementation.',
            RuntimeWarning, stacklevel=2)
        module = None
    else:
        if verbosity == 'full':
            print(f'Done setting up PyTorch plugin "{module_name}".')
        elif verbosity == 'brief':
            print('Done.')

    _cached_plugins[module_name] = module
    return module

#----------------------------------------------------------------------------
