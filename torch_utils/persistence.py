"""Persistent classes: pickles that carry their defining module's source, so they load without that source (EG3D format v6).

Decorate a class with `@persistent_class`. Pickling an instance then stores the full source text of the
module that defined the class, the class name and the instance state; unpickling executes that text as a
fresh module, takes the class from it and restores the state without calling `__init__`. This is how
NVIDIA's EG3D/StyleGAN pickles are written, and it means that LOADING A PICKLE EXECUTES CODE: load only
files you trust (see `training.legacy.load_network_pkl`, which refuses unless told otherwise).
"""

import copy
import inspect
import io
import pickle
import sys
import types
import uuid

import dnnlib

#----------------------------------------------------------------------------

_version            = 6         # Format version of the pickled meta dict; EG3D writes 6.
_decorators         = set()     # Every decorated class (also those rebuilt from embedded sources).
_import_hooks       = []        # Callables meta -> meta, applied before reconstruction.
_module_to_src_dict = dict()    # module -> source text
_src_to_module_dict = dict()    # source text -> module

#----------------------------------------------------------------------------

def persistent_class(orig_class):
    """Class decorator: instances pickle with their module source and remember their constructor arguments.

    The returned subclass records `init_args` / `init_kwargs` (copies, so a network can be rebuilt from them)
    and overrides `__reduce__` so the pickle holds {type, version, module_src, class_name, state}.
    """
    assert isinstance(orig_class, type)
    if is_persistent(orig_class):
        return orig_class

    assert orig_class.__module__ in sys.modules
    orig_module = sys.modules[orig_class.__module__]
    orig_module_src = _module_to_src(orig_module)

    class Decorator(orig_class):
        _orig_module_src = orig_module_src
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            record = dict(args=list(args), kwargs=dict(kwargs))
            _check_pickleable(record)
            record = copy.deepcopy(record)
            self._init_args = record['args']
            self._init_kwargs = record['kwargs']

        @property
        def init_args(self):
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self):
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            if fields[0] is not _reconstruct_persistent_obj:
                meta = dict(type='class', version=_version, module_src=self._orig_module_src,
                            class_name=self._orig_class_name, state=fields[2])
                fields[0] = _reconstruct_persistent_obj
                fields[1] = (meta,)
                fields[2] = None
            return tuple(fields)

    Decorator.__name__ = orig_class.__name__
    Decorator.__qualname__ = orig_class.__qualname__
    Decorator.__module__ = orig_class.__module__
    Decorator.__doc__ = orig_class.__doc__
    _decorators.add(Decorator)
    return Decorator

#----------------------------------------------------------------------------

def is_persistent(obj):
    """True for a persistent class or an instance of one."""
    try:
        if obj in _decorators:
            return True
    except TypeError:
        pass
    return type(obj) in _decorators


def import_hook(hook):
    """Register `hook(meta) -> meta`, run on every persistent object before it is rebuilt.

    Use it to patch old embedded sources (e.g. `meta.module_src = meta.module_src.replace(...)`).
    """
    assert callable(hook)
    _import_hooks.append(hook)

#----------------------------------------------------------------------------

def _reconstruct_persistent_obj(meta):
    """Unpickling entry point: execute the embedded module source, take the class, restore the state."""
    meta = dnnlib.EasyDict(meta)
    meta.state = dnnlib.EasyDict(meta.state)
    for hook in _import_hooks:
        meta = hook(meta)
        assert meta is not None, 'a persistence import hook returned None'

    if meta.version != _version:
        raise ValueError(f'persistent object of format version {meta.version}; this loader reads version {_version}')
    if meta.type != 'class':
        raise ValueError(f'unknown persistent object type "{meta.type}"')
    module = _src_to_module(meta.module_src)
    if meta.class_name not in module.__dict__:
        raise ValueError(f'the embedded module source defines no class "{meta.class_name}"')
    decorator_class = persistent_class(module.__dict__[meta.class_name])
    obj = decorator_class.__new__(decorator_class)
    setstate = getattr(obj, '__setstate__', None)
    if callable(setstate):
        setstate(meta.state)
    else:
        obj.__dict__.update(meta.state)
    return obj


def _module_to_src(module):
    """Source text of a module (cached; modules built from embedded sources return that text)."""
    src = _module_to_src_dict.get(module, None)
    if src is None:
        src = inspect.getsource(module)
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
    return src


def _src_to_module(src):
    """Execute source text once as a new anonymous module; the same text always maps to the same module."""
    module = _src_to_module_dict.get(src, None)
    if module is None:
        module_name = '_imported_module_' + uuid.uuid4().hex
        module = types.ModuleType(module_name)
        sys.modules[module_name] = module
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
        exec(src, module.__dict__) # pylint: disable=exec-used
    return module

#----------------------------------------------------------------------------

def _check_pickleable(obj):
    """Raise TypeError unless `obj` (constructor arguments) pickles without non-persistent custom classes."""
    def recurse(obj):
        if isinstance(obj, (list, tuple, set)):
            return [recurse(x) for x in obj]
        if isinstance(obj, dict):
            return [[recurse(x), recurse(y)] for x, y in obj.items()]
        if isinstance(obj, (str, int, float, bool, bytes, bytearray)) or obj is None:
            return None
        if f'{type(obj).__module__}.{type(obj).__name__}' in ('numpy.ndarray', 'torch.Tensor', 'torch.nn.parameter.Parameter'):
            return None
        if is_persistent(obj):
            return None
        return obj
    with io.BytesIO() as f:
        try:
            pickle.dump(recurse(obj), f)
        except Exception as err:
            raise TypeError(f'constructor arguments of a persistent class must be plain data or persistent objects: {err}') from err
