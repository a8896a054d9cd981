"""Unpaired training of a flow stage from ratings (finetune/flow_unpaired.py): DRO and KTO raise the implicit reward
of the well-rated assets above the badly rated ones', and a flow bank's ratings read as RatedData."""

import json

import pytest
import torch

from eg3d_rlhf.data import ratings
from eg3d_rlhf.data.bank import Bank, BankWriter
from eg3d_rlhf.finetune.flow_unpaired import RatedData, train_unpaired
from eg3d_rlhf.generators.flow import mse_t
from eg3d_rlhf.generators import flow_heads
from tests.helpers.flow import save_tiny, tiny_generator, tiny_pipeline
from tests.helpers.train import train_script as train

pytestmark = pytest.mark.usefixtures('one_thread')


def drawn(count=16):
    """RatedData of `count` tiny-pipeline assets under condition 0, rated 5 for the first half and 1 for the rest."""
    pipeline = tiny_pipeline()
    with torch.no_grad():
        sample = pipeline.sample(list(range(count)), 0, steps=3, sampler='euler')
    ratings = torch.tensor([5.0] * (count // 2) + [1.0] * (count - count // 2))
    return RatedData(sample.sigma, torch.zeros(count, dtype=torch.int64), ratings, [f's{i}' for i in range(count)])


def implicit(policy, reference, data, index=1, draws=8):
    """Mean -MSE_t(policy) + MSE_t(reference) of each asset over `draws` fixed (t, x0)."""
    from eg3d_rlhf.finetune.flow_dpo import encode_stage  # pylint: disable=import-outside-toplevel
    x1, context = encode_stage(policy, data.assets, index)
    g = torch.Generator().manual_seed(123)
    total = torch.zeros(len(x1))
    with torch.no_grad():
        for _ in range(draws):
            x0, t = torch.randn(x1.shape, generator=g), torch.rand([len(x1)], generator=g)
            total += mse_t(reference.stages[index].velocity, x0, x1, t, data.conditions, context) - mse_t(
                policy.stages[index].velocity, x0, x1, t, data.conditions, context)
    return total / draws


@pytest.mark.parametrize('loss_type', ['dro', 'kto'])
def test_training_raises_the_well_rated_assets_above_the_badly_rated(loss_type):
    data = drawn()
    policy = tiny_pipeline()
    reference = policy.frozen_copy()
    records = []
    values = train_unpaired(policy, reference, 1, data, steps=60, batch=8, lr=3e-3, beta=50.0, loss_type=loss_type,
        log=records.append)
    gain = implicit(policy, reference, data)
    assert float(gain[:8].mean()) > float(gain[8:].mean()), gain
    assert len(records) == 60 and {'loss', 'rewards'} <= set(records[0])
    assert (set(values) == {0}) == (loss_type == 'dro')                 # DRO's baseline of condition 0.
    assert all(torch.equal(p, q) for p, q in zip(policy.stages[0].velocity.parameters(),
        reference.stages[0].velocity.parameters()))                    # Only the trained stage moved.


def test_a_flow_banks_ratings_read_as_rated_data(tmp_path):
    generator = tiny_generator()
    writer = BankWriter(str(tmp_path / 'bank'), generator, resolution=16)
    writer.open()
    for seed in (3, 4):
        writer.write(seed, condition=1)
    bank = Bank(str(tmp_path / 'bank'))
    root = bank.root
    data = RatedData.from_ratings({(root, bank.ids[0]): 4.5, (root, bank.ids[1]): 2.0})
    assert data.ids == sorted(bank.ids) and data.conditions.tolist() == [1, 1]
    assert torch.equal(data.assets[0], torch.from_numpy(bank.array(data.ids[0], 'asset')).float())
    assert data.ratings.tolist() == [4.5, 2.0] if data.ids[0] == bank.ids[0] else [2.0, 4.5]
    with pytest.raises(ValueError, match='no rated samples'):
        RatedData.from_ratings({})
    with pytest.raises(ValueError, match='finite ratings'):
        RatedData(data.assets, None, torch.tensor([1.0, float('nan')]), data.ids)


def rated_bank(tmp_path, scores):
    """A tiny-model flow bank (condition 0, seeds 0..) and a ratings file of it: alice rates sample k geometry scores[k]."""
    generator = tiny_generator()
    writer = BankWriter(str(tmp_path / 'bank'), generator, resolution=16)
    writer.open()
    for seed in range(len(scores)):
        writer.write(seed, condition=0)
    out = str(tmp_path / 'ratings.jsonl')
    key = ratings.open_ratings(out, [('bank', Bank(str(tmp_path / 'bank')))], ['geometry'])
    session = ratings.RatingSession(out, 'alice', key)
    for _ in scores:
        sample = session.state()['current']['sample']
        session.rate(sample, dict(geometry=scores[int(key.samples[sample][1][-6:])]))
    return out


@pytest.mark.parametrize('args, message', [
    ([], '--ratings JSONL is needed'),
    (['--ratings=r.jsonl', '--good-above=4'], '--good-above splits ratings for --unpaired-loss=kto'),
    (['--ratings=r.jsonl', '--group-size=3'], '--group-size is a Flow-GRPO option: add --method=grpo'),
])
def test_bad_unpaired_options_are_refused_in_one_line(tmp_path, args, message):
    result = train(['--generator=flow', '--method=unpaired', '--outdir=runs', '--dry-run', *args], tmp_path, expect=2)
    assert message in result.stderr and not (tmp_path / 'runs').exists(), result.stderr


@pytest.mark.slow
def test_an_unpaired_run_trains_the_final_stage_from_a_ratings_file(tmp_path):
    out = rated_bank(tmp_path, [5, 1, 4, 2])
    tiny = save_tiny(tmp_path / 'tiny.pt')
    refused = train(['--generator=flow', '--method=unpaired', f'--resume={tiny}', f'--ratings={out}',
        '--criterion=overall', '--outdir=runs'], tmp_path, expect=1)
    assert "rates geometry, not 'overall'" in refused.stderr
    result = train(['--generator=flow', '--method=unpaired', f'--resume={tiny}', f'--ratings={out}',
        '--criterion=geometry', '--outdir=runs', '--unpaired-steps=3', '--unpaired-batch=2', '--unpaired-lr=1e-2',
        '--eval-seeds=1000', '--draw-batch=2', '--annotator=oracle:nose'], tmp_path)
    run_dir = tmp_path / 'runs' / '00000-flow-dro-final'
    assert 'tuned preferred to the base in' in result.stdout
    steps = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert [r['step'] for r in steps if r['kind'] == 'step'] == [0, 1, 2]
    report = json.loads((run_dir / 'report.json').read_text())
    assert report['rated'] == 4 and report['mean_rating'] == 3.0 and set(report['baselines']) == {'0'}
    tuned, base = flow_heads.read_flow(str(run_dir / 'flow-unpaired.pt')), flow_heads.read_flow(tiny)
    assert tuned['training']['loss'] == 'dro'
    assert all(torch.equal(tuned['state_dicts'][0][k], base['state_dicts'][0][k]) for k in base['state_dicts'][0])
    assert any(not torch.equal(tuned['state_dicts'][1][k], base['state_dicts'][1][k]) for k in base['state_dicts'][1])
    train(['--generator=flow', '--method=unpaired', f'--resume={tiny}', f'--ratings={out}', '--criterion=geometry',
        '--outdir=runs', '--unpaired-steps=3', '--unpaired-batch=2', '--unpaired-lr=1e-2', '--eval-seeds=1000',
        '--draw-batch=2', '--seed=5'], tmp_path)                          # Another training seed: another run.
    other = flow_heads.read_flow(str(tmp_path / 'runs' / '00001-flow-dro-final' / 'flow-unpaired.pt'))
    assert any(not torch.equal(other['state_dicts'][1][k], tuned['state_dicts'][1][k]) for k in base['state_dicts'][1])
