"""Unpaired training of one flow stage from rated assets: DRO (a baseline per condition) or KTO, Flow-DPO's MSE_t."""

import dataclasses

import numpy as np
import torch

from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.finetune import losses
from eg3d_rlhf.finetune.flow_dpo import encode_stage
from eg3d_rlhf.generators.flow import check_sigma, mse_t
from torch_utils import misc

#----------------------------------------------------------------------------
# Each rated asset alone (DSO's DRO, KTO): per step `batch` assets, each encoded to the stage's data x1, one t ~ U(0, 1)
# and one x0 per asset drawn from (seed, stage, step), shared by the policy and the frozen reference; the loss
# (losses.UNPAIRED) reads -MSE_t of each. DRO regresses beta (-MSE_t(theta) + MSE_t(ref)) on the rating minus V(c),
# a baseline per condition trained beside the stage (Adam, the same learning rate; it starts at the condition's mean
# rating). KTO reads ratings as good (above `good_above`) or bad.


@dataclasses.dataclass
class RatedData:
    """Rated finished assets of one flow pipeline: what an unpaired loss trains a stage on."""
    assets:     torch.Tensor        # Raw sigma [M, R, R, R] of the assets, on the CPU.
    conditions: object              # int64 [M] of their conditions, or None (unconditional).
    ratings:    torch.Tensor        # float32 [M]: each asset's rating (e.g. label.py rate's mean, 1-5).
    ids:        list                # Name of each asset.

    def __post_init__(self):
        check_sigma(self.assets, source='RatedData assets')
        misc.assert_shape(self.ratings, [len(self.assets)])
        if len(self.ids) != len(self.assets) or not torch.isfinite(self.ratings).all():
            raise ValueError(f'RatedData: {len(self.assets)} assets need as many ids and finite ratings')

    @classmethod
    def from_ratings(cls, rated):
        """RatedData of {(flow bank folder, id): rating} (data.ratings.rated_samples): each sample's asset.npz."""
        assets, conditions, ratings, ids = [], [], [], []
        banks = {}
        for (root, sample_id), rating in sorted(rated.items()):
            bank = banks.setdefault(root, Bank(root))
            assets.append(torch.from_numpy(bank.array(sample_id, 'asset')))
            conditions.append(bank.meta(sample_id).get('condition'))
            ratings.append(rating)
            ids.append(sample_id)
        if not assets:
            raise ValueError('no rated samples to train on')
        conds = None if conditions[0] is None else torch.tensor(conditions, dtype=torch.int64)
        return cls(torch.stack(assets).float(), conds, torch.tensor(ratings, dtype=torch.float32), ids)


def train_unpaired(policy, reference, index, data, steps, batch, lr, beta, loss_type='dro', good_above=3.0, seed=0,
        log=None):
    """Train stage `index` of FlowPipeline `policy` on RatedData by an unpaired loss against `reference` (frozen);
    log(record) after each step (TRL-like names); returns {condition: its DRO baseline V} (empty for KTO)."""
    loss_fn = losses.get_unpaired(loss_type)
    velocity, ref_velocity = policy.stages[index].velocity, reference.stages[index].velocity
    device = policy.device
    velocity.requires_grad_(True)
    x1_all, context_all = encode_stage(policy, data.assets.to(device), index)
    conds = data.conditions
    keys = [0] if conds is None else sorted(set(conds.tolist()))
    slot = torch.zeros(len(data.assets), dtype=torch.int64) if conds is None else torch.tensor(
        [keys.index(c) for c in conds.tolist()])
    start = torch.tensor([float(data.ratings[slot == k].mean()) for k in range(len(keys))])
    value = torch.nn.Parameter(start.to(device))
    optimizer = torch.optim.Adam(list(p for p in velocity.parameters() if p.requires_grad) + [value], lr=lr)
    labels = data.ratings if loss_type == 'dro' else (data.ratings > good_above).float()
    for step in range(steps):
        rng = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index, step]).generate_state(1)[0]))
        rows = torch.randperm(len(data.assets), generator=rng)[:batch]
        x1 = x1_all[rows]
        context = None if context_all is None else context_all[rows]
        x0 = torch.randn(x1.shape, generator=rng).to(device)
        t = torch.rand([len(rows)], generator=rng).to(device)
        cond = None if conds is None else conds[rows].to(device)
        with torch.no_grad():
            ref = -mse_t(ref_velocity, x0, x1, t, cond, context)
        pol = -mse_t(velocity, x0, x1, t, cond, context)
        unpaired = losses.UnpairedBatch(pol, ref, labels[rows].to(device), value=value[slot[rows].to(device)])
        loss, stats = loss_fn(unpaired, losses.UnpairedOptions(beta=beta))
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()
        if log is not None:
            log(dict(step=step, loss=float(loss.detach().mean()), **{k: float(v.mean()) for k, v in stats.items()}))
    velocity.requires_grad_(False)
    return {} if loss_type != 'dro' else {k: float(v) for k, v in zip(keys, value.detach().cpu())}

#----------------------------------------------------------------------------
