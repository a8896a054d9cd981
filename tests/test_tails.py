"""Tails and transfer: top/bottom samples of a bank by reward, foreign sigma cubes scored, and tools/tails.py."""

import json
import os

import mrcfile
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.analysis import tails
from eg3d_rlhf.cli import load_generator
from eg3d_rlhf.data.bank import Bank, BankWriter
from eg3d_rlhf.geometry import sigma as geometry
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.synthetic import demo
from tests.test_evaluate import tiny_pair  # noqa: F401  (a fixture)
from tools import tails as tails_tool

pytestmark = pytest.mark.usefixtures('one_thread')


def test_tails_order():
    top, bottom = tails.tails(['a', 'b', 'c', 'd'], np.array([0.5, -1.0, 2.0, 0.0]), 2)
    assert top == [('c', 2.0), ('a', 0.5)] and bottom == [('b', -1.0), ('d', 0.0)]
    assert len(tails.tails(['a'], np.array([1.0]), 5)[0]) == 1


def test_cubes_crop_resample_flip_and_normalise(tmp_path):
    grid = geometry.slab_grid(24)
    axis = lambda n: np.linspace(-0.5, 0.5, n)
    linear = lambda n: (3 * axis(n)[:, None, None] - 2 * axis(n)[None, :, None] + axis(n)[None, None, :]).astype(np.float32)
    slab = tails.cube_to_slab(linear(24), grid)
    (x0, y0, z0), (x1, y1, z1) = grid.start, grid.stop
    assert (slab == linear(24)[x0:x1, y0:y1, z0:z1]).all()
    # A 47^3 cube of the same linear field resamples (trilinear, corners aligned) onto the same slab.
    assert np.abs(tails.cube_to_slab(linear(47), grid) - slab).max() < 1e-5
    assert (tails.cube_to_slab(np.flip(linear(24), 0).copy(), grid, flip_x=True) == slab).all()
    ref = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    mapped = tails.robust_normalise(ref * 3 + 2, ref)
    assert np.allclose(mapped, ref, atol=1e-4)
    with pytest.raises(ValueError, match='constant'):
        tails.robust_normalise(np.zeros(10), ref)
    # Files: .npy and .mrc read the same; bad ones are refused with the file's name.
    np.save(tmp_path / 'c.npy', linear(24))
    with mrcfile.new(str(tmp_path / 'c.mrc')) as f:
        f.set_data(linear(24))
    assert (tails.read_cube(str(tmp_path / 'c.npy')) == tails.read_cube(str(tmp_path / 'c.mrc'))).all()
    np.save(tmp_path / 'flat.npy', np.zeros((4, 4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r'flat.npy: expected a cube \[N, N, N\], got \[4, 4, 5\]'):
        tails.read_cube(str(tmp_path / 'flat.npy'))
    bad = linear(8)
    bad[0, 0, 0] = np.nan
    np.save(tmp_path / 'nan.npy', bad)
    with pytest.raises(ValueError, match='nan.npy: the cube holds nan or inf'):
        tails.read_cube(str(tmp_path / 'nan.npy'))
    (tmp_path / 'junk.mrc').write_bytes(b'not an mrc file')
    with pytest.raises(ValueError, match='junk.mrc: cannot read a sigma cube'):
        tails.read_cube(str(tmp_path / 'junk.mrc'))


def test_histogram_picture(tmp_path):
    rng = np.random.default_rng(0)
    tails.plot_sigma_histograms({'a': rng.lognormal(size=500), 'b': -np.ones(3)}, str(tmp_path / 'h.png'))
    assert (tmp_path / 'h.png').stat().st_size > 5000


def test_tails_tool(tiny_pair, tmp_path):
    original = tiny_pair[0]
    reward_path = os.path.join(demo.CHECKPOINTS, 'reward-sigma-nose.pt')   # Its 32x36x33 slab scores one slab alone.
    G = load_generator(original, torch.device('cpu'))
    writer = BankWriter(str(tmp_path / 'bank'), G, resolution=64, dtype='float32', preview_res=16)
    writer.open()
    for seed in range(5):
        writer.write(seed)
    bank = Bank(str(tmp_path / 'bank'))
    reward = load_reward(reward_path)
    scores = dict(zip(bank.ids, reward.score_slabs([bank.slab(i) for i in bank.ids])))
    # A cube whose slab is sample 2's (the rest of the cube is empty space), flipped on x as gen_samples saves it.
    grid = reward.grid
    cube = np.full((64,) * 3, -10.0, dtype=np.float32)
    (x0, y0, z0), (x1, y1, z1) = grid.start, grid.stop
    cube[x0:x1, y0:y1, z0:z1] = bank.slab(bank.ids[2])
    np.save(tmp_path / 'other.npy', np.flip(cube, 0).copy())
    out = tmp_path / 'out'
    result = CliRunner().invoke(tails_tool.main, [str(a) for a in ['--bank', tmp_path / 'bank', '--reward-model',
        reward_path, '--k', 2, '--cubes', tmp_path / 'other.npy', '--flip-x', '--level', 0, '--batch', 2, '--outdir', out,
        '--device', 'cpu']])
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    best = sorted(scores, key=lambda i: -scores[i])
    assert [t['id'] for t in report['top']] == best[:2] and [b['id'] for b in report['bottom']] == best[::-1][:2]
    assert report['top'][0]['score'] == pytest.approx(float(scores[best[0]]), abs=1e-5)
    assert report['cubes']['other.npy'] == pytest.approx(float(scores[bank.ids[2]]), abs=1e-4)
    assert (out / 'tails.png').exists() and (out / 'sigma_histogram.png').exists()
    assert sorted(p.name for p in out.glob('*.ply')) == sorted(report['meshes'])
    # --robust-normalise maps the cube's percentiles onto the bank's: a scaled copy scores as the bank sample does.
    np.save(tmp_path / 'scaled.npy', np.flip(cube, 0) * 2.0 + 1.0)
    again = CliRunner().invoke(tails_tool.main, [str(a) for a in ['--bank', tmp_path / 'bank', '--reward-model',
        reward_path, '--cubes', tmp_path / 'scaled.npy', '--flip-x', '--robust-normalise', '--outdir', tmp_path / 'o2']])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / 'o2' / 'report.json').read_text())['robust_normalise'] is True
    dry = CliRunner().invoke(tails_tool.main, ['--bank', str(tmp_path / 'bank'), '--reward-model', reward_path,
        '--outdir', str(tmp_path / 'dry'), '--dry-run'])
    assert dry.exit_code == 0 and 'would rank 5 samples' in dry.output and not (tmp_path / 'dry').exists()
    for args, message in [(['--cubes', 'missing.npy'], '--cubes: missing.npy does not exist'),
            (['--k', '0'], "Invalid value for '--k'")]:
        bad = CliRunner().invoke(tails_tool.main, ['--bank', str(tmp_path / 'bank'), '--reward-model', reward_path,
            '--outdir', str(tmp_path / 'bad'), *args])
        assert bad.exit_code != 0 and message in bad.output, bad.output
    other_grid = CliRunner().invoke(tails_tool.main, ['--bank', str(tmp_path / 'bank'), '--reward-model', tiny_pair[2],
        '--outdir', str(tmp_path / 'bad')])
    assert other_grid.exit_code == 1 and 'its slabs are [32, 36, 33], the reward reads [12, 14, 13]' in other_grid.output
    np.save(tmp_path / 'flat.npy', np.zeros((4, 4, 5), dtype=np.float32))
    bad = CliRunner().invoke(tails_tool.main, ['--bank', str(tmp_path / 'bank'), '--reward-model', reward_path,
        '--outdir', str(tmp_path / 'bad'), '--cubes', str(tmp_path / 'flat.npy')])
    assert bad.exit_code == 1 and 'flat.npy: expected a cube' in bad.output
