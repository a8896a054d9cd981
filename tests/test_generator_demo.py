"""tools/generator_demo.py: every flag, on a random network and on a pickle."""

import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.helpers.cli import invoke
from tools import generator_demo
from training.triplane import TriPlaneGenerator


def _run(args):
    return invoke(generator_demo.main, args, catch_exceptions=False)


def test_dry_run_writes_nothing(tmp_path):
    result = _run(['--outdir', str(tmp_path / 'out'), '--network', 'random', '--dry-run', '--seed', '3', '--res', '20', '--neural-res', '16'])
    assert result.exit_code == 0
    assert 'seed 3' in result.output and '20^3' in result.output and 'neural res 16' in result.output
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_random_network_run_writes_all_outputs(tmp_path):
    out = tmp_path / 'out'
    result = _run(['--outdir', str(out), '--network', 'random', '--res', '16', '--neural-res', '16', '--level', '2.0'])
    assert result.exit_code == 0, result.output
    for name in ('image.png', 'image_raw.png', 'depth.png', 'sigma_slab.npy', 'mesh.ply', 'previews.png', 'summary.json'):
        assert (out / name).is_file(), name
    summary = json.loads((out / 'summary.json').read_text())
    sigma = np.load(out / 'sigma_slab.npy')
    assert list(sigma.shape) == summary['slab_shape'] == [8, 9, 9]     # The default crop at N=16.
    assert summary['sigma_min'] == pytest.approx(float(sigma.min()))
    assert summary['mesh_level'] == 2.0


def _tiny_pickle(path):
    kwargs = generator_demo.ffhq512_small_kwargs()
    kwargs['rendering_kwargs'].update(depth_resolution=4, depth_resolution_importance=4)
    torch.manual_seed(1)
    G = TriPlaneGenerator(**kwargs).eval()
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, G_ema=G, D=None, augment_pipe=None, training_set_kwargs=None), f)


@pytest.mark.slow
def test_network_pickle_needs_trust_and_seed_changes_the_face(tmp_path):
    pkl = tmp_path / 'net.pkl'
    _tiny_pickle(pkl)
    refused = CliRunner().invoke(generator_demo.main, ['--outdir', str(tmp_path / 'x'), '--network', str(pkl)])
    assert refused.exit_code != 0 and 'runs code' in refused.output
    assert not (tmp_path / 'x').exists()

    slabs = []
    for seed in (0, 1):
        out = tmp_path / f'seed{seed}'
        result = _run(['--outdir', str(out), '--network', str(pkl), '--trust-pickle', '--seed', str(seed),
                       '--res', '16', '--neural-res', '16'])
        assert result.exit_code == 0, result.output
        assert json.loads((out / 'summary.json').read_text())['network'] == str(pkl)
        slabs.append(np.load(out / 'sigma_slab.npy'))
    assert not np.allclose(slabs[0], slabs[1])
