"""The reward contract: a checkpoint's input spec is honoured by scoring, fitting, score_bank and the labeling page;
a checkpoint that breaks it, a bank of another grid and a score that is not finite are refused in one line."""

import itertools
import json
import math
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.data import labeling, preferences, scores
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.scores import read_scores
from eg3d_rlhf.geometry.sigma import normalise_sigma_self, slab_description
from eg3d_rlhf.rewards import REWARDS, build_reward, fitting
from eg3d_rlhf.rewards.checkpoint import ADDED_ARGUMENTS, FORMATS, RewardCheckpointError, load_reward, save_reward
from eg3d_rlhf.rewards.contract import InputSpec
from eg3d_rlhf.synthetic import demo
from tests.conftest import REPO
from tests.helpers.cli import digest, refused_in_one_line
from tests.helpers.rewards import tiny_sigma
from tests.helpers.scored import copy_bank, run_tool
from tools import attribute, embed, label, score_bank, tails
from torch_utils import safetensors_file

pytestmark = pytest.mark.usefixtures('one_thread')

RES = 32                                                # Slabs of 16 x 18 x 17: x and z differ, so order shows.
TINY = dict(                                            # At least 2 values per norm group at 1 x 1 x 1, even alone.
    sigma=dict(trunk='cnn', members=1, channels=(4, 8, 8, 8, 16), hidden=16),
    depth=dict(views=('front', 'profile'), render_res=16, channels=(4, 8, 8, 8, 16), hidden=16),
    pointcloud=dict(num_points=128, widths=(8, 16, 32), hidden=16),
)
AFFINE = dict(normalisation='affine', scale=2.5, offset=25.0, order='zyx', flip_x=True)   # Raw sigma 10 -> 50.

#----------------------------------------------------------------------------
# Helpers (for other test files too).

def affine_reward_checkpoint(tmp_path, slab, kind='sigma', seed=0):
    """Path of a tiny reward checkpoint written in tmp_path whose input spec is not the default: raw * 2.5 + 25 (the
    surface level, raw 10, lands on the models' 50), x flipped, read in (z, y, x) order, on the grid `slab` describes
    (geometry.sigma.slab_description, a bank's meta.json "slab")."""
    torch.manual_seed(seed)
    path = os.path.join(str(tmp_path), f'affine-{kind}-{seed}.pt')
    save_reward(path, build_reward(kind, **TINY[kind]).eval(), kind, InputSpec(slab=dict(slab), **AFFINE))
    return path


def raw_slabs(count, seed=0, resolution=RES):
    """{id: raw float32 slab}: noise at very different levels and spreads, so min-max and affine rank them apart."""
    rng = np.random.RandomState(seed)
    shape = slab_description(resolution)['shape']
    return {f's{i:02d}': (rng.uniform(0.2, 20) * rng.standard_normal(shape) + rng.uniform(-10, 30)).astype(np.float32)
        for i in range(count)}


def hand_bank(root, slabs, resolution=RES):
    """A bank folder by hand: BANK/<id>/sigma_slab.npy and meta.json with the "slab" grid. Returns the folder."""
    slab = dict(slab_description(resolution), dtype='float32', order='xyz', flipped=False)
    for sample_id, volume in slabs.items():
        os.makedirs(os.path.join(root, sample_id))
        np.save(os.path.join(root, sample_id, 'sigma_slab.npy'), volume)
        with open(os.path.join(root, sample_id, 'meta.json'), 'w', encoding='utf-8') as f:
            json.dump(dict(id=sample_id, slab=slab), f)
    return str(root)


def by_hand(raw):
    """AFFINE's network input of raw slabs [N, X, Y, Z], written out without InputSpec."""
    return (torch.as_tensor(raw).flip(1) * 2.5 + 25).permute(0, 3, 2, 1)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp('contract')
    slabs = raw_slabs(8)
    bank_dir = hand_bank(folder / 'bank', slabs)
    path = affine_reward_checkpoint(folder, Bank(bank_dir).meta('s00')['slab'])
    return dict(bank=bank_dir, slabs=slabs, path=path, reward=load_reward(path))

#----------------------------------------------------------------------------
# (a) Reward.score.

def test_reward_scores_raw_sigma_through_its_spec(setup):
    reward, slabs = setup['reward'], setup['slabs']
    raw = torch.from_numpy(np.stack([slabs[k] for k in sorted(slabs)]))
    assert reward.spec == InputSpec(slab=reward.spec.slab, **AFFINE) and reward.grid.shape == raw.shape[1:]
    assert torch.equal(reward.prepare(raw), by_hand(raw)) and reward.prepare(raw).shape == (8, 17, 18, 16)
    with torch.no_grad():
        want = reward.model.score(by_hand(raw))
        assert torch.allclose(reward.score(raw), want, atol=1e-6)
        assert torch.allclose(reward.features(raw), reward.model.features(by_hand(raw)), atol=1e-6)
        assert np.allclose(reward.score_slabs(raw.numpy(), batch=3), want.numpy(), atol=1e-5)
        default = reward.model.score(normalise_sigma_self(raw))                # What a caller ignoring the spec gets.
    assert not torch.allclose(want, default, atol=1e-3)
    x = raw[:2].clone().requires_grad_(True)
    reward.score(x).sum().backward()                                         # Differentiable in raw sigma.
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(AssertionError):
        reward.score(raw.permute(0, 3, 2, 1))                                # Raw slabs come in (x, y, z) order.

#----------------------------------------------------------------------------
# (b) Fitting.

def test_fitting_inputs_follow_the_spec(setup):
    bank, reward = Bank(setup['bank']), setup['reward']
    inputs = fitting.prepared_inputs(bank, bank.ids, reward.spec, progress=False)
    assert inputs.data.shape == (8, 17, 18, 16) and inputs.x_axis == 3
    raw = torch.from_numpy(np.stack([bank.slab(i) for i in bank.ids]))
    assert torch.allclose(inputs.batch(bank.ids), by_hand(raw), atol=0.02, rtol=1e-3)        # float16 storage.
    default = fitting.prepared_inputs(bank, bank.ids[:1], InputSpec(slab=reward.spec.slab), progress=False)
    assert default.data.shape == (1, 16, 18, 17) and default.x_axis == 1
    fitter = fitting.RewardFitter(reward.model, inputs, fitting.FitOptions(mirror=True, seed=1))
    x, mirrored = inputs.batch(bank.ids), fitter.batch(bank.ids, train=True)
    flipped = [bool(torch.equal(m, v.flip(2))) for m, v in zip(mirrored, x)]   # A row is (z, y, x): x is its axis 2.
    assert all(f or torch.equal(m, v) for f, m, v in zip(flipped, mirrored, x)) and 0 < sum(flipped) < len(x)
    bad = InputSpec(slab=slab_description(40))
    with pytest.raises(ValueError, match='shape'):
        fitting.prepared_inputs(bank, bank.ids, bad, progress=False)
    huge = InputSpec(slab=reward.spec.slab, normalisation='affine', scale=1e6)
    with pytest.raises(ValueError, match='float16'):
        fitting.prepared_inputs(bank, bank.ids, huge, progress=False)


def test_fit_reward_trains_on_what_its_checkpoint_declares(setup, tmp_path):
    bank, spec = Bank(setup['bank']), setup['reward'].spec
    ids = bank.ids
    labels = preferences.TrainingLabels('pairs', dict(train=ids[:4], val=ids[4:6], test=ids[6:]),
        dict(pairs=[(ids[0], ids[1]), (ids[2], ids[3]), (ids[0], ids[3])], ties=[]), [(ids[4], ids[5])], [(ids[6], ids[7])],
        dict(train=3, val=1, test=1))
    model, report = fitting.fit_reward('sigma', bank, labels, spec, fitting.FitOptions(epochs=1, batch=2),
        model_config=TINY['sigma'], progress=False)
    assert report['input'] == spec.to_dict() and report['centre'] is True
    assert model.reference.shape == (17, 18, 16)                             # The mean input, in the network's order.
    save_reward(str(tmp_path / 'fitted.pt'), model, 'sigma', spec, training=report)
    reward = load_reward(str(tmp_path / 'fitted.pt'))
    assert reward.spec == spec
    scores = reward.score_slabs(bank.slab(i) for i in ids[:4])
    assert abs(float(scores.mean())) < 0.01                                  # Centred on the training samples, raw in.
    inputs = fitting.prepared_inputs(bank, ids, spec, progress=False)
    assert torch.allclose(model.reference, inputs.mean(ids[:4]), atol=1e-4)

#----------------------------------------------------------------------------
# (c) Scoring a bank.

def test_score_bank_scores_with_the_spec(setup, tmp_path):
    reward, slabs = setup['reward'], setup['slabs']
    with torch.no_grad():
        want = {k: float(v) for k, v in zip(sorted(slabs), reward.model.score(by_hand(np.stack([slabs[k] for k in sorted(slabs)]))))}
    assert scores.score_bank(reward, Bank(setup['bank']), batch=3) == pytest.approx(want, abs=1e-5)
    out = tmp_path / 'scores.csv'
    result = CliRunner().invoke(score_bank.main, ['--reward-model', setup['path'], '--bank', setup['bank'],
        '--out', str(out), '--batch', '3', '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    assert read_scores(str(out)) == pytest.approx(want, abs=1e-5) and list(read_scores(str(out))) == sorted(slabs)
    assert f'| {math.ceil(8 / 3)}/{math.ceil(8 / 3)} [' in result.output


def test_score_bank_refuses_another_grid(setup, tmp_path):
    other = hand_bank(tmp_path / 'other', raw_slabs(2, resolution=40), resolution=40)
    result = CliRunner().invoke(score_bank.main, ['--reward-model', setup['path'], '--bank', other,
        '--out', str(tmp_path / 's.csv'), '--device', 'cpu'])
    assert result.exit_code == 1 and 'slabs of the 40^3 grid, shape [20, 22, 20]' in result.output
    assert f'{setup["path"]} was trained on the 32^3 grid, shape [16, 18, 17]' in result.output
    assert not (tmp_path / 's.csv').exists()

#----------------------------------------------------------------------------
# (d) The labeling page's active order.

def test_label_active_order_uses_the_spec_scores(setup, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(label.LabelServer, 'serve_forever', lambda self: seen.update(state=self.session.state()))
    result = CliRunner().invoke(label.main, ['serve', '--port', '0', '--bank', setup['bank'], '--out', str(tmp_path / 'l.jsonl'),
        '--annotator', 'eve', '--pairs', '5', '--active', '--reward-model', setup['path']])
    assert result.exit_code == 0, result.output
    reward, slabs, ids = setup['reward'], setup['slabs'], sorted(setup['slabs'])
    with torch.no_grad():
        raw = torch.from_numpy(np.stack([slabs[k] for k in ids]))
        spec_scores = dict(zip(ids, reward.model.score(by_hand(raw)).tolist()))
        default_scores = dict(zip(ids, reward.model.score(normalise_sigma_self(raw)).tolist()))
    closest = lambda s: labeling.pair_key(*min(itertools.combinations(ids, 2), key=lambda p: abs(s[p[0]] - s[p[1]])))
    assert closest(spec_scores) != closest(default_scores)                   # The test tells the two apart.
    current = seen['state']['current']
    assert labeling.pair_key(current['a'], current['b']) == closest(spec_scores)

#----------------------------------------------------------------------------
# Checkpoints: the spec round-trips, format 1 still loads, a bad spec is a one-line error naming the file.

def test_input_spec_round_trips_through_a_checkpoint(setup, tmp_path):
    spec = setup['reward'].spec
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert setup['reward'].info['input'] == spec.to_dict() and setup['reward'].kind == 'sigma'
    raw = torch.load(setup['path'], weights_only=True)
    assert raw['format'] == 'eg3d_rlhf.reward/2' and raw['input'] == spec.to_dict()


def test_format_1_checkpoints_load_with_the_default_spec(setup, tmp_path):
    slab = setup['reward'].spec.slab
    data = torch.load(setup['path'], weights_only=True)
    data.update(format='eg3d_rlhf.reward/1', input=dict(normalisation='self_minmax_0_100', slab=slab))
    torch.save(data, tmp_path / 'old.pt')
    reward = load_reward(str(tmp_path / 'old.pt'))
    assert reward.spec == InputSpec(slab=slab) and reward.spec.normalisation == 'self_minmax' and reward.spec.scale == 100
    raw = torch.from_numpy(setup['slabs']['s03'][None])
    with torch.no_grad():
        assert torch.allclose(reward.score(raw), reward.model.score(normalise_sigma_self(raw)), atol=1e-6)


@pytest.mark.parametrize('kind', sorted(REWARDS))
def test_bundled_checkpoints_load_unchanged(kind):
    path = os.path.join(REPO, 'checkpoints', f'reward-{kind}-nose.safetensors')
    if not os.path.isfile(path):
        pytest.skip(f'no bundled {kind} reward')
    reward = load_reward(path)                                              # Strict load: every weight's name matches.
    stored = safetensors_file.load(path, FORMATS)
    assert reward.kind == kind and reward.spec == InputSpec.from_dict(stored['input'])
    added = {k: v for k, v in reward.model.config.items() if k not in stored['config']}
    assert {k: reward.model.config[k] for k in stored['config']} == stored['config']
    as_built = json.loads(json.dumps(ADDED_ARGUMENTS.get(kind, {})))                  # In the config's JSON types.
    assert {k: added[k] for k in as_built if k in added} == {k: v for k, v in as_built.items() if k in added}
    assert list(reward.model.state_dict()) == list(stored['state_dict'])
    raw = torch.from_numpy(np.random.RandomState(0).gamma(1.0, 10.0, size=(1, *reward.grid.shape)).astype(np.float32))
    with torch.no_grad():
        assert torch.isfinite(reward.score(raw)).all()


BAD_INPUTS = [
    (dict(scale=float('nan')), 'input scale must be a finite number, got nan'),
    (dict(normalisation='zscore'), "unknown input normalisation 'zscore'"),
    (dict(order='xxz'), 'input order must be a permutation'),
    (dict(offset='0'), 'input offset must be a finite number'),
    (dict(gamma=2.0), "unknown input field 'gamma'"),
    (dict(slab=dict(resolution=32)), 'input slab must describe'),
]
BAD_MODELS = [
    (dict(kind='voxels'), "voxels reward: Unknown reward kind 'voxels'"),
    (dict(config=dict(wings=2)), "unexpected keyword argument 'wings'"),
    (dict(config=dict(TINY['sigma'], hidden=8)), 'its config does not describe its weights'),
]


@pytest.mark.parametrize('where, change, message', [('input', *case) for case in BAD_INPUTS] + [('top', *case) for case in BAD_MODELS])
def test_bad_checkpoint_is_a_one_line_error_naming_the_file(setup, tmp_path, where, change, message):
    """A bad input spec or a model that cannot be built from the file: one line, starting with the file's path."""
    data = torch.load(setup['path'], weights_only=True)
    (data['input'] if where == 'input' else data).update(change)
    path = str(tmp_path / 'bad.pt')
    torch.save(data, path)
    with pytest.raises(RewardCheckpointError) as info:
        load_reward(path)
    text = str(info.value)
    assert text.startswith(path + ': ') and message in text and '\n' not in text, text

#----------------------------------------------------------------------------
# Silent wrong results: a score that is not finite stops every tool that scores, naming the sample and the cause.
# (A cube tails --cubes scores: tests/test_tails.py.)

TOOLS = [score_bank, tails, attribute, embed]
TOOL_IDS = ['score_bank', 'tails', 'attribute', 'embed']


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
# Reward checkpoints: an input slab description of the wrong types, or none.

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


def test_a_reward_checkpoint_whose_input_lacks_its_slab_is_refused(tmp_path, reward_checkpoint):
    from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, load_reward
    data = torch.load(reward_checkpoint, weights_only=True)
    del data['input']['slab']
    torch.save(data, tmp_path / 'no-slab.pt')
    with pytest.raises(RewardCheckpointError, match="no-slab.pt: input field 'slab' is missing"):
        load_reward(str(tmp_path / 'no-slab.pt'))       # Before: TypeError of InputSpec.__init__.

#----------------------------------------------------------------------------
# Reward checkpoints whose config and weights disagree, or whose weights are not finite.

@pytest.mark.parametrize('edit, message', [
    (lambda d: d['state_dict']['stem.0.weight'].view(-1).__setitem__(0, float('nan')), 'weight stem.0.weight holds nan or inf'),
    (lambda d: d['config'].__setitem__('channels', [2**20] * 5), 'its config does not describe its weights'),
    (lambda d: d['state_dict'].pop('stem.1.weight'), 'its config does not describe its weights (stem.1.weight differ)'),
    (lambda d: d['state_dict'].__setitem__('stem.0.weight', 'not a tensor'), 'its config does not describe its weights'),
])
def test_reward_checkpoints_edited_or_diverged_are_refused_in_one_line(tmp_path, edit, message):
    import torch
    import train
    from eg3d_rlhf.rewards.checkpoint import FORMATS
    from torch_utils import safetensors_file
    data = safetensors_file.load(os.path.join(demo.CHECKPOINTS, 'reward-sigma-nose.safetensors'), FORMATS)
    edit(data)
    path = tmp_path / 'reward.pt'
    torch.save(data, str(path))
    before = digest(path)
    result = CliRunner().invoke(train.main, ['--reward=sigma', f'--reward-model={path}', f'--outdir={tmp_path / "runs"}',
        '--dry-run'])
    refused_in_one_line(result, f'--reward-model: {path}: sigma reward: {message}')
    assert digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ['reward.pt']

#----------------------------------------------------------------------------
