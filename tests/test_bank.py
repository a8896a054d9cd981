"""Sample banks: tools/sample_bank.py on a tiny generator pickle, and eg3d_rlhf.data.bank.Bank on hand-made banks."""

import hashlib
import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.data import bank
from eg3d_rlhf.data.bank import Bank, BankError
from eg3d_rlhf.generators.eg3d import TriPlaneField
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_grid
from tests.helpers.banks import balls_volume, write_bank
from tests.helpers.eg3d import tiny_generator
from tools import sample_bank
from training import legacy
from training.camera_utils import orbit_camera_label

pytestmark = pytest.mark.usefixtures('one_thread')

#----------------------------------------------------------------------------
# eg3d_rlhf.data.bank.Bank.

def test_bank_lists_finished_samples_only(tmp_path):
    grid = slab_grid(32)
    slabs = {k: balls_volume(grid, [((0, 0, 0.15), r)]) for k, r in [('seed000002', 0.1), ('b_2.x', 0.12), ('seed000001', 0.14)]}
    root = write_bank(tmp_path / 'bank', slabs, 32)
    os.makedirs(tmp_path / 'bank' / 'seed000009')                              # Unfinished: a slab, no meta.json.
    np.save(tmp_path / 'bank' / 'seed000009' / bank.SLAB_FILE, slabs['seed000001'])
    os.makedirs(tmp_path / 'bank' / 'bad name')                                # Not an id.
    bank.write_json(str(tmp_path / 'bank' / 'bad name' / bank.META_FILE), dict(id='bad name'))
    (tmp_path / 'bank' / 'notes.txt').write_text('not a sample\n')
    b = Bank(root)
    assert b.ids == ['b_2.x', 'seed000001', 'seed000002'] and len(b) == 3
    assert 'seed000001' in b and 'seed000009' not in b and 'bad name' not in b
    assert b.meta('seed000002')['id'] == 'seed000002'
    x = b.slab('seed000002')
    assert x.dtype == np.float32 and np.array_equal(x, slabs['seed000002'])
    assert b.path('b_2.x', bank.SLAB_FILE) == os.path.join(root, 'b_2.x', bank.SLAB_FILE)
    for missing in ('seed000009', 'seed000003'):
        with pytest.raises(BankError, match=f"no finished sample '{missing}'"):
            b.slab(missing)
    all_slabs = b.slabs()
    assert list(all_slabs) == b.ids and all(np.array_equal(all_slabs[k], slabs[k]) for k in b.ids)
    assert list(b.slabs(['seed000002', 'b_2.x'])) == ['seed000002', 'b_2.x']


def test_bank_errors(tmp_path):
    with pytest.raises(BankError, match='no such bank folder'):
        Bank(str(tmp_path / 'missing'))
    os.makedirs(tmp_path / 'empty' / 'seed000000')                             # Only an unfinished sample.
    with pytest.raises(BankError, match='no finished samples'):
        Bank(str(tmp_path / 'empty'))
    grid = slab_grid(32)
    root = write_bank(tmp_path / 'bank', {k: balls_volume(grid, [((0, 0, 0.15), 0.1)]) for k in ('a', 'b', 'c')}, 32)
    np.save(os.path.join(root, 'b', bank.SLAB_FILE), np.zeros([16, 18, 16], dtype=np.float16))
    b = Bank(root)
    with pytest.raises(BankError, match=r'b.sigma_slab\.npy: shape \(16, 18, 16\) differs from \(16, 18, 17\)'):
        b.slabs()
    assert list(b.slabs(['a', 'c'])) == ['a', 'c']                            # The others still load.
    assert b.slab('b').dtype == np.float32                                     # Stored float16, read as float32.


def test_bank_grid_rebuilds_the_slab_grid(tmp_path):
    crop = SlabCrop(x_left=0.2, x_right=0.3, y_bottom=0.1, y_top=0.25, z_rear=0.5, z_front=0.05)
    want = slab_grid(40, cube_length=2.0, crop=crop)
    root = write_bank(tmp_path / 'bank', {'s': np.zeros(want.shape, dtype=np.float32)}, 40, cube_length=2.0, crop=crop)
    grid = Bank(root).grid('s')
    assert (grid.resolution, grid.cube_length, grid.start, grid.stop, grid.shape) == \
        (40, 2.0, want.start, want.stop, want.shape)
    assert grid.start == (8, 4, 20) and grid.stop == (28, 30, 38)              # int(f * 40) trimmed from each face.
    assert np.allclose(grid.index_to_world([0, 0, 0]), [-1 + 8 * 2 / 39, -1 + 4 * 2 / 39, -1 + 20 * 2 / 39])
    assert bank.grid_from_meta(Bank(root).meta('s')['slab']).shape == want.shape

#----------------------------------------------------------------------------
# tools/sample_bank.py on a tiny generator pickle.

@pytest.fixture(scope='module')
def network(tiny_network_pkl):
    return tiny_network_pkl


def run(network, outdir, *args, trust=True):
    argv = ['--network', network, '--outdir', str(outdir), '--res', '32', '--preview-res', '32', '--device', 'cpu',
        *(['--trust-pickle'] if trust else []), *args]
    return CliRunner().invoke(sample_bank.main, argv)


def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope='module')
def made(network, tmp_path_factory):
    """A bank of seeds 0 and 2, made once; tests must not change it."""
    outdir = tmp_path_factory.mktemp('made') / 'bank'
    ok(run(network, outdir, '--seeds', '2,0'))
    return outdir


def expected_slab(seed, truncation_psi, truncation_cutoff, resolution=32):
    """gen_samples' z for the seed, mapped from the frontal camera, sigma sampled on the slab grid (no flip)."""
    G = tiny_generator().eval()
    c = orbit_camera_label(G.rendering_kwargs)
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    field = TriPlaneField.from_latents(G, z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
    return field.sample_grid(slab_grid(resolution))[0].numpy()


def test_sample_bank_writes_every_file_of_every_seed(network, made):
    assert sorted(os.listdir(made)) == ['bank.json', 'seed000000', 'seed000002']
    with open(network, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    camera = orbit_camera_label(tiny_generator().rendering_kwargs)[0].tolist()
    settings = Bank.read_settings(str(made))
    for seed in (0, 2):
        folder = made / f'seed{seed:06d}'
        assert sorted(os.listdir(folder)) == sorted(['sigma_slab.npy', 'image.png', 'meta.json', 'preview_front.png',
            'preview_three_quarter.png', 'preview_profile.png'])
        meta = json.loads((folder / 'meta.json').read_text())
        assert meta['id'] == f'seed{seed:06d}' and meta['seed'] == seed
        assert meta['truncation_psi'] == 0.7 and meta['truncation_cutoff'] == 14 and meta['network_sha256'] == digest
        assert meta['camera']['c'] == pytest.approx(camera) and meta['preview_level'] == 10
        assert {k: v for k, v in meta.items() if k not in ('id', 'seed')} == settings
        slab = meta['slab']
        assert slab['resolution'] == 32 and slab['shape'] == [16, 18, 17] and slab['dtype'] == 'float16'
        x = np.load(folder / 'sigma_slab.npy')
        assert x.dtype == np.float16 and list(x.shape) == slab['shape']
        assert np.allclose(x, expected_slab(seed, 0.7, 14), rtol=2e-3, atol=1e-3)
        with PIL.Image.open(folder / 'image.png') as im:
            assert im.size == (64, 64) and im.mode == 'RGB'
        for view in ('front', 'three_quarter', 'profile'):
            with PIL.Image.open(folder / f'preview_{view}.png') as im:
                assert im.size == (32, 32)
    b = Bank(str(made))
    assert b.ids == ['seed000000', 'seed000002']
    assert b.grid('seed000000').shape == b.slab('seed000000').shape == (16, 18, 17)
    assert not np.array_equal(b.slab('seed000000'), b.slab('seed000002'))


def test_sample_bank_is_deterministic(network, made, tmp_path):
    ok(run(network, tmp_path / 'again', '--seeds', '0'))
    for name in ('sigma_slab.npy', 'image.png', 'preview_front.png', 'preview_profile.png'):
        assert (tmp_path / 'again' / 'seed000000' / name).read_bytes() == (made / 'seed000000' / name).read_bytes()


def test_sample_bank_resumes_and_redoes_only_unfinished_samples(network, tmp_path):
    outdir = tmp_path / 'bank'
    ok(run(network, outdir, '--seeds', '0-2'))
    original = {s: np.load(outdir / f'seed00000{s}' / 'sigma_slab.npy') for s in range(3)}
    for s in range(3):                                                      # Markers a rewrite would lose.
        (outdir / f'seed00000{s}' / 'image.png').write_bytes(b'marker')
    assert '0 samples written, 3 were already there' in ok(run(network, outdir, '--seeds', '0-2')).output
    assert all((outdir / f'seed00000{s}' / 'image.png').read_bytes() == b'marker' for s in range(3))

    os.remove(outdir / 'seed000001' / 'meta.json')                          # As if interrupted mid-sample.
    np.save(outdir / 'seed000001' / 'sigma_slab.npy', np.zeros([2, 2, 2], dtype=np.float16))
    assert 'write 1 samples (2 already done)' in ok(run(network, outdir, '--seeds', '0-2', '--dry-run')).output
    assert not os.path.exists(outdir / 'seed000001' / 'meta.json')
    assert '1 samples written, 2 were already there' in ok(run(network, outdir, '--seeds', '0-2')).output
    assert os.path.isfile(outdir / 'seed000001' / 'meta.json')
    assert np.array_equal(np.load(outdir / 'seed000001' / 'sigma_slab.npy'), original[1])
    assert (outdir / 'seed000001' / 'image.png').read_bytes() != b'marker'
    assert (outdir / 'seed000000' / 'image.png').read_bytes() == b'marker'
    assert (outdir / 'seed000002' / 'image.png').read_bytes() == b'marker'


@pytest.mark.parametrize('args, changed', [
    (['--res', '40'], 'slab'),
    (['--dtype', 'float32'], 'slab'),
    (['--trunc', '0.5'], 'truncation_psi'),
    (['--trunc-cutoff', '3'], 'truncation_cutoff'),
    (['--trunc', '0.5', '--trunc-cutoff', '3'], 'truncation_psi, truncation_cutoff'),
    (['--level', '5'], 'preview_level'),
    (['--preview-res', '40'], 'preview_res'),
    (['--mesh-convention', 'published'], 'mesh_convention'),
])
def test_sample_bank_refuses_a_bank_made_with_other_settings(network, made, args, changed):
    before = (made / 'bank.json').read_text()
    result = run(network, made, '--seeds', '0-3', *args)
    assert result.exit_code != 0 and f'was made with other {changed}; use a new --outdir' in result.output
    assert sorted(os.listdir(made)) == ['bank.json', 'seed000000', 'seed000002']
    assert (made / 'bank.json').read_text() == before


def test_sample_bank_refuses_a_bank_made_by_another_network(made, tmp_path):
    G = tiny_generator(seed=1).eval()
    other = str(tmp_path / 'other.pkl')
    legacy.save_network_pkl(other, dict(G=G, G_ema=G, D=None, augment_pipe=None, training_set_kwargs=None))
    result = run(other, made, '--seeds', '0-3')
    assert result.exit_code != 0 and 'was made with other network_sha256' in result.output
    assert sorted(os.listdir(made)) == ['bank.json', 'seed000000', 'seed000002']


def test_sample_bank_needs_trust_and_a_readable_pickle(network, tmp_path):
    result = run(network, tmp_path / 'bank', '--seeds', '0', trust=False)
    assert result.exit_code != 0 and 'pass --trust-pickle' in result.output and not os.path.exists(tmp_path / 'bank')
    result = run(str(tmp_path / 'missing.pkl'), tmp_path / 'bank', '--seeds', '0')
    assert result.exit_code != 0 and 'missing.pkl' in result.output and not os.path.exists(tmp_path / 'bank')


@pytest.mark.parametrize('seeds, message', [('5-3', 'empty range "5-3"'), ('1,x', 'cannot parse "x"'), ('', 'cannot parse ""')])
def test_sample_bank_rejects_bad_seed_lists(network, tmp_path, seeds, message):
    result = run(network, tmp_path / 'bank', '--seeds', seeds)
    assert result.exit_code == 2 and message in result.output and not os.path.exists(tmp_path / 'bank')


def test_sample_bank_seed_list_with_ranges(network, tmp_path):
    result = ok(run(network, tmp_path / 'bank', '--seeds', '7, 3-4', '--dry-run'))
    assert 'write 3 samples (0 already done)' in result.output
    ok(run(network, tmp_path / 'bank', '--seeds', '7,3-4'))
    assert Bank(str(tmp_path / 'bank')).ids == ['seed000003', 'seed000004', 'seed000007']


def test_sample_bank_dtype_truncation_and_level(network, made, tmp_path):
    outdir = tmp_path / 'bank'
    ok(run(network, outdir, '--seeds', '0', '--dtype', 'float32', '--trunc', '0.5', '--trunc-cutoff', '1', '--level', '0'))
    meta = Bank(str(outdir)).meta('seed000000')
    assert meta['slab']['dtype'] == 'float32' and meta['truncation_psi'] == 0.5 and meta['truncation_cutoff'] == 1
    x = np.load(outdir / 'seed000000' / 'sigma_slab.npy')
    assert x.dtype == np.float32
    assert np.allclose(x, expected_slab(0, 0.5, 1), atol=1e-5)
    assert not np.allclose(x, expected_slab(0, 0.5, 14), atol=1e-3)          # Only the first ws were truncated.
    # The tiny generator's sigma stays within +-1: level 0 crosses it, the default level 10 draws nothing.
    assert meta['preview_level'] == 0
    with PIL.Image.open(outdir / 'seed000000' / 'preview_front.png') as im:
        assert np.asarray(im).min() < 255
    with PIL.Image.open(made / 'seed000000' / 'preview_front.png') as im:
        assert np.asarray(im).min() == 255


def test_sample_bank_published_previews_show_the_border(network, tmp_path):
    """At N=64 the slab keeps cube z index 57, inside the published front border (the outer 30/256): published
    previews draw the slab with that layer at -1000, the slab itself is stored raw either way."""
    args = ('--seeds', '0', '--res', '64', '--level', '0')
    ok(run(network, tmp_path / 'ours', *args))
    ok(run(network, tmp_path / 'published', *args, '--mesh-convention', 'published'))
    ours, published = (tmp_path / name / 'seed000000' for name in ('ours', 'published'))
    assert (ours / 'sigma_slab.npy').read_bytes() == (published / 'sigma_slab.npy').read_bytes()
    assert (ours / 'preview_front.png').read_bytes() != (published / 'preview_front.png').read_bytes()
    assert Bank(str(tmp_path / 'published')).meta('seed000000')['mesh_convention'] == 'published'
    settings = json.loads((tmp_path / 'ours' / 'bank.json').read_text())
    assert settings.pop('mesh_convention') == 'ours'
    (tmp_path / 'ours' / 'bank.json').write_text(json.dumps(settings))     # A bank made before the setting existed.
    ok(run(network, tmp_path / 'ours', '--seeds', '0-1', '--res', '64', '--level', '0'))
    assert run(network, tmp_path / 'ours', *args, '--mesh-convention', 'published').exit_code == 1


def test_sample_bank_preview_resolution(network, tmp_path):
    ok(run(network, tmp_path / 'bank', '--seeds', '0', '--preview-res', '24'))
    with PIL.Image.open(tmp_path / 'bank' / 'seed000000' / 'preview_profile.png') as im:
        assert im.size == (24, 24)
    for bad in (['--preview-res', '8'], ['--res', '8']):
        result = run(network, tmp_path / 'other', '--seeds', '0', *bad)
        assert result.exit_code == 2 and 'is not in the range x>=16' in result.output


def test_sample_bank_dry_run_writes_nothing(network, tmp_path):
    result = ok(run(network, tmp_path / 'bank', '--seeds', '0-4', '--dry-run'))
    assert 'would load' in result.output and 'on cpu' in result.output and 'write 5 samples' in result.output
    assert 'as float16' in result.output and 'previews 32 px' in result.output
    assert not os.path.exists(tmp_path / 'bank')
    result = ok(run('bundled', tmp_path / 'bank', '--seeds', '0', '--dry-run', trust=False))   # Shipped: no trust asked.
    assert os.path.join('checkpoints', 'synthetic-heads64.pkl') in result.output and not os.path.exists(tmp_path / 'bank')


def test_sample_bank_device_choice(network, tmp_path):
    result = run(network, tmp_path / 'bank', '--seeds', '0', '--device', 'tpu')
    assert result.exit_code == 2 and "'tpu' is not one of" in result.output
    if not torch.cuda.is_available():
        result = run(network, tmp_path / 'bank', '--seeds', '0', '--device', 'cuda')
        assert result.exit_code == 2 and 'CUDA is not available' in result.output
    assert not os.path.exists(tmp_path / 'bank')


def test_bank_writer_refuses_an_adapter_whose_sample_meta_clashes_with_the_settings(tmp_path):
    from eg3d_rlhf.generators.base import Generator3D

    class Clashing(Generator3D):
        def sample_meta(self, seed, condition=None):
            return dict(super().sample_meta(seed, condition), preview_res=1)     # A bank setting's name.

    writer = bank.BankWriter(str(tmp_path / 'bank'), Clashing(), 16)
    with pytest.raises(BankError, match='both name preview_res'):
        writer.write(0)
    assert not (tmp_path / 'bank').exists()                                     # Refused before anything is written.
