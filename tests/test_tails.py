"""Tails and transfer: a bank's ends by reward, other generators' sigma cubes on the reward's slab, tools/tails.py;
cubes that cannot be read or scored are refused in one line."""

import hashlib
import json
import os
import re
import warnings

import mrcfile
import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.analysis import tails
from eg3d_rlhf.cli import BUNDLED, load_generator
from eg3d_rlhf.data.bank import Bank, BankWriter
from eg3d_rlhf.data.scores import read_scores
from eg3d_rlhf.geometry.sigma import CubeGrid, eg3d_border_pad, flip_and_pad, slab_grid
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.synthetic import demo
from tests.helpers.banks import balls_volume, write_bank
from tests.helpers.cli import refused_in_one_line
from tests.helpers.mutations import run_within
from tests.helpers.scored import run_tool
from tools import tails as tails_tool

pytestmark = pytest.mark.usefixtures('one_thread')

REWARD = demo.reward_model('sigma')     # The tool's default; it reads the 32x36x33 slab of the 64^3 cube.
SEEDS = range(6)

#----------------------------------------------------------------------------
# Ranking, cubes, normalisation, statistics.

def test_rank_orders_by_score_and_keeps_ties_in_id_order():
    top, bottom = tails.rank(['a', 'b', 'c', 'd', 'e'], np.array([0.5, -1.0, 2.0, 0.5, -1.0]), 3)
    assert top == [('c', 2.0), ('a', 0.5), ('d', 0.5)]
    assert bottom == [('b', -1.0), ('e', -1.0), ('a', 0.5)]
    assert tails.rank(['a', 'b'], [1.0, 3.0], 5) == ([('b', 3.0), ('a', 1.0)], [('a', 1.0), ('b', 3.0)])


def linear_cube(n):
    """A field linear in world coordinates on the n^3 grid over [-0.5, 0.5]^3 (trilinear resampling is exact on it)."""
    axis = np.linspace(-0.5, 0.5, n)
    return (3 * axis[:, None, None] - 2 * axis[None, :, None] + axis[None, None, :]).astype(np.float32) * 10


def test_cube_to_slab_crops_resamples_and_flips():
    grid = slab_grid(24)
    (x0, y0, z0), (x1, y1, z1) = grid.start, grid.stop
    slab = tails.cube_to_slab(linear_cube(24), grid)
    assert slab.shape == grid.shape and (slab == linear_cube(24)[x0:x1, y0:y1, z0:z1]).all()
    for n in (47, 13):                           # Finer and coarser cubes of the same field land on the same slab.
        assert np.abs(tails.cube_to_slab(linear_cube(n), grid) - slab).max() < 1e-4
    flipped = np.flip(linear_cube(24), 0).copy()
    assert (tails.cube_to_slab(flipped, grid, flip_x=True) == slab).all()
    assert not np.allclose(tails.cube_to_slab(flipped, grid), slab)
    # The slab's box in a cube of another resolution covers the same world box, whole voxels outward.
    assert tails.slab_box(grid, 24) == tuple(slice(a, b) for a, b in zip(grid.start, grid.stop))
    lo, hi = grid.index_to_world(np.zeros(3)), grid.index_to_world(np.array(grid.shape) - 1)   # The slab's corners.
    world = np.linspace(-0.5, 0.5, 47)
    for s, lo, hi in zip(tails.slab_box(grid, 47), lo, hi):
        assert world[s.start] <= lo + 1e-9 < world[s.start + 1] and world[s.stop - 2] < hi - 1e-9 <= world[s.stop - 1]


def test_robust_normalisation_maps_ranges_and_clips_padding():
    grid = slab_grid(32)
    ours = balls_volume(grid, [((0, 0, 0.15), 0.12)]) + np.linspace(-2, 2, grid.shape[0])[:, None, None]
    reference = tails.volume_range(ours)
    # Another generator: the same shape at 3x the scale plus 40, with gen_samples' padding on one face of the cube.
    cube = np.full((32,) * 3, -10.0, dtype=np.float32)
    (x0, y0, z0), (x1, y1, z1) = grid.start, grid.stop
    cube[x0:x1, y0:y1, z0:z1] = ours
    foreign = cube * 3 + 40
    foreign[:, :, z1 - 2:] = tails.PAD_VALUE
    normalised = tails.cube_to_slab(foreign, grid, reference=reference)
    inside = np.s_[:, :, :-2]
    assert np.abs(normalised[inside] - ours[inside]).max() < 1e-3 * np.ptp(ours)
    assert (normalised[:, :, -2:] == reference['min']).all()          # The padding reads as our emptiest value.
    assert tails.cube_to_slab(foreign, grid).min() == tails.PAD_VALUE  # Without a reference nothing changes.
    # A spike far above the rest is clipped to the reference's top, not allowed to stretch the scale.
    spiky = foreign.copy()
    spiky[16, 16, 20] = 1e6
    assert tails.cube_to_slab(spiky, grid, reference=reference).max() == pytest.approx(reference['max'])
    with pytest.raises(ValueError, match='constant between'):
        tails.cube_to_slab(np.ones((8,) * 3, dtype=np.float32), slab_grid(8), reference=reference)
    with pytest.raises(ValueError, match='every value is the padding'):
        tails.volume_range(np.full((4,) * 3, tails.PAD_VALUE))


def test_read_cube_reads_npy_and_mrc_alike_and_refuses_bad_files(tmp_path):
    cube = linear_cube(12)
    np.save(tmp_path / 'c.npy', cube)
    np.save(tmp_path / 'half.npy', cube.astype(np.float16))
    with mrcfile.new(str(tmp_path / 'c.mrc')) as f:
        f.set_data(cube)
    for name in ('c.npy', 'c.mrc', 'half.npy'):
        got = tails.read_cube(str(tmp_path / name))
        assert got.dtype == np.float32 and np.allclose(got, cube, atol=0.02 if name == 'half.npy' else 0), name
    bad = {
        'flat.npy': (np.zeros((4, 4, 5), np.float32), r'expected a cube \[N, N, N\] with N >= 2, got \[4, 4, 5\]'),
        'image.npy': (np.zeros((4, 4), np.float32), r'expected a 3-D cube \[N, N, N\], got 2-D \[4, 4\]'),
        'tiny.npy': (np.zeros((1, 1, 1), np.float32), r'with N >= 2, got \[1, 1, 1\]'),
        'nan.npy': (np.where(cube > 5, np.nan, cube), r'values are nan or inf'),
        'inf.mrc': (np.where(cube > 5, np.inf, cube).astype(np.float32), r'values are nan or inf'),
        'objects.npy': (np.array([None, 1], dtype=object), r'an array of Python objects, which are never loaded'),
    }
    for name, (array, _) in bad.items():
        if name.endswith('.mrc'):
            with warnings.catch_warnings(), mrcfile.new(str(tmp_path / name)) as f:
                warnings.simplefilter('ignore')             # mrcfile's header statistics of an infinite array.
                f.set_data(array)
        else:
            np.save(tmp_path / name, array, allow_pickle=True)
    (tmp_path / 'junk.mrc').write_bytes(b'not an mrc file' * 100)
    (tmp_path / 'junk.npy').write_bytes(b'\x93NUMPY garbage')
    np.savez(tmp_path / 'c.npz', cube=cube)
    bad.update({'junk.mrc': (None, 'cannot be read as an MRC map'), 'junk.npy': (None, r'cannot be read as a \.npy array'),
        'c.npz': (None, r'unknown cube format \.npz; expected \.npy or \.mrc'), 'missing.npy': (None, 'cannot be read')})
    for name, (_, message) in bad.items():
        path = str(tmp_path / name)
        with pytest.raises(ValueError) as info:
            tails.read_cube(path)
        text = str(info.value)
        assert text.startswith(f'{path}: ') and '\n' not in text, text
        assert re.search(message, text), (name, text)


def test_sigma_stats_and_the_histogram_picture(tmp_path):
    rng = np.random.default_rng(0)
    volumes = [rng.lognormal(0, 2, size=(6, 6, 6)) * rng.choice([-1, 1], size=(6, 6, 6)) for _ in range(3)]
    volumes[0][0, 0, 0] = 1e9                                       # Beyond the last edge: counted apart.
    stats = tails.SigmaStats()
    for v in volumes:
        assert stats.add(v) is v
    assert stats.positive == sum(int((v > 0).sum()) for v in volumes) and stats.values == 3 * 216
    assert stats.outside == 1 and stats.counts.sum() == stats.positive - 1
    x, density = stats.density()
    assert np.nansum(density * np.diff(stats.edges)) == pytest.approx(1.0 - 1 / stats.positive)
    assert stats.range()['high'] == pytest.approx(np.median([np.percentile(v, 99.9) for v in volumes]))
    assert stats.summary()['positive_fraction'] == pytest.approx(stats.positive / stats.values)
    empty = tails.SigmaStats()
    empty.add(-np.ones((3, 3, 3)))
    tails.plot_sigma_histograms([('mixed', stats, None), ('negative only', empty, None)], str(tmp_path / 'h.png'))
    tails.plot_sigma_histograms([('negative only', empty, None)], str(tmp_path / 'none.png'))
    picture = np.asarray(PIL.Image.open(tmp_path / 'h.png').convert('L'))
    assert picture.shape[1] > 600 and (picture < 128).mean() > 0.01  # Axes, text and a curve drawn.

#----------------------------------------------------------------------------
# tools/tails.py on a bank of the bundled generator.

@pytest.fixture(scope='module')
def bundled(tmp_path_factory):
    """(bank folder, {id: reward of its slab by the bundled reward}, 64^3 cubes {seed: raw sigma}) of seeds 0-5."""
    root, threads = tmp_path_factory.mktemp('tails'), torch.get_num_threads()
    torch.set_num_threads(1)                                # As one_thread, which a module fixture runs before.
    try:
        G = load_generator(BUNDLED, torch.device('cpu'), truncation_psi=0.7)
        writer = BankWriter(str(root / 'bank'), G, resolution=64, dtype='float32', preview_res=16)
        writer.open()
        for seed in SEEDS:
            writer.write(seed)
        bank = Bank(str(root / 'bank'))
        scores = dict(zip(bank.ids, load_reward(REWARD).score_slabs([bank.slab(i) for i in bank.ids]).tolist()))
        cubes = {seed: G.field([seed]).sample_grid(CubeGrid(64))[0].numpy() for seed in (2, 4)}
    finally:
        torch.set_num_threads(threads)
    return str(root / 'bank'), scores, cubes


def run(*args):
    return CliRunner().invoke(tails_tool.main, [str(a) for a in args])


def report_of(outdir):
    return json.loads((outdir / 'report.json').read_text())


def score(slab):
    return float(load_reward(REWARD).score_slabs([slab.copy()])[0])


def test_tool_ranks_the_bank_and_scores_npy_and_mrc_cubes_as_their_slabs(bundled, tmp_path):
    bank_dir, scores, cubes = bundled
    grid = slab_grid(64)
    (x0, y0, z0), (x1, y1, z1) = grid.start, grid.stop
    # gen_samples' layout: x flipped. Seed 2's cube as .npy, seed 4's as .mrc.
    np.save(tmp_path / 'seed2.npy', np.flip(cubes[2], 0).copy())
    with mrcfile.new(str(tmp_path / 'seed4.mrc')) as f:
        f.set_data(np.flip(cubes[4], 0).copy())
    out = tmp_path / 'out'
    result = run('--bank', bank_dir, '--k', 2, '--cubes', tmp_path / 'seed2.npy', '--cubes', tmp_path / 'seed4.mrc',
        '--flip-x', '--level', 10, '--preview-res', 24, '--batch', 4, '--device', 'cpu', '--outdir', out)
    assert result.exit_code == 0, result.output
    report = report_of(out)
    assert report['reward_model'] == REWARD                              # No --reward-model: the bundled one.
    ranked = sorted(scores, key=lambda i: -scores[i])
    assert [t['id'] for t in report['top']] == ranked[:2] and [b['id'] for b in report['bottom']] == ranked[::-1][:2]
    for entry in report['top'] + report['bottom']:
        assert entry['score'] == pytest.approx(scores[entry['id']], abs=1e-5)
        assert entry['mesh'] and (out / entry['mesh']).stat().st_size > 1000   # The heads have a level-10 surface.
    assert read_scores(str(out / 'scores.csv')) == pytest.approx(scores, abs=1e-5)
    for name, seed in (('seed2.npy', 2), ('seed4.mrc', 4)):
        cube = report['cubes'][name]
        assert cube['resolution'] == 64 and not cube['resampled'] and cube['normalised'] is None
        assert np.abs(cubes[seed][x0:x1, y0:y1, z0:z1] - Bank(bank_dir).slab(f'seed{seed:06d}')).max() < 1e-3
        assert cube['score'] == pytest.approx(scores[f'seed{seed:06d}'], abs=1e-3)
    for picture in ('tails.png', 'sigma_histogram.png'):
        assert np.asarray(PIL.Image.open(out / picture).convert('L')).std() > 10, picture
    page = (out / 'report.html').read_text()
    assert 'Cubes of other generators' in page and 'seed4.mrc' in page and 'tails.png' in page


def test_flip_and_normalisation_do_what_they_say(bundled, tmp_path):
    bank_dir, scores, cubes = bundled
    grid = slab_grid(64)
    (x0, y0, z0), (x1, y1, z1) = grid.start, grid.stop
    # An asymmetric head: a lump on its +x cheek, so that the flip matters.
    cube = cubes[2].copy()
    cube[38:44, 30:36, 44:50] = 25.0
    np.save(tmp_path / 'lump.npy', np.flip(cube, 0).copy())
    lump = cube[x0:x1, y0:y1, z0:z1]
    quick = ['--bank', bank_dir, '--k', 1, '--preview-res', 16]
    flipped = run(*quick, '--cubes', tmp_path / 'lump.npy', '--flip-x', '--outdir', tmp_path / 'a')
    as_saved = run(*quick, '--cubes', tmp_path / 'lump.npy', '--outdir', tmp_path / 'b')
    assert flipped.exit_code == 0 and as_saved.exit_code == 0, flipped.output + as_saved.output
    assert report_of(tmp_path / 'a')['cubes']['lump.npy']['score'] == pytest.approx(score(lump), abs=1e-4)
    assert report_of(tmp_path / 'b')['cubes']['lump.npy']['score'] == pytest.approx(score(np.flip(lump, 0)), abs=1e-4)
    assert abs(score(lump) - score(np.flip(lump, 0))) > 0.05
    # Another generator's scale and gen_samples' padding (its front slice lies in the slab): as read, the -1000
    # padding sets the reward's min-max.
    foreign = flip_and_pad(cubes[2] * 3 + 40, flip=True, pad=eg3d_border_pad(64))
    np.save(tmp_path / 'padded.npy', foreign)
    raw = run(*quick, '--cubes', tmp_path / 'padded.npy', '--flip-x', '--outdir', tmp_path / 'raw')
    fixed = run(*quick, '--cubes', tmp_path / 'padded.npy', '--flip-x', '--robust-normalise',
        '--outdir', tmp_path / 'fixed')
    assert raw.exit_code == 0 and fixed.exit_code == 0, raw.output + fixed.output
    before, after = report_of(tmp_path / 'raw'), report_of(tmp_path / 'fixed')
    # Normalised, seed 2 scores near its own slab again; what remains is the front slice that the padding erased.
    truth = scores['seed000002']
    assert abs(after['cubes']['padded.npy']['score'] - truth) < 0.3 and abs(before['cubes']['padded.npy']['score'] - truth) > 1
    target, got = after['normalisation_target'], after['cubes']['padded.npy']['normalised']['range']
    assert before['normalisation_target'] is None and got['min'] >= target['min'] - 1e-5 and got['max'] <= target['max'] + 1e-5
    assert got['high'] == pytest.approx(target['high'], rel=0.05)
    padded = after['cubes']['padded.npy']
    assert padded['as_read']['padding'] == 32 * 36 and padded['normalised']['padding'] == 0   # The slab's front slice.
    assert padded['as_read']['range']['min'] > tails.PAD_VALUE          # Left out of the ranges.


def test_dry_run_force_and_refusals(bundled, tmp_path):
    bank_dir, _, cubes = bundled
    np.save(tmp_path / 'c.npy', cubes[4])
    np.save(tmp_path / 'flat.npy', np.zeros((4, 4, 5), dtype=np.float32))
    out = tmp_path / 'out'
    dry = run('--bank', bank_dir, '--cubes', tmp_path / 'c.npy', '--dry-run', '--outdir', out)
    assert dry.exit_code == 0 and 'would rank 6 samples' in dry.output and 'c.npy 64^3' in dry.output, dry.output
    assert not out.exists()
    first = run('--bank', bank_dir, '--reward-model', REWARD, '--k', 1, '--outdir', out, '--preview-res', 16)
    assert first.exit_code == 0, first.output
    digest = hashlib.sha256((out / 'report.json').read_bytes()).hexdigest()
    again = run('--bank', bank_dir, '--k', 3, '--outdir', out, '--preview-res', 16)
    assert again.exit_code == 1 and f'--outdir {out} is not empty; pass --force' in again.output, again.output
    assert hashlib.sha256((out / 'report.json').read_bytes()).hexdigest() == digest
    forced = run('--bank', bank_dir, '--k', 3, '--outdir', out, '--preview-res', 16, '--force')
    assert forced.exit_code == 0 and report_of(out)['k'] == 3, forced.output
    (tmp_path / 'empty').mkdir()
    assert run('--bank', bank_dir, '--k', 1, '--outdir', tmp_path / 'empty', '--preview-res', 16).exit_code == 0
    other = write_bank(tmp_path / 'bank32', {'s': balls_volume(slab_grid(32), [((0, 0, 0.15), 0.2)])}, 32)
    cases = [
        (['--outdir', tmp_path / 'c.npy'], f'{tmp_path / "c.npy"} exists and is not a folder; choose another'),
        (['--outdir', tmp_path / 'x', '--cubes', tmp_path / 'missing.npy'], f'--cubes: {tmp_path / "missing.npy"} does not exist'),
        (['--outdir', tmp_path / 'x', '--cubes', tmp_path / 'c.npy', '--cubes', tmp_path / 'c.npy'], 'is given twice'),
        (['--outdir', tmp_path / 'x', '--cubes', tmp_path / 'flat.npy', '--dry-run'], f'{tmp_path / "flat.npy"}: expected a cube'),
        (['--outdir', tmp_path / 'x', '--k', 0], "Invalid value for '--k'"),
        (['--outdir', tmp_path / 'x', '--reward-model', tmp_path / 'none.pt'], '--reward-model:'),
    ]
    for args, message in cases:
        bad = run('--bank', bank_dir, *args)
        assert bad.exit_code != 0 and message in bad.output and 'Traceback' not in bad.output, (args, bad.output)
    grids = run('--bank', other, '--outdir', tmp_path / 'x')
    assert grids.exit_code == 1 and 'slabs of the 32^3 grid, shape [16, 18, 17], but' in grids.output, grids.output
    assert 'was trained on the 64^3 grid, shape [32, 36, 33]' in grids.output
    assert not (tmp_path / 'x').exists()

#----------------------------------------------------------------------------
# Sigma cubes (tails --cubes): checked against the file's size before anything is allocated, a regular file only,
# and the refusal on a line of its own after the progress bar.

def test_a_cube_npy_header_claiming_54_gib_is_refused_before_allocating(tmp_path):
    path = tmp_path / 'cube.npy'
    np.save(path, np.zeros((12, 12, 12), np.float32))
    data = path.read_bytes()
    path.write_bytes(data.replace(b'(12, 12, 12)', b'(2440, 2440, 2440)'))   # 2440^3 float32: 54 GiB.
    with pytest.raises(tails.CubeError, match=r'its header says \[2440, 2440, 2440\] float32 \(54.1 GiB\)'):
        tails.read_cube(str(path))                              # Before: MemoryError (or 54 GiB asked of the OS).


def test_a_fifo_given_as_a_cube_is_refused_not_waited_on(tmp_path):
    path = tmp_path / 'cube.mrc'
    os.mkfifo(path)
    with pytest.raises(tails.CubeError, match='not a regular file \\(a FIFO\\)'):
        run_within(10, lambda: tails.read_cube(str(path)))     # Before: Hang (mrcfile.open waited for a writer).


def test_tails_error_line_starts_a_line_of_its_own(tmp_path, balls):
    from eg3d_rlhf.data.bank import Bank
    from eg3d_rlhf.rewards.checkpoint import save_reward
    from tests.helpers.rewards import tiny_sigma
    from tools import tails as tails_tool
    save_reward(str(tmp_path / 'reward.pt'), tiny_sigma(seed=7).eval(), 'sigma', Bank(balls['bank']).meta('ball00')['slab'])
    np.save(tmp_path / 'good.npy', np.zeros((8, 8, 8), np.float32))
    np.save(tmp_path / 'bad.npy', np.full((8, 8, 8), np.nan, np.float32))
    result = CliRunner().invoke(tails_tool.main, ['--device', 'cpu', '--bank', balls['bank'], '--reward-model',
        str(tmp_path / 'reward.pt'), '--cubes', str(tmp_path / 'good.npy'), '--cubes', str(tmp_path / 'bad.npy'),
        '--outdir', str(tmp_path / 't'), '--dry-run'])
    refused_in_one_line(result, f'Error: {tmp_path / "bad.npy"}: 512 values are nan or inf')  # Before: after the bar's \r.

#----------------------------------------------------------------------------
# Silent wrong results: a cube whose score is not finite stops tails, naming the cube (a bank's samples, in every
# tool that scores them: tests/test_reward_contract.py).

def test_a_cube_whose_score_is_not_finite_is_named(scored, tmp_path):
    from tools import tails                 # The tool: this file's tails is eg3d_rlhf.analysis.tails.
    cube = np.full([40, 40, 40], -3e38, dtype=np.float32)
    cube[15:25, 15:25, 15:25] = 3e38
    np.save(tmp_path / 'cube.npy', cube)
    result = run_tool(tails, scored['bank'], scored['reward'], tmp_path / 'out', '--cubes', str(tmp_path / 'cube.npy'))
    refused_in_one_line(result, f'{tmp_path / "cube.npy"}: the sigma reward scores it ')
