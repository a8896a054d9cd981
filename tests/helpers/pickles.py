"""EG3D pickles from elsewhere: torch-1.11-era module state, and a foreign checkout (same packages, other source text)."""

import ast
import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO

#----------------------------------------------------------------------------
# Pickled module state.

def eg3d_module_state(modules, **attrs):
    """An nn.Module instance __dict__ as a torch-1.11-era EG3D pickle carries it, plus the given attributes."""
    return dict(training=False, _parameters={}, _buffers={}, _non_persistent_buffers_set=set(),
                _backward_hooks={}, _is_full_backward_hook=None, _forward_hooks={}, _forward_pre_hooks={},
                _state_dict_hooks={}, _load_state_dict_pre_hooks={}, _modules=modules, **attrs)


def unpickle_like(cls, state):
    """What unpickling does: cls.__new__, then __setstate__ (nn.Module's fills in hook dicts); __init__ never runs."""
    obj = cls.__new__(cls)
    obj.__setstate__(state)
    return obj

#----------------------------------------------------------------------------
# A foreign checkout.

PACKAGES = ('dnnlib', 'torch_utils', 'training')


def _rewrite(src):
    """Other source code with the same behaviour: re-rendered from the AST, docstrings dropped, a marker added."""
    tree = ast.parse(src)
    for node in ast.walk(tree):
        body = getattr(node, 'body', None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], 'value', None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree) + '\n\nFOREIGN_CHECKOUT = True\n'


def _make_foreign_checkout(root):
    """A separate checkout with the same package names (as NVIDIA's eg3d/ is) but different source text."""
    for package in PACKAGES:
        for folder, _dirs, files in os.walk(os.path.join(REPO, package)):
            if '__pycache__' in folder:
                continue
            dst = os.path.join(root, os.path.relpath(folder, REPO))
            os.makedirs(dst, exist_ok=True)
            for name in files:
                if name.endswith('.py'):
                    with open(os.path.join(folder, name)) as f:
                        src = f.read()
                    with open(os.path.join(dst, name), 'w') as f:
                        f.write(_rewrite(src))


def pickle_golden_networks(checkout, golden_path, pkl, resolution, cwd):
    """In a process that imports only `checkout`: its TriPlaneGenerator and DualDiscriminator from a golden file's
    kwargs and weights, pickled EG3D-style to `pkl` (G, D, G_ema, training_set_kwargs.resolution)."""
    _python(textwrap.dedent(f'''
        import pickle, torch, training
        assert training.__file__.startswith({checkout!r})
        from training.triplane import TriPlaneGenerator
        from training.dual_discriminator import DualDiscriminator
        g = torch.load({golden_path!r}, weights_only=False)
        G = TriPlaneGenerator(**g['G_init_kwargs']).eval().requires_grad_(False)
        G.load_state_dict(g['G_state'], strict=True)
        D = DualDiscriminator(**g['D_init_kwargs']).eval().requires_grad_(False)
        D.load_state_dict(g['D_state'], strict=True)
        with open({pkl!r}, 'wb') as f:
            pickle.dump(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=dict(resolution={resolution})), f)
    '''), pythonpath=checkout, cwd=cwd)


def _python(code, pythonpath, cwd):
    """Run `code` in a fresh Python importing from `pythonpath`, no plugins built; assert it succeeded, return stdout."""
    env = dict(os.environ, PYTHONPATH=pythonpath, EG3D_RLHF_CUSTOM_OPS='0')
    result = subprocess.run([sys.executable, '-c', code], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout

#----------------------------------------------------------------------------
