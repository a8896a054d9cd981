"""The generator family registry: files recognised by header, capabilities instead of classes, the flow family's
snapshots, and a toy family (tests/helpers/toy_family.py) registered in one line running bank -> annotate ->
train_reward -> evaluate through the real tools."""

import ast
import dataclasses
import itertools
import json
import os

import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf import cli
from eg3d_rlhf.data import annotators
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.generators import flow_heads, registry
from eg3d_rlhf.generators.flow import FlowGenerator
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.synthetic import demo
from tests.helpers import toy_family
from tests.helpers.cli import ran
from tests.conftest import REPO
from tools import annotate, evaluate, flow_report, sample_bank, train_reward

pytestmark = pytest.mark.usefixtures('one_thread')

TINY = flow_heads.PRESETS['tiny']


#----------------------------------------------------------------------------

def test_the_families_recognise_the_bundled_checkpoints_and_refuse_a_foreign_file(tmp_path):
    assert registry.bundled_file('bundled') == demo.GENERATOR == cli.BUNDLED                 # One statement of each path.
    assert registry.bundled_file('bundled-flow') == demo.FLOW_GENERATOR == cli.BUNDLED_FLOW
    assert registry.bundled_file('checkpoints/flow-heads.pt') is None
    eg3d, flow = (registry.family_of_file(registry.bundled_file(n)) for n in ('bundled', 'bundled-flow'))
    assert (eg3d.name, flow.name) == ('eg3d', 'flow') and eg3d.needs_trust and not flow.needs_trust
    assert eg3d.conditions(demo.GENERATOR) is None and flow.conditions(demo.FLOW_GENERATOR) == 8     # Read as data.
    assert eg3d.save is None and flow.save is flow_heads.save_generator
    foreign = tmp_path / 'notes.txt'
    foreign.write_text('a text file, neither a pickle nor a checkpoint\n')
    with pytest.raises(ValueError) as info:
        registry.family_of_file(str(foreign))
    message = str(info.value)
    assert message.startswith(f'{foreign}: no generator family recognises this file') and '\n' not in message
    assert message.endswith('give an EG3D network pickle or a flow checkpoint')
    result = CliRunner().invoke(sample_bank.main, ['--network', foreign, '--seeds', '0', '--outdir', tmp_path / 'b'])
    assert result.exit_code == 1 and f'Error: {message}' in result.output and 'Traceback' not in result.output
    assert not (tmp_path / 'b').exists()


def test_capabilities_not_classes_and_one_name_per_family(monkeypatch):
    monkeypatch.setattr(registry, 'FAMILIES', dict(registry.FAMILIES))
    with pytest.raises(ValueError, match="a generator family named 'flow' is already registered"):
        registry.register(dataclasses.replace(registry.FAMILIES['flow'], bundled={}))
    with pytest.raises(ValueError, match=r"bundled names \['bundled'\] are taken"):
        registry.register(dataclasses.replace(registry.FAMILIES['eg3d'], name='eg3d-again'))
    with pytest.raises(ValueError, match=r"unknown capabilities \['wings'\]"):
        dataclasses.replace(registry.FAMILIES['flow'], name='winged', capabilities=frozenset({'wings'}))
    G = FlowGenerator(flow_heads.build_pipeline(TINY, init_seed=0))
    assert registry.family_of(G).name == 'flow' and registry.has(G, 'stages') and not registry.has(G, 'latents')
    assert not registry.has(object(), 'stages') and [f.name for f in registry.with_capability('latents')] == ['eg3d']
    with pytest.raises(ValueError, match='no generator family owns a object'):
        registry.family_of(object())
    with pytest.raises(ValueError, match="unknown capability 'wings'"):
        registry.has(G, 'wings')


def test_the_flow_family_saves_the_checkpoint_save_flow_writes(tmp_path):
    path = str(tmp_path / 'base.pt')
    flow_heads.save_flow(path, flow_heads.build_pipeline(TINY, init_seed=0), TINY)
    family = registry.family_of_file(path)
    assert 'stages' in family.capabilities
    generator = family.load(path, 'cpu', draw_batch=2)                    # What the Circular-DPO runner does.
    tuned = flow_heads.build_pipeline(TINY, init_seed=1)
    snapshot = generator.with_pipeline(tuned)
    assert snapshot.pipeline is tuned and snapshot.path is None and snapshot.config == flow_heads.check_config(TINY)
    assert (snapshot.steps, snapshot.sampler, snapshot.draw_batch, snapshot.keep) == (TINY['ode_steps'], TINY['sampler'], 2,
        generator.keep)
    family.save(str(tmp_path / 'by-family.pt'), snapshot, dict(step=3))
    flow_heads.save_flow(str(tmp_path / 'by-hand.pt'), tuned, flow_heads.read_flow(path)['config'], training=dict(step=3))
    assert (tmp_path / 'by-family.pt').read_bytes() == (tmp_path / 'by-hand.pt').read_bytes()
    reloaded = family.load(str(tmp_path / 'by-family.pt'))
    assert all(torch.equal(a, b) for a, b in zip(reloaded.pipeline.modules()[0].state_dict().values(),
        tuned.modules()[0].state_dict().values()))
    with pytest.raises(ValueError, match='built in memory without a checkpoint config'):
        family.save(str(tmp_path / 'x.pt'), FlowGenerator(tuned), None)


def generator_classes():
    """Names of the project's Generator3D subclasses (by their class statements, transitively)."""
    bases = {}
    for folder, _dirs, files in os.walk(os.path.join(REPO, 'eg3d_rlhf')):
        for name in (n for n in files if n.endswith('.py')):
            for node in ast.walk(ast.parse(open(os.path.join(folder, name), encoding='utf-8').read())):
                if isinstance(node, ast.ClassDef):
                    bases[node.name] = {b.id if isinstance(b, ast.Name) else getattr(b, 'attr', '') for b in node.bases}
    found = {'Generator3D'}
    while True:
        more = {c for c, b in bases.items() if b & found} - found
        if not more:
            return found
        found |= more


def test_no_isinstance_on_a_generator_class_outside_generators():
    classes = generator_classes()
    assert {'EG3DGenerator', 'FlowGenerator', 'InvertedEG3D'} <= classes
    wrong = []
    paths = [os.path.join(REPO, 'train.py')] + [os.path.join(base, n) for folder in ('eg3d_rlhf', 'tools')
        for base, _dirs, files in os.walk(os.path.join(REPO, folder)) for n in files if n.endswith('.py')]
    for path in paths:
        if path.startswith(os.path.join(REPO, 'eg3d_rlhf', 'generators') + os.sep):
            continue
        for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
            if isinstance(node, ast.Call) and getattr(node.func, 'id', None) in ('isinstance', 'issubclass'):
                names = {n.id if isinstance(n, ast.Name) else n.attr for a in node.args[1:] for n in ast.walk(a)
                    if isinstance(n, (ast.Name, ast.Attribute))}
                if names & classes:
                    wrong.append(f'{os.path.relpath(path, REPO)}:{node.lineno}')
    assert not wrong, f'ask generators.registry (has, family_of) instead: {wrong}'

#----------------------------------------------------------------------------
# A toy family: tests/helpers/toy_family.py and the register() line below are all it takes for every tool to take
# its files.

@pytest.fixture
def toy(monkeypatch, tmp_path):
    """The toy family registered (for this test only), an original toy file and a tuned one with smaller noses."""
    monkeypatch.setattr(registry, 'FAMILIES', dict(registry.FAMILIES))
    registry.register(toy_family.FAMILY)
    paths = dict(original=str(tmp_path / 'original.json'), tuned=str(tmp_path / 'tuned.json'))
    toy_family.FAMILY.save(paths['original'], toy_family.ToyBalls())
    toy_family.FAMILY.save(paths['tuned'], toy_family.ToyBalls(nose=0.025, nose_spread=0.015), dict(note='smaller noses'))
    return paths


def test_a_toy_family_runs_bank_annotate_train_reward_evaluate(toy, tmp_path):
    assert registry.family_of_file(toy['original']) is toy_family.FAMILY
    bank_dir, labels, truth, reward_pt = (str(tmp_path / n) for n in ('bank', 'labels.jsonl', 'truth.csv', 'reward.pt'))
    ran(sample_bank.main, ['--network', toy['original'], '--seeds', '0-23', '--res', 32, '--dtype', 'float32', '--preview-res', 32,
        '--outdir', bank_dir, '--device', 'cpu'])
    bank, G = Bank(bank_dir), toy_family.FAMILY.load(toy['original'])
    assert bank.ids == [f'seed{s:06d}' for s in range(24)]
    meta = bank.meta('seed000007')
    assert meta['generator'] == 'toy' and meta['network'] == os.path.abspath(toy['original']) and meta['nose'] == 0.05
    assert torch.equal(torch.as_tensor(bank.slab('seed000007')), G.sigma_grid([7], bank.grid('seed000007'))[0])

    ran(annotate.main, ['pairs', '--bank', bank_dir, '--annotator', 'oracle:nose', '--pairs', 150, '--out', labels,
        '--scores-out', truth])
    ran(train_reward.main, ['--bank', bank_dir, '--labels', labels, '--truth', truth, '--out', reward_pt, '--device', 'cpu'])
    reward = load_reward(reward_pt)
    held_out = list(range(100, 130))                                            # Seeds the bank never saw.
    with torch.no_grad():
        slabs = G.sigma_grid(held_out, reward.grid)
        scores = reward.score(slabs).tolist()
    taste = [annotators.TASTES['nose'](s.numpy(), reward.grid, 10.0) for s in slabs]
    pairs = [(i, j) for i, j in itertools.combinations(range(len(held_out)), 2) if abs(taste[i] - taste[j]) > 1e-3]
    agree = sum((scores[i] - scores[j]) * (taste[i] - taste[j]) > 0 for i, j in pairs) / len(pairs)
    assert agree > 0.75, agree                                                   # Chance is 0.5.

    report = tmp_path / 'report'
    output = ran(evaluate.main, ['--original', toy['original'], '--tuned', toy['tuned'], '--reward-model', reward_pt,
        '--seeds', '200-211', '--annotator', 'oracle:nose', '--res', 32, '--outdir', report, '--device', 'cpu']).output
    summary = json.loads((report / 'report.json').read_text())
    assert (summary['original'], summary['tuned']) == (os.path.abspath(toy['original']), os.path.abspath(toy['tuned']))
    assert summary['preference']['wins'] >= 10 and summary['reward']['mean_delta'] > 0     # Smaller noses: liked (of 12).
    assert 'stage_consistency' not in summary and (report / 'report.html').is_file() and 'preferred tuned in' in output

    result = CliRunner().invoke(flow_report.main, ['--network', toy['original'], '--outdir', str(tmp_path / 'f')])
    assert result.exit_code == 1 and 'is not a flow checkpoint (toy generators have no stages)' in result.output

#----------------------------------------------------------------------------
