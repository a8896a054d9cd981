"""Snapshots of the paper's EG3D fork (e.g. the released run01446 snapshot 002068) load with load_network_pkl(trust=True)
and run in the tools: a pickle whose embedded source imports what the fork's modules import, and calls what they call."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.conftest import shared_file
from tests.helpers.pickles import _make_foreign_checkout, pickle_golden_networks

# The imports of the fork's persistent modules (apmoore499/eg3d-rlhf-geometry, eg3d/training/*.py at 794da4b), module
# paths and names only. Unpickling a snapshot executes each embedded module, so every one of these must resolve in
# this repository: README.md ("Loading EG3D network pickles") lists them.
FORK_IMPORTS = {
    'training/triplane.py': [
        'import dnnlib',
        'from torch_utils import persistence',
        'from training.networks_stylegan2 import Generator as StyleGAN2Backbone',
        'from training.volumetric_rendering.ray_sampler import RaySampler',
        'from training.volumetric_rendering.renderer import ImportanceRenderer',
        'from training.networks_stylegan2 import FullyConnectedLayer'],
    'training/networks_stylegan2.py': [
        'from torch_utils import misc, persistence',
        'from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d'],
    'training/networks_stylegan3.py': [
        'import scipy.optimize',
        'import scipy.signal',
        'from torch_utils import misc, persistence',
        'from torch_utils.ops import bias_act, conv2d_gradfix, filtered_lrelu'],
    'training/superresolution.py': [
        'from torch_utils import misc, persistence',
        'from torch_utils.ops import upfirdn2d',
        'from training.networks_stylegan2 import Conv2dLayer, SynthesisBlock, SynthesisLayer, ToRGBLayer',
        'from training.networks_stylegan3 import SynthesisLayer as AFSynthesisLayer'],
    'training/dual_discriminator.py': [
        'from torch_utils import persistence',
        'from torch_utils.ops import upfirdn2d',
        'from training.networks_stylegan2 import DiscriminatorBlock, DiscriminatorEpilogue, MappingNetwork'],
}

# The fork's TriPlaneGenerator.sample/sample_mixed take rgbs_thru_sigmoid and pass it to the renderer's run_model,
# which (not persistent in EG3D) unpickles as this repository's ImportanceRenderer.
FORK_SAMPLE_MIXED = ('def sample_mixed(self, coordinates, directions, ws, truncation_psi=1, truncation_cutoff=None, '
    'update_emas=False, **synthesis_kwargs):',
    'def sample_mixed(self, coordinates, directions, ws, truncation_psi=1, truncation_cutoff=None, '
    'update_emas=False, rgbs_thru_sigmoid=True, **synthesis_kwargs):')
FORK_RUN_MODEL = ('self.renderer.run_model(planes, self.decoder, coordinates, directions, self.rendering_kwargs)',
    'self.renderer.run_model(planes, self.decoder, coordinates, directions, self.rendering_kwargs, '
    'rgbs_thru_sigmoid=rgbs_thru_sigmoid)')


def make_fork_checkout(root):
    """A foreign checkout (tests/test_foreign_pickle.py) changed the way the fork differs from EG3D."""
    _make_foreign_checkout(root)
    for name, lines in FORK_IMPORTS.items():
        path = os.path.join(root, name)
        with open(path) as f:
            src = f.read()
        if name == 'training/triplane.py':
            for old, new in (FORK_SAMPLE_MIXED, FORK_RUN_MODEL):
                assert src.count(old) == 1, f'{name} no longer reads "{old}"; update this test'
                src = src.replace(old, new)
        with open(path, 'w') as f:
            f.write('\n'.join(lines) + '\nFORK_CHECKOUT = True\n' + src)


@pytest.fixture(scope='module')
def fork_pkl(tmp_path_factory):
    """A snapshot pickled by the fork-like checkout (golden FFHQ-512 structure and weights), that checkout deleted."""
    golden_path = shared_file('eg3d_reference', 'golden_ffhq512_small.pt')
    tmp = tmp_path_factory.mktemp('fork')
    checkout, pkl = tmp / 'eg3d', tmp / 'network-snapshot-002068.pkl'
    make_fork_checkout(str(checkout))
    pickle_golden_networks(str(checkout), golden_path, str(pkl), resolution=512, cwd=str(tmp))
    shutil.rmtree(checkout)
    return str(pkl), golden_path

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_fork_snapshot_loads_samples_and_rebuilds(fork_pkl):
    from training import legacy
    from training.triplane import TriPlaneGenerator
    pkl, golden_path = fork_pkl
    with pytest.raises(legacy.UntrustedPickleError):
        legacy.load_network_pkl(pkl)
    data = legacy.load_network_pkl(pkl, trust=True)
    G, D = data['G_ema'], data['D']
    for net in (G, D, G.backbone, G.superresolution):
        assert sys.modules[type(net).__module__].FORK_CHECKOUT and not isinstance(net, TriPlaneGenerator)
    # EG3D's non-persistent parts are pickled by name, so they are this repository's: the fork's sample() reaches
    # our run_model with its rgbs_thru_sigmoid argument.
    assert type(G.renderer).__module__ == 'training.volumetric_rendering.renderer'
    assert type(G.decoder).__module__ == 'training.triplane'
    g = torch.load(golden_path, weights_only=False)
    z, c, coords = g['inputs']['z'], g['inputs']['c'], g['inputs']['coords']
    ref = g['outputs']
    with torch.no_grad():
        out = G.sample(coords, torch.zeros_like(coords), z, c, noise_mode='const')
        raw = G.sample(coords, torch.zeros_like(coords), z, c, noise_mode='const', rgbs_thru_sigmoid=False)
    scale = ref['sample_sigma'].abs().max()
    for sigma in (out['sigma'], raw['sigma']):
        assert float((sigma - ref['sample_sigma']).abs().max() / scale) < 1e-5
    np.testing.assert_allclose(out['rgb'].numpy(), ref['sample_rgb'].numpy(), atol=1e-5)
    np.testing.assert_allclose((torch.sigmoid(raw['rgb']) * 1.002 - 0.001).numpy(), out['rgb'].numpy(), atol=1e-6)
    assert float((raw['rgb'] - out['rgb']).abs().max()) > 1e-2      # Raw features are not the squashed ones.
    assert isinstance(legacy.rebuild_network(G), TriPlaneGenerator)  # Resuming from it builds this project's class.


@pytest.mark.slow
def test_fork_snapshot_runs_in_the_tools(fork_pkl, tmp_path):
    from eg3d_rlhf.cli import load_generator
    from eg3d_rlhf.geometry.sigma import CubeGrid
    from tools import extract_sigma, sample_bank, shape_report
    pkl, _ = fork_pkl
    generator = load_generator(pkl, torch.device('cpu'))
    sigma = generator.field([0]).sample_grid(CubeGrid(12))[0].numpy()
    assert sigma.shape == (12, 12, 12) and np.isfinite(sigma).all() and sigma.std() > 0
    common = ['--network', pkl, '--trust-pickle', '--device', 'cpu']
    result = CliRunner().invoke(extract_sigma.main, common + ['--seeds', '0', '--res', '12', '--trunc', '0.7',
        '--level', str(np.median(sigma)),
        '--mesh-convention', 'published', '--mrc', '--outdir', str(tmp_path / 'x')])
    assert result.exit_code == 0, result.output + repr(result.exception)
    np.testing.assert_allclose(np.load(tmp_path / 'x' / 'seed000000.npy'), sigma, atol=1e-5)
    assert (tmp_path / 'x' / 'seed000000.ply').stat().st_size > 200 and (tmp_path / 'x' / 'seed000000.mrc').is_file()
    result = CliRunner().invoke(shape_report.main, common + ['--seeds', '0', '--res', '12', '--level', '0',
        '--previews', '0', '--outdir', str(tmp_path / 'r')])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads((tmp_path / 'r' / 'report.json').read_text())['num_seeds'] == 1
    result = CliRunner().invoke(sample_bank.main, common + ['--seeds', '0', '--res', '16', '--preview-res', '16',
        '--outdir', str(tmp_path / 'b')])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (tmp_path / 'b' / 'seed000000' / 'meta.json').is_file()

#----------------------------------------------------------------------------
