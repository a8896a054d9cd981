"""EG3D-format pickles written by other source code load, run, and rebuild into this project's classes."""

import json
import shutil
import textwrap

import pytest

from tests.conftest import REPO, shared_file
from tests.helpers.pickles import _make_foreign_checkout, _python, pickle_golden_networks


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
