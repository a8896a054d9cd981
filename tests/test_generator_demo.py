"""tools/generator_demo.py: every flag, on a random network and on a pickle; it never writes into a bank, nor over a
folder of files without --force."""

import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.helpers.cli import files_under, invoke, refused_in_one_line, sentinel
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

#----------------------------------------------------------------------------
# Never into a bank, nor over a folder that holds files without --force.

@pytest.mark.usefixtures('one_thread')
def test_generator_demo_never_writes_into_a_bank_nor_over_a_folder_without_force(tmp_path):
    from tests.helpers.banks import ball_bank
    from tools import generator_demo
    bank_dir, _ = ball_bank(tmp_path / 'bank', 2, seed=0)
    (tmp_path / 'bank' / 'bank.json').write_text('{"note": "what made the bank"}\n')
    before = files_under(tmp_path / 'bank')
    run = lambda outdir, *extra: CliRunner().invoke(generator_demo.main, ['--outdir', str(outdir), '--network',
        'random', '--res', '16', '--neural-res', '16', *extra])
    for outdir in (tmp_path / 'bank' / 'ball00', tmp_path / 'bank', tmp_path / 'bank' / 'ball01' / 'demo'):
        for extra in ([], ['--force']):                                  # Before: ball00's slab rewritten in place.
            refused_in_one_line(run(outdir, *extra), f'--outdir {outdir} lies inside the sample bank {tmp_path / "bank"}')
    assert files_under(tmp_path / 'bank') == before
    (tmp_path / 'mine').mkdir()
    untouched = sentinel(tmp_path / 'mine')
    refused_in_one_line(run(tmp_path / 'mine', '--dry-run'), f'{tmp_path / "mine"} holds files already; pass --force')
    assert untouched()
    result = run(tmp_path / 'mine', '--dry-run', '--force')
    assert result.exit_code == 0 and 'would build random FFHQ-512 structure' in result.output, result.output
