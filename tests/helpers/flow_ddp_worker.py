"""One torchrun rank of tests/test_flow_dpo_ddp.py: Flow-DPO steps of a tiny flow, each step's pairs and weights written."""

import hashlib
import json
import os
import sys

import torch

from eg3d_rlhf import shards
from eg3d_rlhf.finetune import flow_dpo
from eg3d_rlhf.finetune.circular_dpo import demo_preferences
from eg3d_rlhf.generators import flow_heads

#----------------------------------------------------------------------------
# python -m torch.distributed.run --nproc_per_node=N tests/helpers/flow_ddp_worker.py OUTDIR STAGE LORA: each rank
# trains stage STAGE of the same tiny flow on the same demo pairs (LoRA rank LORA, 0 = every weight) twice, as
# train_stage does and again with the gradient sum left out (the control: the weights must then part), and writes
# OUTDIR/rank<R>.json: per step the pairs it ran (their indices in the PairData and positions in the batch) and a
# digest of the trained model's weights, and the final weights (OUTDIR/rank<R>-<run>.pt).

STEPS, BATCH = 4, 6


def digest(state):
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main(outdir, stage, lora_rank):
    ranks = shards.Ranks()
    preset = flow_heads.PRESETS['tiny']
    G = flow_heads.build_generator(flow_heads.build_pipeline(preset, init_seed=0), preset, image_res=16)
    data, _ = demo_preferences(G, list(range(6)), 'oracle:nose', 0.5, batch=6, res=32, ranks=ranks)
    drawn = []
    step_draw = flow_dpo.step_draw
    def spy(*args, **kwargs):                           # What this rank's step ran.
        draw = step_draw(*args, **kwargs)
        rows = kwargs.get('rows', args[8] if len(args) > 8 else None)
        drawn.append(dict(pick=draw.pick.tolist(), rows=None if rows is None else rows.tolist()))
        return draw
    flow_dpo.step_draw = spy
    result = {}
    for run in ('summed', 'control'):
        if run == 'control':
            ranks.sum_gradients = lambda params: None
        drawn.clear()
        steps = []
        snapshot = lambda step, training: steps.append(dict(step=step, **drawn[-1],
            weights=digest(training()['velocity'])))
        policy = G.pipeline.frozen_copy()
        flow_dpo.train_stage(policy, G.pipeline, stage, data, STEPS, BATCH, lr=1e-2, beta=100.0, loss_type='sigmoid',
            lora_rank=lora_rank, ranks=ranks, snapshot=snapshot)
        torch.save(policy.stages[stage].velocity.state_dict(), os.path.join(outdir, f'rank{ranks.rank}-{run}.pt'))
        result[run] = steps
    with open(os.path.join(outdir, f'rank{ranks.rank}.json'), 'w') as f:
        json.dump(result, f)
    ranks.barrier()
    ranks.close()


if __name__ == '__main__':
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))

#----------------------------------------------------------------------------
