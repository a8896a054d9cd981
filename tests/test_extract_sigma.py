"""Tests for tools/extract_sigma.py: every flag, checked against EG3D's own G.sample path on a tiny pickled network."""

import importlib.util
import math
import os
import pickle
import subprocess
import sys

import click
import mrcfile
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.geometry import convention as conventions
from eg3d_rlhf.geometry import mesh, mrc
from eg3d_rlhf.geometry.sigma import CubeGrid, SlabCrop, eg3d_border_pad, flip_and_pad
from tests.conftest import REPO, load_golden

TOOL = os.path.join(REPO, 'tools', 'extract_sigma.py')

def _load_tool():
    spec = importlib.util.spec_from_file_location('extract_sigma_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

tool = _load_tool()

#----------------------------------------------------------------------------
# A tiny network pickle (golden FFHQ-512 structure and weights; w_avg is random there, so truncation matters).

@pytest.fixture(scope='module')
def network(tmp_path_factory):
    triplane = pytest.importorskip('training.triplane')
    from training import legacy
    gold = load_golden('golden_ffhq512_small.pt')
    G = triplane.TriPlaneGenerator(**gold['G_init_kwargs'])
    G.load_state_dict(gold['G_state'], strict=True)
    G = G.eval().requires_grad_(False)
    path = str(tmp_path_factory.mktemp('net') / 'tiny.pkl')
    legacy.save_network_pkl(path, dict(G=G, G_ema=G, D=None, augment_pipe=None, training_set_kwargs=None))
    return path, G

def run(args, expect_ok=True):
    result = CliRunner().invoke(tool.main, args)
    if expect_ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result

def base_args(pkl, outdir, *extra):
    return ['--network', pkl, '--trust-pickle', '--seeds', '0', '--res', '12', '--device', 'cpu',
        '--outdir', str(outdir), *extra]

_references = {}

def reference_sigma(G, seed, n, exact=False, psi=1, cutoff=14, fov_deg=18.837):
    """EG3D's route on the n^3 cube (cached): camera built by hand, z from the seed, G.sample on all points at once."""
    key = (seed, n, exact, psi, cutoff, fov_deg)
    if key not in _references:
        _references[key] = _reference_sigma(G, seed, cube_points(n, exact), psi, cutoff, fov_deg)
    return _references[key]

def _reference_sigma(G, seed, points, psi, cutoff, fov_deg):
    from training.camera_utils import FOV_to_intrinsics, LookAtPoseSampler
    pose = LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, torch.tensor([0, 0, 0.2]), radius=2.7)
    c = torch.cat([pose.reshape(-1, 16), FOV_to_intrinsics(fov_deg).reshape(-1, 9)], dim=1)
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    with torch.no_grad():
        out = G.sample(points[None], torch.zeros_like(points[None]), z, c, truncation_psi=psi, truncation_cutoff=cutoff,
            noise_mode='const')
    return out['sigma'][0, :, 0].numpy()

def cube_points(n, exact=False):
    grid = CubeGrid(n, cube_length=1.0, exact_eg3d_grid=exact)
    return grid.points(0, grid.num_points)

#----------------------------------------------------------------------------
# --trust-pickle, --network

def test_refuses_without_trust_pickle(network, tmp_path):
    pkl, _ = network
    args = base_args(pkl, tmp_path / 'out')
    args.remove('--trust-pickle')
    result = run(args, expect_ok=False)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and 'runs code' in lines[0] and '--trust-pickle' in lines[0]
    assert not (tmp_path / 'out').exists()

def test_rejects_a_file_that_is_not_a_network(tmp_path):
    bad = tmp_path / 'bad.pkl'
    with open(bad, 'wb') as f:
        pickle.dump({'hello': 1}, f)
    result = run(base_args(str(bad), tmp_path / 'out'), expect_ok=False)
    assert result.exit_code != 0 and 'not an EG3D network pickle' in result.output

#----------------------------------------------------------------------------
# --seeds, --res, --outdir, default cube

def test_parse_range():
    assert tool.parse_range('0-3') == [0, 1, 2, 3]
    assert tool.parse_range('1,4-5,9') == [1, 4, 5, 9]
    for bad in ['a', '3-1', '1,,2']:
        with pytest.raises(click.BadParameter):
            tool.parse_range(bad)

def test_cube_files_match_g_sample(network, tmp_path):
    pkl, G = network
    outdir = tmp_path / 'a' / 'b'                               # Created on demand.
    args = base_args(pkl, outdir)
    args[args.index('--seeds') + 1] = '0,4-5'
    result = run(args)
    assert sorted(os.listdir(outdir)) == [f'seed00000{s}.{e}' for s in (0, 4, 5) for e in ('npy', 'ply')]
    sigma = {seed: np.load(outdir / f'seed{seed:06d}.npy') for seed in (0, 4, 5)}
    for seed in (0, 4):
        assert sigma[seed].dtype == np.float32 and sigma[seed].shape == (12, 12, 12)
        np.testing.assert_allclose(sigma[seed].ravel(), reference_sigma(G, seed, 12), rtol=1e-5, atol=1e-5)
    assert sigma[5].shape == (12, 12, 12) and not np.allclose(sigma[5], sigma[4], atol=1e-4)
    assert 'wrote 3' in result.output

#----------------------------------------------------------------------------
# --trunc, --trunc-cutoff

def test_truncation_flags(network, tmp_path):
    pkl, G = network
    run(base_args(pkl, tmp_path / 'psi', '--trunc', '0.6', '--trunc-cutoff', '5'))
    sigma = np.load(tmp_path / 'psi' / 'seed000000.npy').ravel()
    expected = reference_sigma(G, 0, 12, psi=0.6, cutoff=5)
    np.testing.assert_allclose(sigma, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(expected, reference_sigma(G, 0, 12, psi=0.6, cutoff=14), atol=1e-4)
    assert not np.allclose(expected, reference_sigma(G, 0, 12), atol=1e-4)

#----------------------------------------------------------------------------
# --exact-grid, --slab, --chunk

def test_exact_grid(network, tmp_path):
    pkl, G = network
    run(base_args(pkl, tmp_path, '--exact-grid'))
    sigma = np.load(tmp_path / 'seed000000.npy').ravel()
    np.testing.assert_allclose(sigma, reference_sigma(G, 0, 12, exact=True), rtol=1e-5, atol=1e-5)
    assert not np.allclose(sigma, reference_sigma(G, 0, 12), atol=1e-4)

def test_slab_is_the_crop_of_the_cube(network, tmp_path):
    pkl, _ = network
    run(base_args(pkl, tmp_path / 'cube', '--res', '24'))
    run(base_args(pkl, tmp_path / 'slab', '--res', '24', '--slab'))
    cube = np.load(tmp_path / 'cube' / 'seed000000.npy')
    slab = np.load(tmp_path / 'slab' / 'seed000000.npy')
    (x0, y0, z0), (x1, y1, z1) = SlabCrop().bounds(24)
    assert slab.shape == (x1 - x0, y1 - y0, z1 - z0) == (12, 14, 13)
    np.testing.assert_allclose(slab, cube[x0:x1, y0:y1, z0:z1], rtol=1e-5, atol=1e-6)

def test_chunk_does_not_change_result(network, tmp_path):
    pkl, G = network
    run(base_args(pkl, tmp_path, '--chunk', '100'))
    np.testing.assert_allclose(np.load(tmp_path / 'seed000000.npy').ravel(), reference_sigma(G, 0, 12), rtol=1e-5, atol=1e-5)

#----------------------------------------------------------------------------
# --level (and the .ply contents)

def ply_counts(path):
    with open(path, 'rb') as f:
        header = f.read(400).split(b'end_header')[0].decode('ascii')
    count = lambda name: int(header.split(f'element {name} ')[1].split()[0])
    return count('vertex'), count('face')

def test_level_sets_the_mesh_surface(network, tmp_path):
    pkl, G = network
    pad = eg3d_border_pad(12)
    inner = reference_sigma(G, 0, 12).reshape(12, 12, 12)[pad:-pad, pad:-pad, pad:-pad]
    level = float(np.median(inner))                             # Guarantees a surface inside the border.
    run(base_args(pkl, tmp_path, '--level', str(level)))
    sigma = np.load(tmp_path / 'seed000000.npy')
    expected = {}
    for lv in (level, float(np.quantile(inner, 0.8))):
        verts, faces = mesh.extract_mesh(flip_and_pad(sigma, flip=False, pad=pad), CubeGrid(12), level=lv)
        assert len(faces) > 0 and np.abs(verts).max() <= 0.5
        expected[lv] = (len(verts), len(faces))
    assert ply_counts(tmp_path / 'seed000000.ply') == expected[level]
    assert len(set(expected.values())) == 2

#----------------------------------------------------------------------------
# --dry-run, --device, --fov-deg

def test_dry_run_loads_and_writes_nothing(tmp_path):
    # A file that begins like a pickle is not unpickled by a dry run (this one would fail to load); one that no
    # generator family recognises is refused by its header, before anything is planned.
    pickle_like = tmp_path / 'junk.pkl'
    pickle_like.write_bytes(b'\x80\x04 but not a pickle')
    result = run(['--network', str(pickle_like), '--trust-pickle', '--seeds', '1-2', '--outdir', str(tmp_path / 'o'),
        '--dry-run', '--slab'])
    assert not (tmp_path / 'o').exists()
    assert 'seed000001.npy' in result.output and 'seed000002.ply' in result.output and 'slab' in result.output
    pickle_like.write_bytes(b'not a pickle')
    result = CliRunner().invoke(tool.main, ['--network', str(pickle_like), '--trust-pickle', '--seeds', '1-2',
        '--outdir', str(tmp_path / 'o'), '--dry-run'])
    assert result.exit_code == 1 and 'no generator family recognises this file' in result.output
    assert not (tmp_path / 'o').exists()

def test_device_flag(network, tmp_path):
    pkl, G = network
    args = base_args(pkl, tmp_path / 'auto')
    args[args.index('--device') + 1] = 'auto'
    run(args)
    np.testing.assert_allclose(np.load(tmp_path / 'auto' / 'seed000000.npy').ravel(), reference_sigma(G, 0, 12),
        rtol=1e-5, atol=1e-5)
    assert tool.pick_device('cpu') == torch.device('cpu')
    if torch.cuda.is_available():
        assert tool.pick_device('auto').type == 'cuda'
    else:
        assert tool.pick_device('auto') == torch.device('cpu')
        args[args.index('--device') + 1] = 'cuda'
        result = run(args, expect_ok=False)
        assert result.exit_code == 2 and 'CUDA is not available' in result.output
    args[args.index('--device') + 1] = 'tpu'
    assert run(args, expect_ok=False).exit_code == 2

def test_fov_flag_changes_conditioning(network, tmp_path):
    pkl, G = network
    run(base_args(pkl, tmp_path, '--fov-deg', '18'))  # What gen_samples' int-typed --fov-deg actually passes.
    sigma = np.load(tmp_path / 'seed000000.npy').ravel()
    expected = reference_sigma(G, 0, 12, fov_deg=18)
    np.testing.assert_allclose(sigma, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(expected, reference_sigma(G, 0, 12), atol=1e-5)

#----------------------------------------------------------------------------
# The script itself, as a user runs it.

@pytest.mark.slow
def test_script_runs_as_a_subprocess(network, tmp_path):
    pkl, _ = network
    cmd = [sys.executable, TOOL, *base_args(pkl, tmp_path / 'o', '--slab', '--res', '16')]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / 'o' / 'seed000000.npy').shape == (8, 9, 9)
    assert 'pt' in proc.stderr     # tqdm progress bar.

#----------------------------------------------------------------------------
# --mesh-convention, --mrc, --force

def ply_vertices(path):
    with open(path, 'rb') as f:
        data = f.read()
    header, body = data.split(b'end_header\n', 1)
    count = int(header.decode('ascii').split('element vertex ')[1].split()[0])
    return np.frombuffer(body[:12 * count], dtype='<f4').reshape(count, 3)

@pytest.mark.parametrize('convention', conventions.CONVENTIONS)
def test_mesh_convention_and_mrc(network, tmp_path, convention):
    pkl, G = network
    level = float(np.median(reference_sigma(G, 0, 12)))
    outdir = tmp_path / convention
    run(base_args(pkl, outdir, '--level', str(level), '--mesh-convention', convention, '--mrc'))
    assert sorted(os.listdir(outdir)) == ['seed000000.mrc', 'seed000000.npy', 'seed000000.ply']
    sigma = np.load(outdir / 'seed000000.npy')
    np.testing.assert_allclose(sigma.ravel(), reference_sigma(G, 0, 12), rtol=1e-5, atol=1e-5)   # Raw, whatever the convention.
    verts, faces = conventions.extract(sigma, CubeGrid(12), convention, level=level)
    assert len(faces) > 0 and ply_counts(outdir / 'seed000000.ply') == (len(verts), len(faces))
    np.testing.assert_allclose(ply_vertices(outdir / 'seed000000.ply'), verts, atol=1e-6)
    with mrcfile.open(outdir / 'seed000000.mrc') as f:
        np.testing.assert_array_equal(f.data, mrc.mrc_map(sigma, CubeGrid(12), convention).data)
        assert f.voxel_size.x == pytest.approx(1 / 12 if convention == 'published' else 1 / 11)
    if convention == 'published':                               # x 2 voxels each end, y 1, z rear 3, z front 1 at N=12.
        assert np.all(verts[:, 0] > -0.5 + 2 / 12) and np.all(verts[:, 2] > -0.5 + 1 / 12)

def test_existing_outputs_are_refused_without_force(network, tmp_path):
    pkl, _ = network
    run(base_args(pkl, tmp_path))
    before = (tmp_path / 'seed000000.npy').read_bytes()
    result = run(base_args(pkl, tmp_path, '--trunc', '0.5'), expect_ok=False)
    assert result.exit_code == 1 and 'seed000000.npy exists; pass --force' in result.output
    assert (tmp_path / 'seed000000.npy').read_bytes() == before
    result = run(base_args(pkl, tmp_path, '--mrc', '--dry-run'), expect_ok=False)
    assert result.exit_code == 1 and 'pass --force' in result.output and not (tmp_path / 'seed000000.mrc').exists()
    result = run(base_args(pkl, tmp_path, '--mrc', '--force', '--dry-run'))
    assert 'seed000000.mrc' in result.output and not (tmp_path / 'seed000000.mrc').exists()
    run(base_args(pkl, tmp_path, '--trunc', '0.5', '--mrc', '--force'))
    assert (tmp_path / 'seed000000.npy').read_bytes() != before and (tmp_path / 'seed000000.mrc').is_file()
    assert sorted(os.listdir(tmp_path)) == ['seed000000.mrc', 'seed000000.npy', 'seed000000.ply']

#----------------------------------------------------------------------------

#----------------------------------------------------------------------------
# Start-up: what importing the tool (all that --help runs) costs.

def test_importing_the_tool_runs_no_collection_and_loads_no_mrcfile():
    """torch's import makes ~165k objects; the cyclic collector, left on, scans them ~400 times while they are made
    (a sixth of start-up). The tool imports with it off and hands it back on, with the start-up objects frozen;
    mrcfile is loaded for --mrc alone."""
    code = ('import gc, sys, tools.extract_sigma; '
        'print(sum(s["collections"] for s in gc.get_stats()), gc.isenabled(), gc.get_freeze_count() > 100000, '
        '"mrcfile" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 0, out.stderr
    collections, enabled, frozen, mrcfile_loaded = out.stdout.split()
    assert int(collections) < 40 and enabled == 'True' and frozen == 'True' and mrcfile_loaded == 'False', out.stdout
