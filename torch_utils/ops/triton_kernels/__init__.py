"""Triton kernels for CUDA tensors (and Triton's CPU interpreter in tests); `wants_triton` is the one dispatch rule."""

import importlib.util
import os
import warnings

#----------------------------------------------------------------------------
# CUDA tensors take an op's Triton kernel when triton imports, EG3D_RLHF_CUSTOM_OPS is not '0' and the op says it
# supports the case; otherwise the reference path, with at most one warning per op. CPU tensors never come here
# (they take the compiled C++ plugins). Kernels run on CPU tensors only under TRITON_INTERPRET=1 (the tests').

_available = None               # Cached: does `import triton` work?
_warned = set()                 # Ops that already warned about falling back.


def available():
    """True when triton imports and custom ops are not switched off (EG3D_RLHF_CUSTOM_OPS=0)."""
    global _available
    if os.environ.get('EG3D_RLHF_CUSTOM_OPS', '1') == '0':
        return False
    if _available is None:
        try:
            _available = importlib.util.find_spec('triton') is not None and importlib.import_module('triton') is not None
        except Exception: # pylint: disable=broad-except
            _available = False
    return _available


def is_cuda(x):
    """The device check dispatch uses (a function, so CPU-only tests can mock it)."""
    return x.device.type == 'cuda'


def wants_triton(op, x, impl, supported=True, reason=''):
    """Should op `op` run its Triton kernel on tensor `x` under `impl` ('cuda' asks for kernels, 'ref' refuses)?

    `supported` is the op's own verdict on the case (dtype, sizes, options); when a CUDA tensor with triton available
    cannot be served, warn once per op with `reason` and return False.
    """
    if impl == 'ref' or not is_cuda(x) or not available():
        return False
    if not supported:
        if op not in _warned:
            _warned.add(op)
            warnings.warn(f'Triton {op}: {reason or "case not supported"}; using the reference implementation.',
                RuntimeWarning, stacklevel=3)
        return False
    return True
