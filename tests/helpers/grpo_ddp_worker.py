"""One torchrun rank of tests/test_grpo_ddp.py: iterations of a flow objective on the tiny heads, weights and stats written."""

import json
import os
import sys

import torch

from eg3d_rlhf import shards
from eg3d_rlhf.finetune import grpo
from eg3d_rlhf.generators import flow_heads

#----------------------------------------------------------------------------
# python -m torch.distributed.run --nproc_per_node=N tests/helpers/grpo_ddp_worker.py OUTDIR OBJECTIVE: each rank runs
# ITERATIONS iterations of OBJECTIVE (grpo, online-dpo, online-kto) on the tiny heads' 2 conditions with `ranks`
# (none when N is 1), and writes OUTDIR/rank<R>.json (every iteration's stats) and OUTDIR/rank<R>.pt (the trained
# stages' weights).

ITERATIONS, GROUP = 2, 3


def reward(sigma, cond):
    """A smooth score of the finished asset: how much of it is dense."""
    return torch.sigmoid(sigma - 5.0).mean(dim=(1, 2, 3))


def trainer(objective, ranks):
    preset = flow_heads.PRESETS['tiny']
    pipeline = flow_heads.build_pipeline(preset, init_seed=0)
    settings = grpo.GRPOSettings(group_size=GROUP, steps=3, lr=1e-2, trained=(0, 1), inner_epochs=2 if objective ==
        'grpo' else 1)
    if objective == 'grpo':
        return grpo.FlowGRPO(pipeline, reward, settings, ranks=ranks)
    if objective == 'online-dpo':
        return grpo.OnlineDPO(pipeline, reward, settings, beta=50.0, ranks=ranks)
    return grpo.OnlineUnpaired(pipeline, reward, settings, beta=50.0, loss_type=objective.split('-')[1], ranks=ranks)


def main(outdir, objective):
    ranks = shards.Ranks()
    run = trainer(objective, ranks)
    stats = []
    for i in range(ITERATIONS):
        groups = [list(range(100 + i * GROUP, 100 + (i + 1) * GROUP))] * 2
        stats.append(run.step([0, 1], groups))
    state = {f'{i}.{k}': v for i in run.s.trained for k, v in run.pipeline.stages[i].velocity.state_dict().items()}
    torch.save(state, os.path.join(outdir, f'rank{ranks.rank}.pt'))
    with open(os.path.join(outdir, f'rank{ranks.rank}.json'), 'w') as f:
        json.dump(dict(stats=stats, mine=run.mine(2)), f)
    ranks.barrier()
    ranks.close()
    os._exit(0)     # Skip the interpreter's teardown, where gloo's threads sometimes abort the exit (1 run in 3 here).


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])

#----------------------------------------------------------------------------
