"""EG3D-format pickles written by other source code load, run, and rebuild into this project's classes."""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, shared_file

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
    env = dict(os.environ, PYTHONPATH=pythonpath, EG3D_RLHF_CUSTOM_OPS='0')
    result = subprocess.run([sys.executable, '-c', code], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


PIN_RAND = '''
import torch
torch.rand_like = lambda x, *a, **k: torch.full_like(x, 0.5)
_full = torch.full
def _rand(*size, **k):
    size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
    k.pop('generator', None)
    return _full(size, 0.5, **k)
torch.rand = _rand
'''


@pytest.mark.slow
@pytest.mark.parametrize('golden_name', ['golden_ffhq512_small.pt', 'golden_shapenet128_small.pt'])
def test_foreign_pickle_loads_runs_and_rebuilds(tmp_path, golden_name):
    golden_path = shared_file('eg3d_reference', golden_name)
    full_render = 'shapenet' in golden_name
    foreign = tmp_path / 'foreign_checkout'
    _make_foreign_checkout(str(foreign))
    pkl = tmp_path / 'foreign-snapshot.pkl'

    # 1. The foreign checkout builds the networks from the golden kwargs and pickles them, EG3D-style.
    pickle_golden_networks(str(foreign), golden_path, str(pkl), resolution=64, cwd=str(tmp_path))
    shutil.rmtree(foreign)

    # 2. Only this repository is importable: load, run forward, rebuild with our classes, run again.
    out = _python(PIN_RAND + textwrap.dedent(f'''
        import json, sys
        from training import legacy
        from training.triplane import TriPlaneGenerator
        from training.dual_discriminator import DualDiscriminator
        g = torch.load({golden_path!r}, weights_only=False)
        data = legacy.load_network_pkl({str(pkl)!r}, trust=True)
        G, D = data['G_ema'], data['D']
        assert sys.modules[type(G).__module__].FOREIGN_CHECKOUT and sys.modules[type(D).__module__].FOREIGN_CHECKOUT
        assert not isinstance(G, TriPlaneGenerator)
        z, c, coords, ref = g['inputs']['z'], g['inputs']['c'], g['inputs']['coords'], g['outputs']
        def rel(a, b):              # Relative to the reference's scale, as tests/test_triplane.py's assert_rel.
            return float((a - b).abs().max() / b.abs().max().clamp(min=1e-6))
        def errors(G, D):
            errs = {{}}
            with torch.no_grad():
                if {full_render}:   # The 512-pixel FFHQ render is too slow for the suite; NVIDIA's own check covered it.
                    out = G(z, c, neural_rendering_resolution=32, noise_mode='const')
                    errs.update({{k: float((out[k] - ref[k]).abs().max()) for k in ('image', 'image_raw', 'image_depth')}})
                out = G.sample(coords, torch.zeros_like(coords), z, c, noise_mode='const')
                errs.update(sample_sigma=rel(out['sigma'], ref['sample_sigma']), sample_rgb=rel(out['rgb'], ref['sample_rgb']))
                logits = D(dict(image=ref['d_in_image'], image_raw=ref['d_in_image_raw']), c)
                errs.update(d_logits=rel(logits, ref['d_logits']))
            return errs
        for tag, (G_, D_) in [('foreign', (G, D)), ('rebuilt', (legacy.rebuild_network(G), legacy.rebuild_network(D)))]:
            print(tag, type(G_).__module__, json.dumps(errors(G_, D_)))
    '''), pythonpath=REPO, cwd=str(tmp_path))

    lines = dict(line.split(' ', 1) for line in out.strip().splitlines())
    assert set(lines) == {'foreign', 'rebuilt'}
    assert lines['foreign'].startswith('_imported_module_')
    assert lines['rebuilt'].startswith('training.triplane ')
    for tag in lines:
        errs = json.loads(lines[tag].split(' ', 1)[1])
        assert len(errs) == (6 if full_render else 3), errs
        for key, err in errs.items():
            assert err < (1e-4 if key.startswith('image') else 1e-5), (tag, key, err)   # The README's tolerances.
