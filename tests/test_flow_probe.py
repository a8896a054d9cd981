"""finetune/flow_probe.py: the distance of a flow policy from its reference, and proxy and gold along a Circular-DPO run."""

import json
import math

import numpy as np
import pytest
import torch

from eg3d_rlhf.data import annotators
from eg3d_rlhf.finetune import flow_probe
from eg3d_rlhf.finetune.flow_probe import FlowProbe, VelocityGap, group_curves
from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.synthetic import demo
from eg3d_rlhf.finetune.circular_config import CircularDPOConfig
from tests.helpers.flow import save_tiny
from tests.helpers.train import train_script as train

TINY = flow_heads.PRESETS['tiny']


@pytest.fixture(scope='module')
def tiny_pt(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp('flow') / 'tiny.pt')


def config(**kwargs):
    return CircularDPOConfig(**dict(dict(ablation='a', dpo_steps=4, dpo_batch=4, bridge_seeds='0-2', draw_batch=4,
        beta=50.0, dpo_lr=1e-3, w1_tau=-0.5, eval_seeds='none'), **kwargs))


@pytest.fixture(scope='module')
def tiny():
    G = flow_heads.build_generator(flow_heads.build_pipeline(TINY, init_seed=0), TINY, image_res=16)
    return G, load_reward(demo.FLOW_REWARD)


def test_the_gap_is_the_rms_of_the_velocity_difference_per_stage_along_the_policys_paths(tiny):
    G, _ = tiny
    reference = G.pipeline.frozen_copy()
    policy = G.pipeline.frozen_copy()
    inner = policy.stages[1].velocity
    policy.stages[1].velocity = lambda x, t, cond, context: inner(x, t, cond, context) + 0.25
    gap = VelocityGap(reference)
    with torch.no_grad():
        moved = policy.sample([0, 1, 2], 0, G.steps, G.sampler, guide=gap).sigma
        plain = policy.sample([0, 1, 2], 0, G.steps, G.sampler).sigma
    d = gap.distances()
    first, last = (s.name for s in policy.stages)
    assert d[first] == 0 and d[last] == pytest.approx(0.25, rel=1e-6) and d[None] == pytest.approx(0.25, rel=1e-6)
    assert torch.equal(moved, plain)                    # The guide measures; the samples are the policy's own.
    assert len(gap.squares[last]) > G.steps - 1         # Every velocity call of the sampler counts.
    for index in range(2):                              # Two stages each 0.3 away: sqrt(0.09 + 0.09).
        v = reference.stages[index].velocity
        policy.stages[index].velocity = lambda x, t, cond, context, v=v: v(x, t, cond, context) - 0.3
    gap = VelocityGap(reference)
    with torch.no_grad():
        policy.sample([3], 0, G.steps, G.sampler, guide=gap)
    assert gap.distances()[None] == pytest.approx(math.sqrt(2 * 0.09), rel=1e-6)


def test_the_probe_scores_each_member_the_aggregate_and_the_gold_on_the_same_samples(tiny):
    G, reward = tiny
    probe = FlowProbe(G, reward, [0, 1, 2], gold_taste='nose', res=32, batch=2)
    measured = probe.measure(G.pipeline, G.pipeline.frozen_copy())
    assert measured['distance'] == 0 and set(measured['distances'].values()) == {0.0}
    assert measured['proxy'] == pytest.approx(np.mean(measured['members'])) and measured['disagreement'] >= 0
    assert measured['aggregate'] == pytest.approx(measured['proxy'])          # mean: the aggregate is the proxy.
    # Gold: the taste on the same samples (2 conditions x 3 seeds), drawn as the generator draws them.
    volumes = torch.cat([G.pipeline.sample([0, 1], c, G.steps, G.sampler).sigma for c in range(2)] +
        [G.pipeline.sample([2], c, G.steps, G.sampler).sigma for c in range(2)])
    from eg3d_rlhf.finetune.circular_dpo import slabs_of
    slabs = slabs_of(G, volumes, probe.gold_grid).numpy()
    nose = [annotators.TASTES['nose'](s, probe.gold_grid, 10.0) for s in slabs]
    assert measured['gold'] == pytest.approx(np.mean(nose), abs=1e-6)
    assert measured['gold_sd'] == pytest.approx(np.std(nose), abs=1e-6)
    with pytest.raises(ValueError, match='at least one held-out seed'):
        FlowProbe(G, reward, [])


def test_the_distance_is_measured_on_the_first_seeds_and_every_seed_is_scored(tiny, monkeypatch):
    """Before: every probe sample paid the reference's velocity calls; a 64-seed probe cost twice its sampling."""
    G, reward = tiny
    reference, policy = G.pipeline.frozen_copy(), G.pipeline.frozen_copy()
    inner = policy.stages[1].velocity
    policy.stages[1].velocity = lambda x, t, cond, context: inner(x, t, cond, context) + 0.5 * x     # Differs per path.
    full = FlowProbe(G, reward, [0, 1, 2], gold_taste='nose', res=32, batch=2).measure(policy, reference)
    first = FlowProbe(G, reward, [0], gold_taste='nose', res=32, batch=2).measure(policy, reference)
    assert full['distance'] != pytest.approx(first['distance'], rel=1e-3)
    monkeypatch.setattr(flow_probe, 'DISTANCE_SEEDS', 1)
    limited = FlowProbe(G, reward, [0, 1, 2], gold_taste='nose', res=32, batch=2).measure(policy, reference)
    assert limited['distance'] == pytest.approx(first['distance'], rel=1e-9)
    assert limited['gold_samples'] == pytest.approx(full['gold_samples'], abs=1e-9) and limited['samples'] == 6
    assert limited['members'] == pytest.approx(full['members'], abs=1e-6)


def test_a_groups_curve_follows_its_history_and_counts_its_pairs():
    def probe(phase, pairs, value):
        return dict(kind='probe', phase=phase, pairs=pairs, proxy=value, aggregate=value, disagreement=0.1,
            gold=-value, distance=value / 10, members=[value], proxy_sd=2.0, gold_sd=4.0)
    records = [probe('start', 0, 0.0), probe('last', 16, 1.0), probe('last', 32, 2.0), probe('other', 16, 9.0),
        probe('last/bridge', 8, 3.0), dict(kind='step', phase='last')]
    curves = group_curves(records, ['last', 'last/bridge'])
    assert curves.rows['kimg'] == [0, 0.016, 0.032, 0.040] and curves.rows['proxy'] == [0, 1, 2, 3]
    assert curves.scale == dict(proxy=2.0, gold=4.0) and curves.gains('gold').tolist() == [0, -0.25, -0.5, -0.75]
    assert len(group_curves(records[1:], ['last'])) == 0                    # No start: no curve.


def test_a_stopped_run_resumed_from_state_pt_probes_as_one_never_stopped(tiny, tmp_path):
    """Probes logged before the stop, then by the resumed run after its snapshot, are the never-stopped run's."""
    from eg3d_rlhf.finetune.circular_dpo import CircularDPO, demo_preferences
    from eg3d_rlhf.finetune.circular_state import RunState
    G, reward = tiny
    data, _ = demo_preferences(G, list(range(6)), 'oracle:nose', 0.5, batch=6, res=32)
    cfg = config(snap_steps=1, probe_every=2, probe_seeds='3000', gold_taste='nose')
    probe = lambda: FlowProbe(G, reward, [3000], gold_taste='nose', res=32, batch=4)
    def probes(stop_after=None, folder='whole', resume=False):
        logged, written = [], []
        class Stopping(RunState):
            def step_done(self, *args):
                super().step_done(*args)
                written.append(args[2])
                if len(written) == stop_after:
                    raise KeyboardInterrupt
        state = (RunState if resume else Stopping)(str(tmp_path / folder), every=1, resume=resume)
        try:
            CircularDPO(cfg, G, data, reward, seed=1, log=state.mute(logged.append), state=state, probe=probe()).tuned('a')
        except KeyboardInterrupt:
            pass
        return [{k: v for k, v in r.items() if k != 'time'} for r in logged if r['kind'] == 'probe']
    whole = probes()
    assert [r['step'] for r in whole] == [2, 4, 2, 4] and whole[0]['distance'] > 0
    before = probes(stop_after=3, folder='cut')
    after = probes(folder='cut', resume=True)
    assert [r['step'] for r in before] == [2] and before + after == whole


def test_stop_at_peak_ends_the_history_at_the_probe_where_its_rule_fires(tiny, tmp_path):
    from eg3d_rlhf.finetune.circular_dpo import CircularDPO, demo_preferences, phase_name
    from eg3d_rlhf.finetune.circular_state import RunState
    G, reward = tiny
    data, _ = demo_preferences(G, list(range(6)), 'oracle:nose', 0.5, batch=6, res=32)
    cfg = config(probe_every=1, probe_seeds='3000', stop_at_peak=True, disagreement_stop=1.5, snap_steps=1)
    logged = []
    state = RunState(str(tmp_path), every=1)
    trainer = CircularDPO(cfg, G, data, reward, seed=1, log=logged.append, state=state,
        probe=FlowProbe(G, reward, [3000], res=32, batch=4))
    trainer.start_probe = dict(trainer.probe.row(G.pipeline, G.pipeline), disagreement=1e-12)   # Any spread is 1.5x.
    a = trainer.tuned('a')
    last = [k for k in trainer.memo if k[-1][0] == 'last'][0]
    assert trainer.histories['a'] == [phase_name(last)] and trainer.stopped == {last: dict(step=1,
        reason=trainer.stopped[last]['reason'])} and 'disagreement' in trainer.stopped[last]['reason']
    assert [(r['kind'], r['step']) for r in logged if r['kind'] in ('probe', 'stop', 'step')] == [('step', 0),
        ('probe', 1), ('stop', 1)]                                          # One step, its probe, the stop; no bridge.
    d = trainer.tuned('d')                                                  # d shares that phase: it stops there too.
    assert trainer.histories['d'] == trainer.histories['a']
    assert all(torch.equal(x, y) for x, y in zip(a.stages[-1].velocity.state_dict().values(),
        d.stages[-1].velocity.state_dict().values()))
    again = CircularDPO(cfg, G, data, reward, seed=1, state=RunState(str(tmp_path), every=1, resume=True))
    assert again.stopped == trainer.stopped and again.start_probe['disagreement'] == 1e-12
    assert again.probe_rows.keys() == trainer.probe_rows.keys() and again.start_probe['proxy'] == trainer.start_probe['proxy']


def test_the_flow_gold_rule_reads_the_probes_of_the_whole_history(tiny):
    from eg3d_rlhf.finetune.circular_dpo import CircularDPO, phase_name
    G, reward = tiny
    trainer = CircularDPO(config(probe_every=1, stop_at_peak=True, gold_taste='nose', peak_patience=1), G, None, reward)
    first, second = (('last', 'dpo', 0),), (('last', 'dpo', 0), ('bridge', 0, 0, 'w1', 'w2'))
    row = lambda gold, d: dict(gold=gold, distance=d, disagreement=0.1)
    trainer.start_probe = row(0.0, 0.0)
    trainer.probe_rows = {phase_name(first): [row(1.0, 0.1), row(2.0, 0.2)], phase_name(second): [row(1.5, 0.3)]}
    assert trainer.peak_reason(first) is None                               # Still rising.
    assert 'passed its peak at probe 2' in trainer.peak_reason(second)      # Fell 25% in the next phase.


@pytest.mark.slow
def test_a_run_probes_every_n_steps_and_reports_each_groups_proxy_and_gold(tiny_pt, tmp_path):
    train(['--generator=flow', f'--resume={tiny_pt}', '--outdir=runs', '--dpo-steps=3', '--dpo-batch=4',
        '--bridge-seeds=0-2', '--eval-seeds=none', '--draw-batch=4', '--beta=50', '--dpo-lr=1e-3', '--w1-tau=-0.5',
        '--ablation=a,d', '--probe-every=2', '--probe-seeds=3000-3001', '--gold-taste=nose'], tmp_path)
    run_dir = tmp_path / 'runs' / '00000-flow-circular-dpo-ad-demo'
    records = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    probes = [r for r in records if r['kind'] == 'probe']
    # The start, then steps 2 and 3 (the last) of each phase: a's final stage (shared with d) and its first stage.
    assert [(r['phase'].split('/')[-1], r['step']) for r in probes] == [('start', 0), ('last-dpo-0', 2),
        ('last-dpo-0', 3), ('bridge-0-0-w1-w2', 2), ('bridge-0-0-w1-w2', 3)], [(r['phase'], r['step']) for r in probes]
    assert probes[0]['distance'] == 0 and all(r['distance'] > 0 for r in probes[1:])
    stages = [k for k in probes[0] if k.startswith('distance/')]
    assert len(stages) == 2 and probes[2][stages[0]] == 0 < probes[2][stages[1]]    # Only the final stage trained.
    assert probes[4][stages[0]] > 0                                                  # Then the first one too.
    report = json.loads((run_dir / 'report.json').read_text())['proxy_gold']
    assert set(report) == {'a', 'd'} and report['a']['gold_taste'] == 'nose' and report['a']['aggregate'] == 'mean'
    assert report['a']['rows']['kimg'] == [0, 0.008, 0.012, 0.020, 0.024] and report['d']['rows']['kimg'] == [0, 0.008, 0.012]
    assert len(report['a']['gold_gain']) == 5 and report['a']['gold_gain'][0] == 0
    assert (run_dir / 'proxy_gold.png').is_file()

