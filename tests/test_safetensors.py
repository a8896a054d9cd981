"""Reward and flow checkpoints as safetensors: round trips score and sample identically; hostile files fail in one line."""

import json
import struct

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf import cli as cli_utils
from eg3d_rlhf.generators import flow_heads, registry
from eg3d_rlhf.generators.eg3d import is_network_pickle
from eg3d_rlhf.rewards import build_reward
from eg3d_rlhf.rewards.checkpoint import RewardCheckpointError, load_reward, save_reward
from eg3d_rlhf.rewards.contract import InputSpec
from eg3d_rlhf.synthetic import demo
from tests.helpers import rewards as helpers
from tests.helpers.flow import TINY as TINY_FLOW
from tools import convert_reward, train_flow
from torch_utils import safetensors_file

#----------------------------------------------------------------------------
# Tiny checkpoints and slabs.

def tiny_model(kind, seed=0):
    torch.manual_seed(seed)
    return build_reward(kind, **helpers.TINY[kind])


def slabs(shape, n=3, seed=0):
    """Raw sigma slabs [n, *shape]: a ball of radius about a third of the slab (level 10 at its surface) plus noise, so
    depth and point-cloud rewards see a surface."""
    axes = [torch.linspace(-1, 1, s) for s in shape]
    r = torch.stack(torch.meshgrid(*axes, indexing='ij')).norm(dim=0)
    noise = torch.randn([n, *shape], generator=torch.Generator().manual_seed(seed))
    return 10 + 40 * (0.6 - r) + 3 * noise


def scores(path, raw):
    with torch.no_grad():
        return load_reward(str(path)).score(raw)


def write_tiny(path, kind='sigma'):
    save_reward(str(path), tiny_model(kind), kind, InputSpec(slab=helpers.slab_description()), training=dict(note='tiny'))
    return str(path)

#----------------------------------------------------------------------------
# Round trips.

@pytest.mark.parametrize('kind', ['sigma', 'depth', 'pointcloud'])
def test_reward_round_trip_scores_identically(tmp_path, kind):
    pt = write_tiny(tmp_path / 'r.pt', kind)
    st = tmp_path / 'r.safetensors'
    reward = load_reward(pt)
    save_reward(str(st), reward.model, reward.kind, reward.spec, reward.info['training'])
    assert st.read_bytes()[:4] != b'PK\x03\x04' and safetensors_file.is_safetensors(str(st))     # Not a torch zip.
    raw = slabs(reward.grid.shape)
    assert torch.equal(scores(pt, raw), scores(st, raw))
    again = load_reward(str(st))
    assert again.kind == kind and again.spec == reward.spec and again.info['training'] == dict(note='tiny')
    assert again.info['config'] == json.loads(json.dumps(reward.info['config']))     # Tuples come back as lists.


def test_bundled_rewards_are_safetensors_and_score_as_their_pt_copies(tmp_path):
    for kind in ('sigma', 'depth', 'pointcloud'):
        assert demo.reward_model(kind).endswith('.safetensors') and safetensors_file.is_safetensors(demo.reward_model(kind))
    path = demo.reward_model('sigma')
    reward = load_reward(path)
    assert reward.info['training']['best_epoch'] == 5                  # The training record came along.
    pt = str(tmp_path / 'sigma.pt')
    save_reward(pt, reward.model, reward.kind, reward.spec, reward.info['training'])
    assert torch.load(pt, weights_only=True)['format'] == reward.info['format']
    raw = slabs(reward.grid.shape, n=4)
    assert torch.equal(scores(path, raw), scores(pt, raw))


def test_convert_reward_writes_safetensors_and_keeps_the_record(tmp_path):
    pt = write_tiny(tmp_path / 'r.pt')
    out = str(tmp_path / 'r.safetensors')
    result = CliRunner().invoke(convert_reward.main, ['--reward-model', pt, '--out', out])
    assert result.exit_code == 0, result.output
    assert safetensors_file.is_safetensors(out) and load_reward(out).info['training'] == dict(note='tiny')
    raw = slabs(load_reward(pt).grid.shape)
    assert torch.equal(scores(pt, raw), scores(out, raw))


def tiny_flow(path, seed=0):
    pipeline = flow_heads.build_pipeline(TINY_FLOW, init_seed=seed)
    flow_heads.save_flow(str(path), pipeline, TINY_FLOW, training=dict(step=3, note='tiny'))
    return str(path)


def test_flow_round_trip_draws_identical_samples(tmp_path):
    pt = tiny_flow(tmp_path / 'f.pt')
    st = str(tmp_path / 'f.safetensors')
    flow_heads.convert_flow(pt, st)
    assert registry.family_of_file(st).name == 'flow' and flow_heads.checkpoint_conditions(st) == TINY_FLOW['conditions']
    a, b = flow_heads.load_flow(pt), flow_heads.load_flow(st)
    for seed, condition in [(0, 0), (5, 1)]:
        assert np.array_equal(a.sample_arrays(seed, condition)['asset'], b.sample_arrays(seed, condition)['asset'])
    assert flow_heads.read_flow(st)['training'] == dict(step=3, note='tiny')
    snapshot = str(tmp_path / 'snap.safetensors')                      # family.save, as Circular-DPO's snapshots.
    registry.FAMILIES['flow'].save(snapshot, b, dict(group='a'))
    assert np.array_equal(flow_heads.load_flow(snapshot).sample_arrays(2, 0)['asset'], a.sample_arrays(2, 0)['asset'])


def test_train_flow_snapshots_as_safetensors_and_resumes(tmp_path):
    common = ['--preset', 'tiny', '--batch', '2', '--snap', '2', '--preview', '0', '--device', 'cpu', '--format', 'safetensors']
    run = lambda *args: CliRunner().invoke(train_flow.main, ['--outdir', str(tmp_path), *common, *args])
    assert run('--steps', '2').exit_code == 0
    first = tmp_path / 'flow-000002.safetensors'
    assert safetensors_file.is_safetensors(str(first))
    optimizer = flow_heads.read_flow(str(first))['training']['optimizer']
    assert set(optimizer['state']) == set(range(len(optimizer['param_groups'][0]['params'])))   # Integer keys kept.
    result = run('--steps', '4', '--resume', str(first))
    assert result.exit_code == 0, result.output
    assert flow_heads.read_flow(str(tmp_path / 'flow-000004.safetensors'))['training']['step'] == 4


def test_bundled_flow_is_safetensors():
    assert registry.bundled_file('bundled-flow') == demo.FLOW_GENERATOR and demo.FLOW_GENERATOR.endswith('.safetensors')
    assert registry.family_of_file(demo.FLOW_GENERATOR).name == 'flow'
    state = flow_heads.read_flow(demo.FLOW_GENERATOR)
    assert state['config']['grid'] == 16 and state['training']['step'] == 10000 and 'optimizer' in state['training']


def test_header_never_starts_like_a_pickle(tmp_path):
    path = str(tmp_path / 'r.safetensors')
    for n in range(0, 64 * 8, 7):                                      # Header lengths through every low byte.
        safetensors_file.save(path, dict(format='x/1', weights=torch.zeros(2), note='n' * n))
        assert not is_network_pickle(path)
        assert safetensors_file.load(path, ('x/1',))['note'] == 'n' * n

#----------------------------------------------------------------------------
# Hostile files: each fails with one line naming the file and what is wrong.

def split(path):
    blob = open(path, 'rb').read()
    n = struct.unpack('<Q', blob[:8])[0]
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def join(path, header, data):
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)) + text + data)
    return path


def first_weight(header):
    return next(k for k in header if k.startswith('state_dict.'))


def extra_tensor(header, data):
    header['stowaway'] = dict(dtype='F32', shape=[1], data_offsets=[len(data), len(data) + 4])
    return header, data + b'\0' * 4


def missing_tensor(header, data):                # Drop the last tensor's bytes and entry; the metadata still names it.
    last = max((k for k in header if k != '__metadata__'), key=lambda k: header[k]['data_offsets'][0])
    begin = header.pop(last)['data_offsets'][0]
    return header, data[:begin]


def misshapen(header, data):                     # Same bytes, another shape.
    info = header[first_weight(header)]
    info['shape'] = [int(np.prod(info['shape']))]
    return header, data


def more_bytes_than_the_file(header, data):
    return header, data[:-8]


def overlapping(header, data):
    a, b = sorted((k for k in header if k != '__metadata__'), key=lambda k: header[k]['data_offsets'][0])[:2]
    size = header[b]['data_offsets'][1] - header[b]['data_offsets'][0]
    header[b]['data_offsets'] = [header[a]['data_offsets'][0], header[a]['data_offsets'][0] + size]
    return header, data


def lying_dtype(header, data):                   # F64 claimed for F32 bytes.
    header[first_weight(header)]['dtype'] = 'F64'
    return header, data


def not_json(header, data):
    header['__metadata__']['config'] = "{'channels': [4, 8]"
    return header, data


def nested_metadata(header, data):             # Deeper than json.loads reads (RecursionError), or than _decode walks.
    header['__metadata__']['training'] = '{"loss": ' + '[' * 100000 + ']' * 100000 + '}'
    header['__metadata__']['config'] = '[' * 900 + ']' * 900
    return header, data


def nested_header(header, data):                # A header entry nested past json.loads' recursion.
    return '{"deep": ' + '[' * 100000 + ']' * 100000 + ', ' + json.dumps(header)[1:], data


def wrong_format(header, data):
    header['__metadata__'][safetensors_file.MARKER] = 'eg3d_rlhf.flow/1'
    return header, data


HOSTILE = [
    (extra_tensor,              'an extra tensor'),
    (missing_tensor,            'a missing tensor'),
    (misshapen,                 'does not describe its weights'),
    (more_bytes_than_the_file,  'truncated or the header lies'),
    (overlapping,               'offsets overlap'),
    (lying_dtype,               'do not hold F64'),
    (not_json,                  "metadata entry 'config'"),
    (nested_metadata,           'JSON nested too deeply'),
    (nested_header,             'not a safetensors file (header): JSON nested too deeply'),
    (wrong_format,              'expected eg3d_rlhf.reward/1 or eg3d_rlhf.reward/2'),
]

@pytest.mark.parametrize('edit,message', HOSTILE, ids=[e.__name__ for e, _ in HOSTILE])
def test_hostile_reward_files_fail_in_one_line(tmp_path, edit, message):
    path = write_tiny(tmp_path / 'r.safetensors')
    join(path, *edit(*split(path)))
    with pytest.raises(RewardCheckpointError) as err:
        load_reward(path)
    text = str(err.value)
    assert text.startswith(path) and message in text and '\n' not in text
    with pytest.raises(click.ClickException) as err:                  # What the tools print.
        cli_utils.open_reward(path, 'cpu')
    assert path in err.value.message and '\n' not in err.value.message


def test_a_real_tensor_of_the_wrong_dtype_fails(tmp_path):
    model = tiny_model('sigma')
    name = next(k for k, v in model.state_dict().items() if v.is_floating_point())
    path = str(tmp_path / 'r.safetensors')
    data = dict(format='eg3d_rlhf.reward/2', kind='sigma', config=dict(model.config),
        state_dict={k: v.double() if k == name else v for k, v in model.state_dict().items()},
        input=InputSpec(slab=helpers.slab_description()).to_dict(), training={})
    safetensors_file.save(path, data)
    with pytest.raises(RewardCheckpointError, match=f'weight {name} is torch.float64, the model.s is torch.float32'):
        load_reward(path)


def test_duplicate_names_and_nan_fail(tmp_path):
    path = write_tiny(tmp_path / 'r.safetensors')
    header, data = split(path)
    text = json.dumps(header)
    key = first_weight(header)
    text = text.replace('{', '{' + json.dumps(key) + ': ' + json.dumps(header[key]) + ', ', 1)   # The name twice.
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)) + text.encode() + data)
    with pytest.raises(RewardCheckpointError, match='appears twice'):
        load_reward(path)
    header['__metadata__']['training'] = '{"loss": NaN}'
    join(path, header, data)
    with pytest.raises(RewardCheckpointError, match='NaN is not a finite number'):
        load_reward(path)


@pytest.mark.parametrize('edit,message', [
    (extra_tensor, 'an extra tensor'),
    (lambda h, d: (h, d) if h['state_dicts.1.skip.bias'].update(shape=[2, 4]) else (h, d),
        'stage 1 weight skip.bias is [2, 4] torch.float32, expected [8] torch.float32'),
    (lambda h, d: (h, d) if h['__metadata__'].update({safetensors_file.MARKER: 'eg3d_rlhf.reward/2'}) else (h, d),
        'expected eg3d_rlhf.flow/1'),
    (nested_metadata, 'JSON nested too deeply'),
    (nested_header, 'not a safetensors file (header): JSON nested too deeply'),
], ids=['extra', 'misshapen', 'format', 'nested metadata', 'nested header'])
def test_hostile_flow_files_fail_in_one_line(tmp_path, edit, message):
    path = str(tmp_path / 'f.safetensors')
    flow_heads.convert_flow(tiny_flow(tmp_path / 'f.pt'), path)
    join(path, *edit(*split(path)))
    with pytest.raises(ValueError) as err:
        flow_heads.load_flow(path)
    assert str(err.value).startswith(path) and message in str(err.value) and '\n' not in str(err.value)

#----------------------------------------------------------------------------
