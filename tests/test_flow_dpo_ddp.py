"""Flow-DPO and Circular-DPO under torchrun: shared steps, equal weights, state.pt and exact resume, kill -9 of a rank."""

import json
import os

import pytest
import torch

from eg3d_rlhf.finetune import lora
from eg3d_rlhf.finetune.circular_config import CircularDPOConfig
from eg3d_rlhf.finetune.circular_dpo import CircularDPO, demo_preferences
from eg3d_rlhf.finetune.circular_state import RunState, StateError
from eg3d_rlhf.finetune.flow_dpo import step_draw, train_stage
from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.synthetic import demo
from tests.helpers import flow_ddp_worker
from tests.helpers.torchrun import kill_rank_when, torchrun

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = flow_heads.PRESETS['tiny']

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def tiny():
    G = flow_heads.build_generator(flow_heads.build_pipeline(TINY, init_seed=0), TINY, image_res=16)
    data, _ = demo_preferences(G, list(range(6)), 'oracle:nose', 0.5, batch=6, res=32)
    return G, data


@pytest.mark.parametrize('stage, lora_rank', [(1, 0), pytest.param(0, 4, marks=pytest.mark.slow)])
def test_two_gloo_ranks_run_different_pairs_and_keep_equal_weights(tiny, stage, lora_rank, tmp_path):
    if lora_rank and not lora.available():
        pytest.skip(lora.MISSING)
    G, data = tiny
    torchrun(os.path.join(REPO, 'tests', 'helpers', 'flow_ddp_worker.py'), str(tmp_path), str(stage), str(lora_rank))
    runs = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1)]
    steps, batch = flow_ddp_worker.STEPS, flow_ddp_worker.BATCH
    for s, (a, b) in enumerate(zip(runs[0]['summed'], runs[1]['summed'])):
        assert a['step'] == b['step'] == s + 1
        assert sorted(a['rows'] + b['rows']) == list(range(batch)) and not set(a['rows']) & set(b['rows'])
        whole = step_draw(G.pipeline, data, stage, 0, s, batch).pick.tolist()   # The step's batch in one process.
        assert [whole[i] for i in a['rows']] == a['pick'] and [whole[i] for i in b['rows']] == b['pick']
        assert a['pick'] != b['pick']
        assert a['weights'] == b['weights'], f'step {s}: the ranks\' weights parted'
    assert len(runs[0]['summed']) == steps
    # The control: without the gradient sum the same test sees the weights part at the first step.
    assert runs[0]['control'][0]['weights'] != runs[1]['control'][0]['weights']
    # Both ranks took the steps of the whole batch: one process's weights, up to the order of float sums (Adam's
    # normalised steps carry those of near-zero gradients: measured 1.1e-3 of the distance the weights moved).
    policy = G.pipeline.frozen_copy()
    train_stage(policy, G.pipeline, stage, data, steps, batch, lr=1e-2, beta=100.0, loss_type='sigmoid',
        lora_rank=lora_rank)
    two, base = torch.load(tmp_path / 'rank0-summed.pt', weights_only=True), G.pipeline.stages[stage].velocity.state_dict()
    for name, value in policy.stages[stage].velocity.state_dict().items():
        moved = (value - base[name]).abs().max()        # 0 for what LoRA leaves alone (biases): equal then.
        assert (two[name] - value).abs().max() <= 5e-3 * moved, name

#----------------------------------------------------------------------------
# state.pt: a run stopped after any snapshot goes on to the weights of one never stopped (one process here).

def config(**kwargs):
    return CircularDPOConfig(**dict(dict(ablation='a', dpo_steps=4, dpo_batch=4, bridge_seeds='0-2', draw_batch=4,
        beta=50.0, dpo_lr=1e-3, w1_tau=-0.5, eval_seeds='none'), **kwargs))


def weights(pipeline):
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in pipeline.modules()]


@pytest.fixture(scope='module')
def never_stopped(tiny, tmp_path_factory):
    """Group a's pipeline of a run that writes state.pt after every step, and the reward."""
    G, data = tiny
    reward = load_reward(demo.FLOW_REWARD)
    state = RunState(str(tmp_path_factory.mktemp('through')), every=1)
    return CircularDPO(config(snap_steps=1), G, data, reward, seed=1, state=state).tuned('a'), reward


@pytest.mark.parametrize('stop_after', [3, 7])      # In the final stage's phase; in the first stage's, after step 3.
def test_a_run_resumed_from_state_pt_ends_as_one_never_stopped(tiny, never_stopped, tmp_path, stop_after):
    G, data = tiny
    through, reward = never_stopped
    cfg = config(snap_steps=1)
    written = []
    class Stopped(Exception):
        pass
    class Stopping(RunState):
        def step_done(self, *args):
            super().step_done(*args)
            written.append(args[2])
            if len(written) == stop_after:
                raise Stopped()
    with pytest.raises(Stopped):
        CircularDPO(cfg, G, data, reward, seed=1, state=Stopping(str(tmp_path), every=1)).tuned('a')
    state = RunState(str(tmp_path), every=1, resume=True)
    assert state.loaded['step']['step'] == written[-1] and len(state.loaded['memo']) == (stop_after > 4)
    logged = []
    trainer = CircularDPO(cfg, G, data, reward, seed=1, log=state.mute(logged.append), state=state)
    resumed = trainer.tuned('a')
    assert not state.replaying
    steps = [r for r in logged if r['kind'] == 'step']
    assert [r['step'] for r in steps] == list(range(written[-1], 4)) + ([0, 1, 2, 3] if stop_after <= 4 else [])
    assert all(torch.equal(a, b) for x, y in zip(weights(through), weights(resumed)) for a, b in zip(x.values(), y.values()))


def test_state_pt_of_another_number_of_processes_is_refused(tiny, tmp_path):
    G, data = tiny
    CircularDPO(config(dpo_steps=2, snap_steps=2), G, data, load_reward(demo.FLOW_REWARD), state=RunState(str(tmp_path),
        every=2)).tuned('d')
    class Two:
        rank, size, main = 0, 2, True
    with pytest.raises(StateError, match='written by 1 processes; resume it with as many'):
        RunState(str(tmp_path), ranks=Two(), resume=True)
    with pytest.raises(StateError, match='no such file'):
        RunState(str(tmp_path / 'elsewhere'), resume=True)
    state = torch.load(tmp_path / 'state.pt', weights_only=True)
    for damage in (dict(probes='{"phases": '), dict(probes='{"phases": {"x": [1]}}'), dict(stopped={('x',): 3})):
        torch.save(dict(state, **damage), tmp_path / 'state.pt')
        with pytest.raises(StateError, match='its probes cannot be read'):
            CircularDPO(config(dpo_steps=2, snap_steps=2), G, data, load_reward(demo.FLOW_REWARD),
                state=RunState(str(tmp_path), resume=True))

#----------------------------------------------------------------------------
# train.py under torchrun: kill -9 of one rank after the first snapshot, then --resume-run with two processes ends
# with the weights, stats and report of a two-process run never stopped.

def records(run_dir):
    """stats.jsonl's step and bridge records without their times."""
    lines = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]
    return [{k: v for k, v in r.items() if k not in ('time', 'seconds')} for r in lines
        if r['kind'] in ('data', 'step', 'bridge', 'eval')]


@pytest.mark.slow
def test_kill_9_of_one_rank_then_resume_run_ends_as_a_run_never_stopped(tmp_path):
    network = str(tmp_path / 'tiny.pt')
    flow_heads.save_flow(network, flow_heads.build_pipeline(TINY, init_seed=0), TINY)
    args = lambda outdir: [os.path.join(REPO, 'train.py'), '--generator=flow', f'--resume={network}',
        f'--outdir={outdir}', '--dpo-steps=10', '--dpo-batch=4', '--bridge-seeds=0-2', '--eval-seeds=1000-1001',
        '--draw-batch=4', '--beta=50', '--dpo-lr=1e-3', '--w1-tau=-0.5', '--seed=1', '--snap-steps=3']
    whole = tmp_path / 'whole'
    torchrun(*args(whole))
    cut = tmp_path / 'cut'
    launcher = torchrun(*args(cut), wait=False)
    run_dir = cut / '00000-flow-circular-dpo-a-demo'
    returncode = kill_rank_when(launcher, run_dir / 'state.pt')
    assert returncode != 0 and not (run_dir / 'flow-a.pt').exists()                # Stopped before its end.
    stopped_at = torch.load(run_dir / 'state.pt', weights_only=True)['step']['step']
    result = torchrun(*args(cut), f'--resume-run={run_dir}')
    assert 'Resuming' in result.stdout and result.stdout.count('preferred to the base in') == 1
    done = whole / '00000-flow-circular-dpo-a-demo'
    a, b = (torch.load(d / 'flow-a.pt', weights_only=False)['state_dicts'] for d in (done, run_dir))
    assert all(torch.equal(x, y) for sa, sb in zip(a, b) for x, y in zip(sa.values(), sb.values()))
    assert records(run_dir) == records(done) and stopped_at < 10
    rows = [json.loads((d / 'report.json').read_text())['groups']['a'] for d in (done, run_dir)]
    assert [{k: v for k, v in r.items() if k != 'seconds'} for r in rows] == [{k: v for k, v in rows[0].items() if k != 'seconds'}] * 2

#----------------------------------------------------------------------------
