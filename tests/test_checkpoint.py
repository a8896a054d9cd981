"""The bundled demo generator (checkpoints/synthetic-heads64.pkl): it loads, renders heads and its sigma makes one head."""

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf import cli as cli_utils
from eg3d_rlhf.generators import registry
from eg3d_rlhf.generators.eg3d import TriPlaneField
from eg3d_rlhf.geometry import mesh
from eg3d_rlhf.geometry.sigma import CubeGrid, eg3d_border_pad, flip_and_pad
from tests.conftest import REPO
from tools import bundle_checkpoint, generator_demo
from training import legacy
from training.camera_utils import orbit_camera_label

BUNDLED = os.path.join(REPO, 'checkpoints', 'synthetic-heads64.pkl')


@pytest.fixture(scope='module')
def snapshot():
    return legacy.load_network_pkl(BUNDLED, trust=True)


def test_bundled_snapshot_is_small_and_complete(snapshot):
    assert os.path.getsize(BUNDLED) < 20 * 2**20
    assert {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'} <= set(snapshot)
    G = snapshot['G_ema']
    assert type(G).__name__ == 'TriPlaneGenerator' and G.init_kwargs['plane_resolution'] == 64
    assert G.img_resolution == 64 and G.rendering_kwargs['white_back'] is True


@torch.no_grad()
def test_bundled_generator_renders_a_head_on_white(snapshot):
    G = snapshot['G_ema']
    c = orbit_camera_label(G.rendering_kwargs)
    z = torch.from_numpy(np.random.RandomState(0).randn(2, G.z_dim)).float()
    img = G(z, c.expand(2, -1), truncation_psi=0.7, noise_mode='const')['image']
    assert img.shape == (2, 3, 64, 64)
    corners = torch.cat([img[:, :, :6, :6].flatten(), img[:, :, :6, -6:].flatten()])
    centre = img[:, :, 24:40, 24:40]
    assert corners.mean() > 0.8                                  # Background: white is +1.
    assert centre.mean() < 0.6 and centre.std() > 0.02            # A face, not background.
    assert not torch.allclose(img[0], img[1], atol=1e-2)          # Seeds differ.


@torch.no_grad()
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_bundled_generator_sigma_is_one_head(snapshot, seed):
    G = snapshot['G_ema']
    grid = CubeGrid(64, cube_length=G.rendering_kwargs['box_warp'])
    c = orbit_camera_label(G.rendering_kwargs)
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    volume = TriPlaneField.from_latents(G, z, c, truncation_psi=0.7).sample_grid(grid)[0].numpy()
    volume = flip_and_pad(volume, flip=False, pad=eg3d_border_pad(grid.resolution))
    verts, faces = mesh.extract_mesh(volume, grid, level=10)
    # One head dominates. (Measured at 96^3 for seeds 0-2: 0.93, 0.85, 0.90; the rest are small floaters near the
    # bottom of the box. tools/shape_report.py measures the share over 100 seeds.)
    assert mesh.component_fractions(verts, faces)[0] >= 0.8
    # The head fills a head-sized part of the box: about 0.3-0.6 wide, most of the box tall.
    extent = verts.max(axis=0) - verts.min(axis=0)
    assert 0.25 < extent[0] < 0.7 and 0.5 < extent[1] < 1.0


def test_generator_demo_uses_the_bundled_generator_by_default(tmp_path):
    out = tmp_path / 'demo'
    result = CliRunner().invoke(generator_demo.main, ['--outdir', str(out), '--res', '48'])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['network'] == cli_utils.BUNDLED and summary['mesh_faces'] > 0
    assert (out / 'previews.png').is_file()


def test_generator_demo_says_when_the_bundled_file_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.FAMILIES['eg3d'].bundled, 'bundled', str(tmp_path / 'gone.pkl'))
    result = CliRunner().invoke(generator_demo.main, ['--outdir', str(tmp_path / 'x')])
    assert result.exit_code != 0 and 'gone.pkl' in result.output and 'missing' in result.output

#----------------------------------------------------------------------------
# tools/bundle_checkpoint.py on a small snapshot.

def test_bundle_checkpoint_stores_g_ema_once_and_keeps_d(tmp_path):
    from tests.helpers.eg3d import tiny_generator
    from training.dual_discriminator import DualDiscriminator
    G, G_ema = tiny_generator(seed=0), tiny_generator(seed=1)
    D = DualDiscriminator(c_dim=25, img_resolution=64, img_channels=3, channel_base=512, channel_max=16, num_fp16_res=0, conv_clamp=None)
    snap, out = str(tmp_path / 'snap.pkl'), str(tmp_path / 'bundle.pkl')
    legacy.save_network_pkl(snap, dict(G=G, D=D, G_ema=G_ema, augment_pipe=None, training_set_kwargs=dict(path='x.zip')))
    run = lambda *args: CliRunner().invoke(bundle_checkpoint.main, ['--snapshot', snap, '--out', out, *args])

    assert 'pass --trust-pickle' in run().output and not os.path.exists(out)
    dry = run('--trust-pickle', '--dry-run')
    assert dry.exit_code == 0 and 'would write' in dry.output and not os.path.exists(out)
    result = run('--trust-pickle')
    assert result.exit_code == 0, result.output
    assert os.path.getsize(out) < 0.8 * os.path.getsize(snap)
    data = legacy.load_network_pkl(out, trust=True)
    assert data['G'] is data['G_ema'] and data['training_set_kwargs'] == dict(path='x.zip')
    assert all(torch.equal(p, q) for p, q in zip(data['G'].parameters(), G_ema.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(data['D'].parameters(), D.parameters()))
    again = run('--trust-pickle')
    assert again.exit_code != 0 and '--force' in again.output
    assert run('--trust-pickle', '--force').exit_code == 0
    legacy.save_network_pkl(snap, dict(G=G, G_ema=G))
    assert 'not a training snapshot' in run('--trust-pickle', '--force').output
