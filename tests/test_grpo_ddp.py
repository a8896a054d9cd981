"""Flow-GRPO and the online objectives under torchrun: each rank draws its conditions' groups, the weights stay equal
and equal one process's, and train.py runs as two processes."""

import json
import os

import dnnlib
import pytest
import torch

from eg3d_rlhf.finetune import grpo, grpo_run
from eg3d_rlhf.finetune.options import RunError
from eg3d_rlhf.finetune.unpaired_config import UnpairedConfig
from tests.helpers import grpo_ddp_worker
from tests.helpers.flow import save_tiny
from tests.helpers.torchrun import torchrun

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, 'tests', 'helpers', 'grpo_ddp_worker.py')

#----------------------------------------------------------------------------

@pytest.mark.parametrize('objective', ['grpo', 'online-dpo', pytest.param('online-kto', marks=pytest.mark.slow)])
def test_two_ranks_draw_one_condition_each_and_take_the_step_of_one_process(objective, tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    one.mkdir()
    two.mkdir()
    torchrun(WORKER, str(one), objective, nproc=1)
    torchrun(WORKER, str(two), objective, nproc=2)
    runs = [json.loads((two / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert runs[0]['mine'] == [0] and runs[1]['mine'] == [1]                 # Each rank drew its own condition.
    weights = [torch.load(d / f'rank{r}.pt', weights_only=True) for d, r in ((two, 0), (two, 1), (one, 0))]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), 'the ranks\' weights parted'
    base = grpo_ddp_worker.trainer(objective, None).pipeline
    start = {f'{i}.{k}': v for i in (0, 1) for k, v in base.stages[i].velocity.state_dict().items()}
    moved = max(float((weights[2][k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3                                                      # Training moved the weights...
    for k in start:                                                          # ...as one process moved them (up to
        assert (weights[0][k] - weights[2][k]).abs().max() <= 1e-2 * moved, k  # the order of float sums).
    whole = json.loads((one / 'rank0.json').read_text())['stats']
    for a, b in zip(runs[0]['stats'], whole):                               # Every rank logs the whole iteration.
        assert runs[1]['stats'] == runs[0]['stats'] and set(a) == set(b)
        assert all(a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-5) for k in a), (a, b)


def test_more_processes_than_conditions_and_unpaired_runs_under_torchrun_are_refused(monkeypatch):
    class Three:
        rank, size, main = 0, 3, True
        share = lambda self, items: list(items)[::3]
    trainer = grpo.FlowGRPO(grpo_ddp_worker.trainer('grpo', None).pipeline, grpo_ddp_worker.reward,
        grpo.GRPOSettings(), ranks=Three())
    assert trainer.mine(3) == [0]
    with pytest.raises(ValueError, match='2 condition\\(s\\) an iteration cannot be shared by 3 processes'):
        trainer.mine(2)
    monkeypatch.setattr(grpo_run.Ranks, '__init__', lambda self, cuda=False: setattr(self, 'size', 2) or setattr(
        self, 'rank', 0))
    monkeypatch.setattr(grpo_run.Ranks, 'close', lambda self: None)
    common = dnnlib.EasyDict(resume=None, outdir='unused', seed=0, device='cpu', dry_run=True, desc=None)
    with pytest.raises(RunError, match='--method=unpaired runs as one process; start it without torchrun'):
        grpo_run.run_method('unpaired', UnpairedConfig(ratings='x.jsonl'), common, 'flow-dro-final', train=None)


@pytest.mark.slow
def test_train_py_runs_flow_grpo_as_two_processes(tmp_path):
    network = save_tiny(tmp_path / 'tiny.pt')
    args = lambda outdir: [os.path.join(REPO, 'train.py'), '--generator=flow', '--method=grpo', f'--resume={network}',
        f'--outdir={outdir}', '--grpo-iterations=2', '--group-size=2', '--sde-steps=3', '--grpo-lr=1e-2',
        '--eval-seeds=1000-1001', '--draw-batch=2', '--annotator=oracle:nose', '--seed=1', '--probe-every=1',
        '--probe-seeds=3000', '--gold-taste=nose', '--snap-iterations=1']
    result = torchrun(*args(tmp_path / 'two'))
    assert result.stdout.count('preferred to the base in') == 1              # Rank 0 alone reports.
    run_dir = tmp_path / 'two' / '00000-flow-grpo-both'
    options = json.loads((run_dir / 'options.json').read_text())
    records = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert options['processes'] == 2 and [r['iteration'] for r in records if r['kind'] == 'grpo'] == [0, 1]
    assert [r['iteration'] for r in records if r['kind'] == 'probe'] == [0, 1, 2]
    for name in ('flow-grpo.pt', 'state.pt', 'report.html', 'proxy_gold.png', 'eval-grpo/report.json'):
        assert (run_dir / name).is_file(), name
    resumed = torchrun(*args(tmp_path / 'two'), f'--resume-run={run_dir}')   # Finished: resumes to the same end.
    assert 'Resuming' in resumed.stdout and 'after iteration 2 of 2' in resumed.stdout

#----------------------------------------------------------------------------
