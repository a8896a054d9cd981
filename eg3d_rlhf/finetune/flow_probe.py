"""Proxy, gold and distance from the reference of a flow pipeline while it is tuned, on held-out seeds."""

import math

import numpy as np
import torch

from eg3d_rlhf.analysis.overoptimization import Curves
from eg3d_rlhf.data.annotators import taste_function
from eg3d_rlhf.finetune.circular_dpo import conditions_of, slabs_of
from eg3d_rlhf.geometry.sigma import slab_grid
from eg3d_rlhf.rewards import aggregate
from torch_utils import misc

#----------------------------------------------------------------------------
# The distance of a flow policy from its reference. Both are ODEs dx/dt = v(x, t); seen as SDEs with one diffusion
# g, the KL of the policy's path measure from the reference's is (1/2) E integral ||v_policy - v_ref||^2 / g^2 dt,
# summed over the stages of a pipeline. So each stage's d = sqrt(mean ||v_policy - v_ref||^2), the mean over the
# values of x, the samples and the sampler's velocity calls along the policy's own paths, is a square-root KL up to
# the constant g, and the pipeline's d = sqrt(sum of the stages' d^2). Gao et al. state gold against sqrt(KL).
# The distance is a mean over many velocity calls per sample, so a few seeds' paths measure it well: the first
# DISTANCE_SEEDS of a probe, under every condition. The other seeds' samples skip the reference's calls (half the cost).

DISTANCE_SEEDS = 8


class VelocityGap:
    """guide(index, stage) for FlowPipeline.sample: the policy's velocity, and beside it the mean square of its
    difference to the reference's at the same points, per stage."""

    def __init__(self, reference):
        self.reference = reference
        self.squares = {}                               # Stage name: [per-call means of (v - v_ref)^2 per sample].

    def __call__(self, index, stage):
        theirs = self.reference.stages[index].velocity

        def velocity(x, t, cond, context):
            v = stage.velocity(x, t, cond, context)
            gap = (v - theirs(x, t, cond, context)).square().flatten(1).mean(dim=1)
            misc.assert_shape(gap, [x.shape[0]])
            self.squares.setdefault(stage.name, []).append(gap.double().cpu())
            return v

        return velocity

    def distances(self):
        """{stage name: d} and the pipeline's d (key None), in the units of x per unit of t."""
        out = {name: math.sqrt(float(torch.cat(parts).mean())) for name, parts in self.squares.items()}
        out[None] = math.sqrt(sum(d * d for d in out.values()))
        return out


class FlowProbe:
    """Draws the same held-out seeds through a pipeline under every condition and measures them."""

    def __init__(self,
        generator,                  # FlowGenerator of the base model: its ODE settings, conditions and sample ids.
        reward,                     # rewards.contract.Reward: the proxy (its members' mean, and each member).
        seeds,                      # Held-out seeds, drawn under every condition.
        gold_taste      = None,     # A simulated taste (annotators.taste_function) scored as the gold standard.
        aggregate_kind  = 'mean',   # The aggregate of the members that training optimises (rewards/aggregate.py).
        aggregate_lambda = 1.0,     # Its weight of the members' spread (mean-std, uwo).
        res             = 64,       # Cube resolution of the slabs the gold taste judges.
        batch           = 8,        # Samples per pipeline pass.
    ):
        if not seeds:
            raise ValueError('the probe needs at least one held-out seed')
        aggregate.check(aggregate_kind, aggregate_lambda)
        self.generator, self.reward, self.seeds, self.batch = generator, reward, [int(s) for s in seeds], int(batch)
        self.gold_taste = gold_taste
        self.gold = None if gold_taste is None else taste_function(gold_taste)
        self.gold_grid = slab_grid(res, cube_length=generator.cube_length)
        self.aggregate = (aggregate_kind, float(aggregate_lambda))

    @torch.no_grad()
    def measure(self, pipeline, reference):
        """dict(proxy, aggregate, disagreement, gold (None without a gold taste), distance and distances {stage: d}
        (on the first DISTANCE_SEEDS seeds),
        members [each member's mean], proxy_sd and gold_sd over the samples, samples: their count, gold_samples: each
        sample's gold, in the same order at every probe) of the pipeline's samples of the seeds."""
        modes = [m.training for m in pipeline.modules()]
        for m in pipeline.modules():
            m.eval()
        gap, volumes = VelocityGap(reference), []
        try:
            for condition in conditions_of(self.generator):
                for s in range(0, len(self.seeds), self.batch):
                    chunk, cut = self.seeds[s : s + self.batch], max(DISTANCE_SEEDS - s, 0)
                    for part, guide in ((chunk[:cut], gap), (chunk[cut:], None)):
                        if part:
                            volumes.append(pipeline.sample(part, condition, self.generator.steps,
                                self.generator.sampler, guide=guide).sigma.cpu())
        finally:
            for m, mode in zip(pipeline.modules(), modes):
                m.train(mode)
        volumes = torch.cat(volumes)
        members = self.reward.member_scores(slabs_of(self.generator, volumes, self.reward.grid).to(
            self.reward.device)).double().cpu()
        misc.assert_shape(members, [len(volumes), None])
        gold = None
        if self.gold is not None:
            slabs = slabs_of(self.generator, volumes, self.gold_grid).numpy()
            gold = [self.gold(slab, self.gold_grid, 10.0) for slab in slabs]
        distances = gap.distances()
        return dict(**aggregate.summary(members, *self.aggregate), gold=None if gold is None else float(np.mean(gold)),
            distance=distances.pop(None), distances=distances, proxy_sd=float(members.mean(dim=1).std()),
            samples=len(volumes),
            gold_sd=None if gold is None else float(np.std(gold)),
            gold_samples=None if gold is None else [float(g) for g in gold])

    def row(self, pipeline, reference):
        """measure() as one flat stats record: distance/STAGE for each stage's distance."""
        measured = self.measure(pipeline, reference)
        row = {k: v for k, v in measured.items() if k != 'distances'}
        row.update({f'distance/{name}': d for name, d in measured['distances'].items()})
        return row

#----------------------------------------------------------------------------

def group_curves(records, history):
    """overoptimization.Curves of one group: the run's start probe, then the probes of each phase of its training
    history (phase names in order), kimg counting the pairs trained on before each probe over the history."""
    probes = [r for r in records if r.get('kind') == 'probe']
    if not any(r['phase'] == 'start' for r in probes):
        return Curves()
    done, ticks = 0, []
    for phase in ['start', *history]:
        rows = sorted((r for r in probes if r['phase'] == phase), key=lambda r: r['pairs'])
        ticks += [((done + r['pairs']) / 1000, r) for r in rows]
        done += max((r['pairs'] for r in rows), default=0)
    return curves_of(ticks)


def curves_of(ticks):
    """overoptimization.Curves of [(kimg, probe record)], the first the start's (its spread is the scale)."""
    curves = Curves()
    if not ticks:
        return curves
    start = ticks[0][1]
    curves.scale = dict(proxy=start['proxy_sd'] or 1.0,
        **({} if start['gold'] is None else dict(gold=start['gold_sd'] or 1.0)),
        **({} if start.get('samples') is None else dict(samples=start['samples'])))
    for kimg, r in ticks:
        curves.add(kimg=kimg, proxy=r['proxy'], aggregate=r['aggregate'], disagreement=r['disagreement'], gold=r['gold'],
            distance=r['distance'], param_distance=None, members=r['members'], gold_samples=r.get('gold_samples'))
    return curves
