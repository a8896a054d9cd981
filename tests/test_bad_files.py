"""Files that read but hold nonsense, and files that are not what they claim (issue 31, part B): each is refused in one
line naming the file, the key or row, and the fix, before any work and with nothing written; a reward score that is
not finite stops the tool scoring it, naming the sample and the cause."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.data.bank import Bank, BankError
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, load_reward, save_reward
from eg3d_rlhf.rewards.contract import InputSpec
from tests.helpers.banks import ball_bank
from tests.helpers.cli import digest, refused_in_one_line
from tests.helpers.rewards import tiny_sigma
from tools import attribute, embed, score_bank, tails, train_reward

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def scored(tmp_path_factory):
    """A bank of four balls on the 40^3 slab and a tiny sigma reward of that slab."""
    root = tmp_path_factory.mktemp('scored')
    bank, _ = ball_bank(root / 'bank', 4, seed=2)
    reward = str(root / 'reward.pt')
    save_reward(reward, tiny_sigma(seed=7).eval(), 'sigma', Bank(bank).meta('ball00')['slab'])
    return dict(bank=bank, reward=reward, slab=Bank(bank).meta('ball00')['slab'])


def copy_bank(scored, tmp_path):
    return shutil.copytree(scored['bank'], tmp_path / 'bank')


def files_under(folder):
    """{relative path: sha256} of every file under `folder`."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob('*')) if p.is_file()}


def run_tool(tool, bank, reward, outdir, *extra):
    """tool's command line on a bank and a reward, writing under outdir (score_bank: outdir/scores.csv)."""
    out = ['--out', str(outdir / 'scores.csv')] if tool is score_bank else ['--outdir', str(outdir)]
    extra = ['--preview-res', '16', *extra] if tool is tails else list(extra)
    return CliRunner().invoke(tool.main, ['--device', 'cpu', '--bank', str(bank), '--reward-model', str(reward), *out,
        *extra])

TOOLS = [score_bank, tails, attribute, embed]
TOOL_IDS = ['score_bank', 'tails', 'attribute', 'embed']

#----------------------------------------------------------------------------
# Silent wrong results: a score that is not finite stops every tool that scores, naming the sample and the cause.

def absurd_case(case, scored, tmp_path):
    """(bank, reward) whose scores overflow float32: the reward's weights x 1e30, its affine input scale 1e38, or a
    finite slab of +-3e38."""
    bank, reward = scored['bank'], str(tmp_path / 'absurd.pt')
    if case == 'weights x 1e30':
        model = tiny_sigma(seed=7).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1e30)
        save_reward(reward, model, 'sigma', scored['slab'])
    elif case == 'affine scale 1e38':
        save_reward(reward, tiny_sigma(seed=7).eval(), 'sigma', InputSpec(scored['slab'], 'affine', scale=1e38))
    else:
        bank, reward = copy_bank(scored, tmp_path), scored['reward']
        slab = np.load(bank / 'ball02' / 'sigma_slab.npy')
        np.save(bank / 'ball02' / 'sigma_slab.npy', np.where(slab > 10, 3e38, -3e38).astype(np.float32))
    return bank, reward

ABSURD = {
    'weights x 1e30': ('ball00', 'the reward model overflows float32 on a finite input'),
    'affine scale 1e38': ('ball00', "overflows float32 in the reward's input preparation (affine, scale 1e+38"),
    'slab +-3e38': ('ball02', "its slab (sigma -3e+38 to 3e+38) overflows float32 in the reward's input preparation"),
}


@pytest.mark.parametrize('case', list(ABSURD))
@pytest.mark.parametrize('tool', TOOLS, ids=TOOL_IDS)
def test_a_score_that_is_not_finite_stops_the_tool_naming_the_sample_and_the_cause(scored, tmp_path, tool, case):
    bank, reward = absurd_case(case, scored, tmp_path)
    sample, cause = ABSURD[case]
    result = run_tool(tool, bank, reward, tmp_path / 'out')      # Before: rc 0, a nan "highest" or "score": null.
    refused_in_one_line(result, f'{sample}: the sigma reward scores it ')
    assert cause in result.output and not (tmp_path / 'out' / 'scores.csv').exists(), result.output
    assert not (tmp_path / 'out' / 'report.json').exists()


def test_a_cube_whose_score_is_not_finite_is_named(scored, tmp_path):
    cube = np.full([40, 40, 40], -3e38, dtype=np.float32)
    cube[15:25, 15:25, 15:25] = 3e38
    np.save(tmp_path / 'cube.npy', cube)
    result = run_tool(tails, scored['bank'], scored['reward'], tmp_path / 'out', '--cubes', str(tmp_path / 'cube.npy'))
    refused_in_one_line(result, f'{tmp_path / "cube.npy"}: the sigma reward scores it ')

#----------------------------------------------------------------------------
# One grid check: a bank on another grid (here another cube length) is refused by every tool that scores it.

@pytest.mark.parametrize('tool', TOOLS, ids=TOOL_IDS)
def test_every_scoring_tool_refuses_a_bank_of_another_cube_length(scored, tmp_path, tool):
    bank = copy_bank(scored, tmp_path)
    for meta in bank.glob('*/meta.json'):
        data = json.loads(meta.read_text())
        data['slab']['cube_length'] = 2.0
        meta.write_text(json.dumps(data))
    result = run_tool(tool, bank, scored['reward'], tmp_path / 'out', '--dry-run')     # Before: 3 of 4 went on.
    refused_in_one_line(result, f'{bank}: slabs of the 40^3 grid, shape [20, 22, 20], cube length 2, but '
        f'{scored["reward"]} was trained on the 40^3 grid, shape [20, 22, 20], cube length 1')
    assert not (tmp_path / 'out').exists()

#----------------------------------------------------------------------------
# Flow checkpoints: every weight finite, every config number finite and in range, or refused at load.

@pytest.fixture(scope='module')
def flow_state(tmp_path_factory):
    from eg3d_rlhf.generators import flow_heads
    from tests.helpers.flow import TINY
    path = str(tmp_path_factory.mktemp('flow') / 'flow.pt')
    flow_heads.save_flow(path, flow_heads.build_pipeline(TINY, init_seed=0), TINY)
    return flow_heads.read_flow(path)


@pytest.mark.parametrize('key, value, message', [
    ('cube_length', math.inf, 'cube_length must be a finite number in (0, 1000], got inf'),
    ('cube_length', 1e300, 'cube_length must be a finite number in (0, 1000], got 1e+300'),
    ('truncation', math.inf, 'truncation must be a finite number in (0, 8] (fine voxels), got inf'),
    ('truncation', 'wide', "truncation must be a finite number in (0, 8] (fine voxels), got 'wide'"),
    ('ode_steps', 10 ** 9, 'ode_steps must be an integer in [1, 10000], got 1000000000'),
    ('data_seed', -1, 'data_seed must be an integer in [0, 4294967295], got -1'),
    ('sampler', 'rk4', "unknown sampler 'rk4'"),
    ('weight', math.nan, 'stage 0 weight convs.0.weight holds nan or inf'),
    ('training.step', math.nan, 'training.step is nan; expected an integer >= 0'),
])
def test_a_flow_checkpoint_with_a_non_finite_or_absurd_number_is_refused_at_load(flow_state, tmp_path, key, value,
        message):
    from eg3d_rlhf.generators import flow_heads
    from tools import extract_sigma
    state = dict(flow_state, config=dict(flow_state['config']), state_dicts=[dict(sd) for sd in flow_state['state_dicts']])
    if key == 'weight':
        state['state_dicts'][0]['convs.0.weight'] = torch.full_like(state['state_dicts'][0]['convs.0.weight'], value)
    elif key == 'training.step':
        state['training'] = dict(step=value)
    else:
        state['config'][key] = value
    path = tmp_path / 'flow.pt'
    torch.save(state, path)
    with pytest.raises(ValueError, match='^' + f'{path}: '.replace('.', r'\.')) as err:   # Before: 0 faces everywhere.
        flow_heads.read_flow(str(path))
    assert message in str(err.value) and '\n' not in str(err.value)
    result = CliRunner().invoke(extract_sigma.main, ['--network', str(path), '--seeds', '0', '--res', '12', '--outdir',
        str(tmp_path / 'x')])
    refused_in_one_line(result, message)
    assert not (tmp_path / 'x').exists()

#----------------------------------------------------------------------------
# Score files (--truth, --scores): finite numbers, UTF-8, sane fields, every sample; refused before any training.

def write_truth(path, case, ids):
    rows = {
        'nan': [f'{i},nan' for i in ids],
        'inf': [f'{i},{"-inf" if n == 3 else n}' for n, i in enumerate(ids)],
        'not UTF-8': [f'{i},{n}' for n, i in enumerate(ids)] + ['\udcff,1'],
        'a huge field': [f'{ids[0]},{"1" * 200000}'],
        'a huge id': ['x' * 200000 + ',1'],
        'missing ids': [f'{i},{n}' for n, i in enumerate(ids[:2])],
        'an id twice': [f'{i},{n}' for n, i in enumerate(ids)] + [f'{ids[1]},7'],
    }[case]
    path.write_bytes('\n'.join(['id,reward'] + rows + ['']).encode('utf-8', 'surrogateescape'))

TRUTH = {
    'nan': ':2: reward nan is not a finite number; give each sample a finite score',
    'inf': ':5: reward -inf is not a finite number; give each sample a finite score',
    'not UTF-8': ': not UTF-8 text (invalid start byte at byte',
    'a huge field': ':2: field larger than field limit (131072)',
    'a huge id': ':2: field larger than field limit (131072)',
    'missing ids': ': no score for 38 of the 40 samples (first: ball02); give one row per sample',
    'an id twice': ':42: sample id ball01 is given twice (first on line 3)',
}


@pytest.mark.parametrize('case', list(TRUTH))
def test_a_truth_file_that_is_not_a_finite_score_per_sample_is_refused_before_training(balls, tiny_models, tmp_path,
        case):
    from eg3d_rlhf.data import scores
    truth = tmp_path / 'truth.csv'
    write_truth(truth, case, sorted(balls['radii']))
    before = digest(truth)
    with pytest.raises(scores.ScoresError, match='^' + str(truth).replace('.', r'\.')) as err:
        scores.read_scores(str(truth), sorted(balls['radii']), complete=True)
    assert TRUTH[case] in str(err.value) and '\n' not in str(err.value)
    result = CliRunner().invoke(train_reward.main, ['--device', 'cpu', '--bank', balls['bank'], '--labels',
        balls['labels'], '--epochs', 1, '--truth', str(truth), '--out', str(tmp_path / 'r.pt')])
    refused_in_one_line(result, f'{truth}{TRUTH[case]}')           # Before: "0.0%" and a checkpoint, or a traceback.
    assert sorted(p.name for p in tmp_path.iterdir()) == ['truth.csv'] and digest(truth) == before

#----------------------------------------------------------------------------
# Resume snapshots: progress and resume state of the right types and finite, or refused at --dry-run.

@pytest.mark.parametrize('field, value, message', [
    ('progress.kimg', math.nan, 'progress.kimg is nan; expected a finite number >= 0'),
    ('progress.kimg', '4', "progress.kimg is '4'; expected a finite number >= 0"),
    ('progress.tick', 1.5, 'progress.tick is 1.5; expected an integer >= 0'),
    ('progress', [4], 'progress is a list; expected a dict'),
    ('resume_state.kimg', math.inf, 'resume_state.kimg is inf; expected a finite number >= 0'),
    ('resume_state.batch_idx', -1, 'resume_state.batch_idx is -1; expected an integer >= 0'),
    ('resume_state.optimizers', None, 'resume_state.optimizers is None; expected a dict'),
])
def test_a_resume_snapshot_with_a_non_finite_or_mistyped_field_is_refused(data, start_pkl, tmp_path, field, value,
        message):
    import train
    from tests.helpers.train import base_args
    from training import legacy
    snapshot = legacy.load_network_pkl(start_pkl, trust=True)
    snapshot['progress'] = dict(kimg=0.004, tick=1)
    snapshot['resume_state'] = dict(kimg=0.004, tick=1, batch_idx=2, optimizers={}, loss={}, random={})
    where, _, key = field.partition('.')
    if key:
        snapshot[where][key] = value
    else:
        snapshot[where] = value
    pkl = tmp_path / 'snapshot.pkl'
    legacy.save_network_pkl(str(pkl), snapshot)
    result = CliRunner().invoke(train.main, base_args(data, tmp_path / 'runs', '--resume', str(pkl), '--trust-pickle',
        '--kimg', '0.008', '--dry-run'))
    refused_in_one_line(result, f'--resume: {pkl}: {message}')    # Before: accepted.
    assert not (tmp_path / 'runs').exists()

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
# Array files: a slab or a region volume that is an .npz, or whose header claims more than the file holds.

def write_npy(path, case):
    """A file at `path` that is not a usable .npy: an .npz archive, a header claiming 3.5 PiB, or truncated data."""
    if case == 'npz':
        with open(path, 'wb') as f:
            np.savez(f, array=np.zeros([20, 22, 20], dtype=np.float32))
        return
    shape = (1 << 17, 1 << 17, 1 << 16) if case == 'huge' else (20, 22, 20)
    with open(path, 'wb') as f:
        np.lib.format.write_array_header_1_0(f, dict(descr='<f4', fortran_order=False, shape=shape))
        f.write(b'\0' * 1000)

NPY = {
    'npz': 'a .npz archive, not a .npy array',
    'huge': 'its header says [131072, 131072, 65536] float32 (4 PiB), but the file holds 1000 bytes of data',
    'truncated': 'its header says [20, 22, 20] float32 (34.4 KiB), but the file holds 1000 bytes of data',
}


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


@pytest.mark.parametrize('case', list(NPY))
def test_a_region_volume_that_is_no_whole_npy_is_refused(scored, tmp_path, case):
    write_npy(tmp_path / 'regions.npy', case)
    (tmp_path / 'names.json').write_text('["nose"]')
    result = run_tool(attribute, scored['bank'], scored['reward'], tmp_path / 'out', '--regions',
        str(tmp_path / 'regions.npy'), '--region-names', str(tmp_path / 'names.json'), '--dry-run')
    refused_in_one_line(result, f'--regions: {tmp_path / "regions.npy"}: {NPY[case]}')

#----------------------------------------------------------------------------
# Reward checkpoints: an input slab description of the wrong types.

@pytest.mark.parametrize('entry, value, message', [
    ('resolution', '40', "input slab.resolution is '40'; expected an integer in [2, 4096]"),
    ('resolution', 1, 'input slab.resolution is 1; expected an integer in [2, 4096]'),
    ('cube_length', 'one', "input slab.cube_length is 'one'; expected a finite number in (0, 1000]"),
    ('cube_length', math.inf, 'input slab.cube_length is inf; expected a finite number in (0, 1000]'),
    ('crop', [0.25], 'input slab.crop is a list; expected an object of the fractions x_left, x_right'),
    ('crop', dict(x_left='a'), "input slab.crop.x_left is 'a'; expected a number in [0, 1)"),
    ('crop', dict(nose=0.1), 'input slab.crop.nose is not a crop fraction'),
])
def test_a_reward_checkpoint_whose_input_slab_is_mistyped_is_refused(scored, tmp_path, entry, value, message):
    data = torch.load(scored['reward'], weights_only=True)
    data['input']['slab'][entry] = value
    path = tmp_path / 'reward.pt'
    torch.save(data, path)
    with pytest.raises(RewardCheckpointError, match='^' + str(path).replace('.', r'\.')) as err:   # Before: TypeError.
        load_reward(str(path))
    assert message in str(err.value) and '\n' not in str(err.value)
    refused_in_one_line(run_tool(score_bank, scored['bank'], path, tmp_path / 'out', '--dry-run'), message)
