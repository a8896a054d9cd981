"""Sample banks: tools/sample_bank.py on a tiny generator pickle, and eg3d_rlhf.data.bank.Bank on hand-made banks;
damaged bank files (meta.json, bank.json, slabs) are refused in one line, by Bank and by every tool that reads them."""

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
from tests.helpers.cli import digest, files_under, refused_in_one_line
from tests.helpers.eg3d import tiny_generator
from tests.helpers.scored import NPY, copy_bank, run_tool, write_npy
from tools import sample_bank, score_bank, tails
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

#----------------------------------------------------------------------------
# Bank files: meta.json and bank.json that are not a JSON object of the keys a bank needs.

def edit_meta(text=None, **slab):
    """An edit of a meta.json: replaced by `text`, or its slab's entries set (None removes the slab)."""
    def edit(path):
        if text is not None:
            path.write_bytes(text)
            return
        data = json.loads(path.read_text())
        if slab.get('slab', 0) is None:
            del data['slab']
        else:
            data['slab'].update(slab)
        path.write_text(json.dumps(data))
    return edit


META = [
    ('not JSON', edit_meta(b'{"id": '), 'not JSON (Expecting value at line 1 column 8)'),
    ('a list', edit_meta(b'[1, 2]'), 'holds a JSON array; expected an object'),
    ('deep', edit_meta(b'[' * 100000), 'JSON nested too deeply'),
    ('not UTF-8', edit_meta(b'\xff\xfe{}'), 'not UTF-8 text (invalid start byte at byte 0)'),
    ('huge', edit_meta(b'{"id": "' + b'x' * (2 << 20) + b'"}'), 'larger than 1 MiB'),
    ('no slab', edit_meta(slab=None), 'has no "slab"'),
    ('resolution 1', edit_meta(resolution=1), 'slab.resolution is 1; expected an integer in [2, 4096]'),
    ('resolution text', edit_meta(resolution='40'), "slab.resolution is '40'; expected an integer in [2, 4096]"),
    ('cube length 0', edit_meta(cube_length=0), 'slab.cube_length is 0; expected a finite number in (0, 1000]'),
    ('crop a list', edit_meta(crop=[1]), 'slab.crop is a list; expected an object of the fractions x_left, x_right'),
    ('crop too wide', edit_meta(crop=dict(x_left=0.6, x_right=0.6)), 'slab.crop keeps nothing on x'),
    ('exact text', edit_meta(exact_eg3d_grid='yes'), "slab.exact_eg3d_grid is 'yes'; expected true or false"),
]


@pytest.mark.parametrize('case, edit, message', META, ids=[m[0] for m in META])
def test_a_damaged_meta_json_is_refused_in_one_line_naming_the_file_and_key(scored, tmp_path, case, edit, message):
    bank = copy_bank(scored, tmp_path)
    meta = bank / 'ball01' / 'meta.json'
    edit(meta)
    before = files_under(bank)
    with pytest.raises(BankError, match='^' + str(meta).replace('.', r'\.')) as err:        # Before: a traceback.
        Bank(str(bank)).check_slabs()
    assert message in str(err.value) and '\n' not in str(err.value)
    refused_in_one_line(run_tool(score_bank, bank, scored['reward'], tmp_path / 'out', '--dry-run'), f'{meta}: {message}')
    assert files_under(bank) == before


@pytest.mark.parametrize('content, message', [(b'[]', 'holds a JSON array; expected an object'),
    (b'[' * 100000, 'JSON nested too deeply'), (b'\xff', 'not UTF-8 text')])
def test_a_damaged_bank_json_is_refused_in_one_line(scored, tmp_path, content, message):
    from tools import sample_bank
    bank = copy_bank(scored, tmp_path)
    (bank / 'bank.json').write_bytes(content)
    with pytest.raises(BankError, match=str(bank / 'bank.json').replace('.', r'\.') + ': ' + message):
        Bank.read_settings(str(bank))
    result = CliRunner().invoke(sample_bank.main, ['--network', 'bundled-flow', '--seeds', '0', '--outdir', str(bank)])
    refused_in_one_line(result, f'{bank / "bank.json"}: {message}')
    assert (bank / 'bank.json').read_bytes() == content

#----------------------------------------------------------------------------
# Array files: a slab that is an .npz, or whose header claims more than the file holds (the .npy files:
# tests/helpers/scored.py).

@pytest.mark.parametrize('case', list(NPY))
def test_a_slab_that_is_no_whole_npy_is_refused_before_allocating(scored, tmp_path, case):
    bank = copy_bank(scored, tmp_path)
    slab = bank / 'ball01' / 'sigma_slab.npy'
    write_npy(slab, case)
    for read in (lambda b: b.check_slabs(), lambda b: b.slab('ball01')):     # Before: a traceback, or 4 PiB asked for.
        with pytest.raises(BankError, match='^' + str(slab).replace('.', r'\.')) as err:
            read(Bank(str(bank)))
        assert NPY[case] in str(err.value) and '\n' not in str(err.value)
    refused_in_one_line(run_tool(tails, bank, scored['reward'], tmp_path / 'out', '--dry-run'), f'{slab}: {NPY[case]}')

#----------------------------------------------------------------------------
# Slabs that are not finite: refused on write, on read, and by every analysis tool that reads them.

def test_banks_refuse_non_finite_slabs_on_write_and_read(tiny_pair, tmp_path):
    import numpy as np
    import torch
    from eg3d_rlhf.cli import load_generator
    from eg3d_rlhf.data.bank import Bank, BankError, BankWriter
    G = load_generator(tiny_pair[0], torch.device('cpu'))
    writer = BankWriter(str(tmp_path / 'bank'), G, resolution=24, dtype='float32', preview_res=16)
    writer.open()
    writer.write(0)
    field = G.field
    G.field = lambda seeds, condition=None: type('F', (), {'sample_grid': lambda self, grid: torch.full(
        [1, *grid.shape], float('nan'))})()
    with pytest.raises(BankError, match='seed000001: the generator.s slab holds nan or inf; nothing written'):
        writer.write(1)
    assert not (tmp_path / 'bank' / 'seed000001').exists()
    G.field = field
    slab = tmp_path / 'bank' / 'seed000000' / 'sigma_slab.npy'
    bad = np.load(slab)
    bad[0, 0, 0] = np.inf
    np.save(slab, bad)
    with pytest.raises(BankError, match=r'sigma_slab.npy: holds nan or inf; redraw the sample'):
        Bank(str(tmp_path / 'bank')).slab('seed000000')
    slab.write_bytes(b'\x93NUMPY broken')
    with pytest.raises(BankError, match=r'sigma_slab.npy: cannot be read'):
        Bank(str(tmp_path / 'bank')).slab('seed000000')


def four_sample_bank(tiny_pair, folder):
    """A float32 bank of seeds 0-3 of tiny_pair's generator on the 24 cube, written into `folder`."""
    import torch
    from eg3d_rlhf.cli import load_generator
    from eg3d_rlhf.data.bank import BankWriter
    writer = BankWriter(str(folder), load_generator(tiny_pair[0], torch.device('cpu')), resolution=24, dtype='float32',
        preview_res=16)
    writer.open()
    for seed in range(4):
        writer.write(seed)


def test_analysis_tools_refuse_a_bank_with_a_nan_slab_in_one_line(tiny_pair, tmp_path):
    import numpy as np
    from tools import attribute, embed, tails
    four_sample_bank(tiny_pair, tmp_path / 'bank')
    slab = tmp_path / 'bank' / 'seed000002' / 'sigma_slab.npy'
    bad = np.load(slab)
    bad[3, 3, 3] = np.nan
    np.save(slab, bad)
    before = digest(slab)
    common = ['--bank', str(tmp_path / 'bank'), '--reward-model', tiny_pair[2]]
    for tool, args in ((attribute, ['--outdir', str(tmp_path / 'a')]), (embed, ['--outdir', str(tmp_path / 'e')]),
            (tails, ['--outdir', str(tmp_path / 't')])):
        refused_in_one_line(CliRunner().invoke(tool.main, common + args), 'sigma_slab.npy: holds nan or inf')
    assert digest(slab) == before

#----------------------------------------------------------------------------
# A broken slab file is found before the work starts, not after it.

@pytest.mark.parametrize('damage, message', [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), 'its header says [12, 14, 13] float32 (8.53 KiB), but the file holds 8636'),
    (lambda p: p.write_bytes(b'not numpy at all'), 'cannot be read'),
    (lambda p: __import__('numpy').save(p, __import__('numpy').zeros([3, 3, 3], 'float32')), 'shape [3, 3, 3], but meta.json says [12, 14, 13]'),
])
def test_tools_check_every_slab_file_before_any_work(tiny_pair, tmp_path, damage, message):
    from tools import annotate, embed, score_bank, tails
    four_sample_bank(tiny_pair, tmp_path / 'bank')
    slab = tmp_path / 'bank' / 'seed000003' / 'sigma_slab.npy'
    damage(slab)
    before = digest(slab)
    bank, reward = str(tmp_path / 'bank'), tiny_pair[2]
    for tool, args in ((score_bank, ['--bank', bank, '--reward-model', reward, '--out', str(tmp_path / 's.csv')]),
            (embed, ['--bank', bank, '--reward-model', reward, '--outdir', str(tmp_path / 'e')]),
            (tails, ['--bank', bank, '--reward-model', reward, '--outdir', str(tmp_path / 't')]),
            (annotate, ['pairs', '--bank', bank, '--annotator', 'oracle:nose', '--pairs', '3', '--out', str(tmp_path / 'l.jsonl')])):
        refused_in_one_line(CliRunner().invoke(tool.main, args), f'{slab}: {message}')
    assert digest(slab) == before and sorted(p.name for p in tmp_path.iterdir()) == ['bank']
